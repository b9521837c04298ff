"""Rule 1 (join), leaving, and juror approval."""

from __future__ import annotations

import pytest

from chain.hashing import sha256
from tests.test_contracts_harness import (
    REGISTRAR,
    Harness,
    devnet_params,
    member_key,
    register_body,
)

# genesis 2024-01-01T00:00Z is 08:00 on 2024-01-01 in Beijing
#: a parent's identity tag under the current key (the guardian of the minors below)
GUARDIAN = sha256(b"identity tag of a parent")


def join(h: Harness, i: int, **kw) -> str:
    return h.send(REGISTRAR, "register_member", register_body(member_key(i), i, **kw)).code


def test_join_records_member_identity_cohort_and_account() -> None:
    h = Harness()
    h.tick(h.g0 + 1)
    k = h.join(1)
    m = h.app.get_member(k.public_key.hex())
    assert m["status"] == "active" and m["cohort"] == 1 and m["billed_fen"] == 0
    assert h.app.get_account(k.public_key.raw) == {
        "pubkey": k.public_key.hex(), "nonce": 0, "next_nonce": 1, "roles": [], "member": True,
        "operator_of": None}
    assert h.app.get_account(REGISTRAR.public_key.raw)["nonce"] == 1


@pytest.mark.parametrize("birth, code", [
    ("2023-12-03", "outside_age_window"),  # 29 days old on 2024-01-01
    ("2023-12-02", "ok"),                  # 30 days
    ("1964-01-02", "ok"),                  # 59 years, turns 60 tomorrow
    ("1964-01-01", "outside_age_window"),  # 60 today
    ("2023-12-04", "outside_age_window"),  # 28 days
    ("2025-01-01", "bad_date"),
])
def test_age_window_on_the_cst_join_date(birth: str, code: str) -> None:
    h = Harness()
    # a minor joins on a guardian's attestation (the age window is checked first)
    guardian = GUARDIAN if birth >= "2006-01-02" else None
    assert join(h, 1, birth_date=birth, guardian=guardian) == code


def test_a_minor_joins_on_the_guardians_credit_attestation() -> None:
    h = Harness()
    baby = "2023-12-02"                       # 30 days old on 2024-01-01
    with h.block(h.g0 + 1):
        before = h.state.snapshot()
        assert join(h, 1, birth_date=baby) == "guardian_required"
        own = register_body(member_key(1), 1, baby)["identity_tags"][-1][1]
        assert join(h, 1, birth_date=baby, guardian=own) == "guardian_is_member"
        # the attestation is the guardian's, and must have passed all the same
        assert join(h, 1, birth_date=baby, guardian=GUARDIAN, credit=False) == (
            "credit_not_passed")
        assert join(h, 2, guardian=GUARDIAN) == "guardian_not_allowed"   # an adult
        assert h.state.snapshot() == before
        assert join(h, 1, birth_date=baby, guardian=GUARDIAN) == "ok"
    m = h.app.get_member(member_key(1).public_key.hex())
    assert m["guardian_tag"] == GUARDIAN.hex() and m["status"] == "active"
    assert "guardian_tag" not in h.app.get_member(h.join(3).public_key.hex())


@pytest.mark.parametrize("birth, minor", [
    ("2006-01-01", False),   # 18 today (CST date of the block)
    ("2006-01-02", True),    # 18 tomorrow
])
def test_the_adult_age_is_counted_in_completed_years(birth: str, minor: bool) -> None:
    h = Harness()
    assert join(h, 1, birth_date=birth) == ("guardian_required" if minor else "ok")
    assert join(h, 2, birth_date=birth, guardian=GUARDIAN) == (
        "ok" if minor else "guardian_not_allowed")


def test_a_chain_without_the_adult_age_keeps_its_rule() -> None:
    params = devnet_params()
    del params["adult_age_years"]           # a genesis written before the field existed
    h = Harness(params)
    assert join(h, 1, birth_date="2023-12-02") == "ok"                # own attestation
    assert join(h, 2, birth_date="2023-12-02", guardian=GUARDIAN) == "guardian_not_allowed"


def test_the_credit_attestation_must_have_passed() -> None:
    h = Harness()
    assert join(h, 1, credit=False) == "credit_not_passed"
    assert join(h, 1, credit=True) == "ok"
    m = h.app.get_member(member_key(1).public_key.hex())
    # the record keeps the attestation's reference, never a score
    assert m["credit_attestation"] == register_body(member_key(1), 1)["credit_attestation"].hex()
    assert not any("score" in k for k in m)


def test_one_live_membership_per_identity_and_rejoin_after_leaving() -> None:
    h = Harness()
    assert join(h, 1) == "ok"
    assert join(h, 1) == "member_exists"
    other = register_body(member_key(2), 1)   # same identity, new key
    assert h.send(REGISTRAR, "register_member", other).code == "identity_in_use"
    h.ok(member_key(1), "leave", {})
    assert h.app.get_member(member_key(1).public_key.hex())["status"] == "left"
    assert h.send(member_key(1), "leave", {}).code == "member_not_active"
    assert h.send(REGISTRAR, "register_member", other).code == "ok"
    assert join(h, 1) == "member_exists"       # a key is never reused


def test_barred_identity_can_never_rejoin() -> None:
    h = Harness()
    k = h.join(1)
    h.tick(h.g0 + 5_000)
    assert h.claim(k, h.g0 + 4_000).code == "ok"          # inside the 30 s waiting period
    m = h.app.get_member(k.public_key.hex())
    assert m["status"] == "barred" and m["refund"] is True
    other = register_body(member_key(2), 1)
    assert h.send(REGISTRAR, "register_member", other).code == "identity_barred"


def test_leave_and_cohort_counts() -> None:
    h = Harness()
    g = h.g0
    with h.block(g + 1000):
        for i in range(3):
            h.join(i)
    h.tick(g + 21_000)                       # notice 1 snapshots 3 members
    assert h.app.get_period(1)["members"] == 3
    h.ok(member_key(0), "leave", {})
    assert h.app.get_member(member_key(0).public_key.hex())["exit_period"] == 1
    h.join(5)                                # cohort 2
    assert h.app.get_member(member_key(5).public_key.hex())["cohort"] == 2
    h.ok(member_key(5), "leave", {})         # left before sharing anything
    assert h.app.get_member(member_key(5).public_key.hex())["exit_period"] == 1
    h.tick(g + 81_000)
    assert h.app.get_period(2)["members"] == 2


def test_juror_approval_conditions() -> None:
    h = Harness()
    g = h.g0
    h.tick(g + 1000)
    k = h.join(1)
    young = h.join(2, birth_date="2010-01-01", guardian=GUARDIAN)
    body = {"member": k.public_key.raw, "exam_ref": sha256(b"exam")}
    assert h.send(REGISTRAR, "approve_juror", body).code == "juror_ineligible"  # tenure
    h.tick(g + 11_000)
    assert h.send(REGISTRAR, "approve_juror", body).code == "ok"
    assert h.send(REGISTRAR, "approve_juror", body).code == "already_juror"
    assert h.send(REGISTRAR, "approve_juror",
                  {"member": young.public_key.raw, "exam_ref": sha256(b"e")}
                  ).code == "juror_ineligible"                                  # age 14
    assert h.send(REGISTRAR, "approve_juror",
                  {"member": member_key(9).public_key.raw, "exam_ref": sha256(b"e")}
                  ).code == "unknown_member"
    assert h.app.get_member(k.public_key.hex())["pool_index"] == 0
    h.ok(k, "leave", {})
    assert h.app.get_member(k.public_key.hex())["pool_index"] is None


def test_pool_swap_remove_keeps_indexes_consistent() -> None:
    h = Harness()
    g = h.g0
    h.tick(g + 1000)
    keys = [h.join(i) for i in range(5)]
    h.tick(g + 11_000)
    for k in keys:
        h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw, "exam_ref": sha256(b"e")})
    h.ok(keys[1], "leave", {})
    h.ok(keys[0], "leave", {})
    live = [k for k in keys[2:]]
    idx = sorted(h.app.get_member(k.public_key.hex())["pool_index"] for k in live)
    assert idx == [0, 1, 2]
