"""Who shares in a period: members protected at its notice (issue 15, item 7)."""

from __future__ import annotations

import pytest

from contracts import params as P
from tests.test_contracts_harness import Harness, devnet_params

S = 1000
PERIOD = 60 * S


def notice(n: int) -> int:
    return (n - 1) * PERIOD + 20 * S


def settlement(n: int) -> int:
    return (n - 1) * PERIOD + 45 * S


def small(**kw):
    base = dict(payout_bands=[{"max_age": 59, "fen": 1000}],
                disease_overrides={"thyroid_cancer": 500}, cap_per_case_fen=10**6)
    base.update(kw)
    return devnet_params(**base)


def test_profiles_default_to_protected_and_absent_means_joined() -> None:
    for name in ("production", "devnet"):
        assert P.profile(name)["sharing_basis"] == "protected"
        assert P.Params.from_dict(P.profile(name)).sharing_basis == "protected"
    d = P.profile("devnet")
    del d["sharing_basis"]
    p = P.Params.from_dict(d)
    assert p.sharing_basis == "joined" and p.to_dict() == d
    d["sharing_basis"] = "everyone"
    with pytest.raises(P.ParamsError, match="sharing_basis"):
        P.Params.from_dict(d)


def test_members_in_their_waiting_period_do_not_share() -> None:
    # devnet: waiting 30 s, notices at +20 s of each 60 s period
    h = Harness(small(sharing_basis="protected"))
    with h.block(h.g0 + S):            # protected from g0 + 31 s: first notice after is 2
        early = [h.join(i) for i in range(4)]
    h.tick(h.g0 + notice(1))
    assert h.app.get_period(1)["members"] == 0
    with h.block(h.g0 + 55 * S):       # protected from g0 + 85 s: notice 3 (g0 + 140 s)
        late = [h.join(i) for i in range(4, 7)]
    assert h.app.get_member(early[0].public_key.hex())["cohort"] == 2
    assert h.app.get_member(late[0].public_key.hex())["cohort"] == 3
    # a claim paid in period 2: only the 4 protected members share it
    t = h.g0 + notice(2) - 5 * S
    with h.block(t):
        assert h.claim(early[0], t - S).code == "ok"
        assert h.assess(h.last_claim_id()).code == "ok"
    h.tick(h.g0 + settlement(2))
    p = h.app.get_period(2)
    assert (p["members"], p["M"], p["P"], p["F"]) == (4, 4, 1000, 80)
    assert p["share"] == 270 and p["surplus_new"] == 0
    assert [g["members"] for g in p["groups"]] == [4]
    assert h.app.member_share(late[0].public_key.hex(), 2)["shares"] is False
    assert h.app.get_member(late[0].public_key.hex())["billed_fen"] == 0
    h.tick(h.g0 + notice(3))
    assert h.app.get_period(3)["members"] == 3 + 3   # early[0] was paid out


def test_absent_basis_keeps_counting_joined_members() -> None:
    d = small()
    d.pop("sharing_basis", None)
    h = Harness(d)
    with h.block(h.g0 + S):
        k = [h.join(i) for i in range(3)]
    assert h.app.get_member(k[0].public_key.hex())["cohort"] == 1
    h.tick(h.g0 + notice(1))
    assert h.app.get_period(1)["members"] == 3


def test_a_waiting_period_spanning_too_many_periods_is_refused() -> None:
    d = P.profile("devnet")
    d["waiting_ms"] = 1001 * d["schedule"]["period_ms"]
    with pytest.raises(P.ParamsError, match="waiting_ms"):
        P.Params.from_dict(d)
    d["sharing_basis"] = "joined"     # the joined basis reads no waiting cohorts
    assert P.Params.from_dict(d).waiting_ms == d["waiting_ms"]
