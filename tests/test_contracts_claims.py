"""Rules 2-4: cover, the waiting period, assessment, public notice and objections.

Devnet timeline (g = genesis): period n has its notice at g + 60 s (n-1) + 20 s, its
objection window closes 10 s later, and it settles at g + 60 s (n-1) + 45 s; the waiting
period is 30 s.
"""

from __future__ import annotations

from chain.hashing import sha256
from tests.test_contracts_harness import (
    ASSESSOR,
    REGISTRAR,
    Harness,
    devnet_params,
    member_key,
    register_body,
)

S = 1000


def setup(n: int = 4) -> tuple[Harness, list]:
    h = Harness()
    with h.block(h.g0 + 1 * S):
        keys = [h.join(i) for i in range(n)]
    return h, keys


def test_waiting_period_rejects_ends_membership_and_refunds() -> None:
    h, keys = setup()
    g = h.g0
    h.tick(g + 80 * S)                     # notice 1 (g+20 s) and 2 (g+80 s) include member 0
    h.tick(g + 110 * S)                    # period 2 settled
    r = h.claim(keys[0], g + 30 * S)       # one second before the waiting period ends
    assert r.code == "ok"
    assert [e.type for e in r.events] == ["claim_rejected_waiting", "member_barred"]
    c = h.app.get_claim(h.last_claim_id())
    assert c["status"] == "rejected_waiting"
    m = h.app.get_member(keys[0].public_key.hex())
    assert m["status"] == "barred" and m["exit_period"] == 2
    assert m["refundable_fen"] == m["billed_fen"]


def test_accident_inside_waiting_period_is_covered() -> None:
    h, keys = setup()
    h.tick(h.g0 + 10 * S)
    r = h.claim(keys[0], h.g0 + 5 * S, accident=True)
    assert r.code == "ok" and r.events[0].type == "claim_filed"
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "active"


def test_claim_at_the_end_of_waiting_is_covered() -> None:
    h, keys = setup()
    h.tick(h.g0 + 40 * S)
    assert h.claim(keys[0], h.g0 + 31 * S).events[0].type == "claim_filed"


def test_claim_input_errors() -> None:
    h, keys = setup()
    g = h.g0
    h.tick(g + 40 * S)
    assert h.claim(keys[0], g + 41 * S).code == "bad_date"              # future
    assert h.claim(keys[0], g).code == "bad_date"                       # before joining
    assert h.claim(keys[0], g + 35 * S, disease="flu").code == "unknown_disease"
    assert h.claim(keys[0], g + 35 * S, disease="Flu!").code == "bad_body"
    assert h.claim(member_key(99), g + 35 * S).code == "not_permitted"
    assert h.claim(keys[0], g + 35 * S).code == "ok"
    assert h.claim(keys[0], g + 36 * S).code == "claim_pending"


def test_payout_band_by_age_at_diagnosis_and_override() -> None:
    # without the upper age (a genesis without max_age_years): a diagnosis at 60 is beyond
    # the bands; with it, it is refused as aged_out (test_contracts_aging.py)
    p = devnet_params()
    del p["max_age_years"]
    h = Harness(p)
    g = h.g0                               # 2024-01-01 08:00 CST
    with h.block(g + S):
        young = h.join(1, birth_date="1985-01-01")   # 39
        old = h.join(2, birth_date="1980-01-01")     # 44
        edge = h.join(3, birth_date="1964-01-02")    # 59, 60 on 2024-01-02
        thy = h.join(4, birth_date="1990-01-01")
    h.tick(g + 40 * S)
    assert h.claim(young, g + 35 * S).events[0].attrs["amount"] == 30_000_000
    assert h.claim(old, g + 35 * S).events[0].attrs["amount"] == 10_000_000
    assert h.claim(thy, g + 35 * S, disease="thyroid_cancer").events[0].attrs[
        "amount"] == 5_000_000
    day2 = g + 16 * 3600 * S + S           # 2024-01-02 00:00:01 CST
    h.tick(day2 + S)
    assert h.claim(edge, day2).code == "outside_cover_age"
    assert h.claim(edge, day2 - 2 * S).events[0].attrs["amount"] == 10_000_000


def test_unobjected_claim_is_noticed_then_paid_and_membership_ends() -> None:
    h, keys = setup()
    g = h.g0
    h.tick(g + 40 * S)
    h.claim(keys[0], g + 35 * S)
    cid = h.last_claim_id()
    assert h.assess(cid).events[0].attrs == {"claim_id": cid, "notice_period": 2}
    assert h.assess(cid).code == "wrong_claim_state"
    h.tick(g + 80 * S)
    assert h.app.get_claim(cid)["status"] == "in_notice"
    h.tick(g + 90 * S)
    assert h.app.get_claim(cid)["status"] == "payable"
    h.tick(g + 105 * S)
    c = h.app.get_claim(cid)
    assert c["status"] == "paid" and c["pay_period"] == 2 and c["net"] == 30_000_000
    p = h.app.get_period(2)
    assert p["claims"] == [cid] and p["P"] == 30_000_000 and p["F"] == 2_400_000
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "paid_out"
    # a paid-out member can no longer claim
    assert h.claim(keys[0], g + 100 * S).code == "member_not_active"


def test_assessor_only_and_unknown_claims() -> None:
    h, keys = setup()
    body = {"claim_id": 1, "approve": True, "report_hash": sha256(b"r")}
    assert h.send(keys[0], "assess_claim", body).code == "not_permitted"
    assert h.send(REGISTRAR, "assess_claim", body).code == "not_permitted"
    assert h.send(ASSESSOR, "assess_claim", body).code == "unknown_claim"
    assert h.send(ASSESSOR, "assess_claim", {**body, "claim_id": 0}).code == "unknown_claim"


def test_objection_rules() -> None:
    h, keys = setup()
    g = h.g0
    h.tick(g + 40 * S)
    h.claim(keys[0], g + 35 * S)
    cid = h.last_claim_id()
    obj = {"claim_id": cid, "reason_hash": sha256(b"why")}
    assert h.send(keys[1], "object_claim", obj).code == "wrong_claim_state"   # not in notice
    h.assess(cid)
    h.tick(g + 80 * S)
    assert h.send(keys[0], "object_claim", obj).code == "own_claim"
    assert h.send(keys[1], "object_claim", obj).code == "ok"
    assert h.send(keys[1], "object_claim", obj).code == "already_objected"
    h.ok(keys[3], "leave", {})
    assert h.send(keys[3], "object_claim", obj).code == "member_not_active"
    h.tick(g + 90 * S)
    assert h.send(keys[2], "object_claim", obj).code == "wrong_claim_state"
    c = h.app.get_claim(cid)
    assert c["status"] == "disputed" and c["objections"] == 1
    assert c["jury"]["origin"] == "objection"


def test_denial_appeal_window_and_refiling() -> None:
    h, keys = setup()
    g = h.g0
    h.tick(g + 40 * S)
    h.claim(keys[0], g + 35 * S)
    cid = h.last_claim_id()
    h.assess(cid, approve=False)
    app = {"claim_id": cid, "reason_hash": sha256(b"appeal")}
    assert h.send(keys[1], "appeal_claim", app).code == "not_claimant"
    assert h.claim(keys[0], g + 36 * S).code == "claim_pending"   # still appealable
    h.tick(g + 60 * S)                                           # 20 s appeal window over
    assert h.send(keys[0], "appeal_claim", app).code == "window_closed"
    assert h.claim(keys[0], g + 36 * S).code == "ok"             # may claim again
    cid2 = h.last_claim_id()
    h.assess(cid2, approve=False)
    assert h.send(keys[0], "appeal_claim", {**app, "claim_id": cid2}).code == "ok"
    assert h.app.get_claim(cid2)["status"] == "disputed"
    assert h.send(keys[0], "appeal_claim", {**app, "claim_id": cid2}
                  ).code == "wrong_claim_state"


# issue 15 item 2: the assessor, not the member, decides whether a waiting-period claim is
# an accident; a final "not an accident" applies rule 3 at that moment.

def _waiting_accident_claim(jurors: int = 0) -> tuple[Harness, list, int]:
    """Member 0 files an accident claim diagnosed 5 s after joining (inside waiting)."""
    h = Harness()
    g = h.g0
    with h.block(g + S):
        keys = [h.join(i) for i in range(6)]
    with h.block(g + 12 * S):
        for k in keys[1:1 + jurors]:
            h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                              "exam_ref": sha256(b"exam")})
        assert h.claim(keys[0], g + 5 * S, accident=True).events[0].type == "claim_filed"
    return h, keys, h.last_claim_id()


def _assess(h: Harness, cid: int, approve: bool, accident: bool | None):
    body = {"claim_id": cid, "approve": approve, "report_hash": sha256(b"report")}
    if accident is not None:
        body["accident"] = accident
    return h.send(ASSESSOR, "assess_claim", body)


def test_waiting_accident_denied_as_not_an_accident_bars_when_the_appeal_window_closes(
        ) -> None:
    h, keys, cid = _waiting_accident_claim()
    g = h.g0
    r = _assess(h, cid, approve=False, accident=False)
    assert r.code == "ok", r.reason
    assert h.app.get_claim(cid)["accident_confirmed"] is False
    h.tick(g + 31 * S)                       # one second before the appeal window closes
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "active"
    ev = h.tick(g + 32 * S)                  # denial + appeal_window_ms: final
    assert [e.type for e in ev] == ["claim_rejected_waiting", "member_barred"]
    assert h.app.get_claim(cid)["status"] == "rejected_waiting"
    m = h.app.get_member(keys[0].public_key.hex())
    assert m["status"] == "barred" and m["refund"] and m["exit_period"] == 1
    r = h.send(REGISTRAR, "register_member", register_body(member_key(50), 0))
    assert r.code == "identity_barred"


def test_a_member_who_left_before_the_finding_became_final_is_barred_all_the_same() -> None:
    """Rule 3 when the membership already ended: the status stays ``left`` (the counts
    took the member out once, at leaving), the shares become refundable and the identity
    is barred for good."""
    h, keys, cid = _waiting_accident_claim()
    g = h.g0
    assert _assess(h, cid, approve=False, accident=False).code == "ok"
    h.ok(keys[0], "leave", {})
    meta_before = h.app._meta()
    left = h.app.get_member(keys[0].public_key.hex())
    assert left["status"] == "left" and not left["refund"]
    types = [e.type for e in h.tick(g + 32 * S)]   # notice 1, then the appeal window closes
    assert "claim_rejected_waiting" in types and "member_barred" not in types  # no 2nd exit
    m = h.app.get_member(keys[0].public_key.hex())
    assert m["status"] == "left" and m["refund"] and m["refundable"]
    assert m["exit_period"] == left["exit_period"]
    meta = h.app._meta()
    assert (meta["active"], meta["members"]) == (meta_before["active"], meta_before["members"])
    r = h.send(REGISTRAR, "register_member", register_body(member_key(50), 0))
    assert r.code == "identity_barred"


def test_waiting_accident_denial_appealed_and_upheld_bars_at_jury_close() -> None:
    h, keys, cid = _waiting_accident_claim(jurors=3)
    assert _assess(h, cid, approve=False, accident=False).code == "ok"
    h.ok(keys[0], "appeal_claim", {"claim_id": cid, "reason_hash": sha256(b"a")})
    for k in keys[1:4]:
        h.ok(k, "jury_vote", {"claim_id": cid, "pay": False})
    h.tick(h.g0 + 26 * S)                    # the appealed denial is not final yet
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "active"
    h.tick(h.app.get_claim(cid)["jury"]["close_ms"])
    assert h.app.get_claim(cid)["status"] == "rejected_waiting"
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "barred"


def test_waiting_accident_approved_then_overturned_by_the_objection_jury_bars() -> None:
    h, keys, cid = _waiting_accident_claim(jurors=3)
    g = h.g0
    assert _assess(h, cid, approve=True, accident=True).code == "ok"
    h.tick(g + 20 * S)                       # notice 1
    h.ok(keys[4], "object_claim", {"claim_id": cid, "reason_hash": sha256(b"o")})
    h.tick(g + 30 * S)                       # objection window closes: jury opens
    for k in keys[1:4]:
        h.ok(k, "jury_vote", {"claim_id": cid, "pay": False})
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "active"
    ev = h.tick(h.app.get_claim(cid)["jury"]["close_ms"])
    types = [e.type for e in ev]
    i = types.index("jury_closed")
    assert types[i:i + 3] == ["jury_closed", "claim_rejected_waiting", "member_barred"]
    c = h.app.get_claim(cid)
    assert c["status"] == "rejected_waiting" and c["jury"]["verdict"] == "deny"
    m = h.app.get_member(keys[0].public_key.hex())
    assert m["status"] == "barred" and m["refund"]


def test_a_confirmed_accident_inside_the_waiting_period_stays_covered() -> None:
    h, keys, cid = _waiting_accident_claim()
    g = h.g0
    assert _assess(h, cid, approve=True, accident=True).code == "ok"
    h.tick(g + 50 * S)                       # notice, window closes, settlement 1 pays it
    assert h.app.get_claim(cid)["status"] == "paid"
    m = h.app.get_member(keys[0].public_key.hex())
    assert m["status"] == "paid_out" and not m["refund"]


def test_a_confirmed_accident_denied_on_other_grounds_is_not_barred() -> None:
    h, keys, cid = _waiting_accident_claim()
    assert _assess(h, cid, approve=False, accident=True).code == "ok"
    h.tick(h.g0 + 60 * S)
    assert h.app.get_claim(cid)["status"] == "denied"
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "active"


def test_the_accident_finding_is_required_exactly_for_waiting_accident_claims() -> None:
    h, keys, cid = _waiting_accident_claim()
    before = h.app.get_claim(cid)
    assert _assess(h, cid, approve=True, accident=None).code == "accident_finding_required"
    assert _assess(h, cid, approve=True, accident=False).code == "not_covered_in_waiting"
    assert h.app.get_claim(cid) == before
    h.tick(h.g0 + 40 * S)
    assert h.claim(keys[1], h.g0 + 35 * S, accident=True).code == "ok"   # after waiting
    other = h.last_claim_id()
    assert _assess(h, other, approve=True, accident=True).code == "accident_finding_not_allowed"
    assert _assess(h, other, approve=True, accident=None).code == "ok"
