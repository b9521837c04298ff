"""Rules 6-7: the share formula, surplus carry, caps, cohorts, and settlement cost."""

from __future__ import annotations

from contracts import records
from contracts.rules.settlement import compute_shares
from tests.test_contracts_harness import Harness, devnet_params

S = 1000
PERIOD = 60 * S


def small_payouts(**kw):
    """Payouts small enough that the share formula, not the per-case cap, decides."""
    base = dict(payout_bands=[{"max_age": 59, "fen": 1000}],
                disease_overrides={"thyroid_cancer": 500}, cap_per_case_fen=10**6)
    base.update(kw)
    return devnet_params(**base)


def notice(n: int) -> int:
    return (n - 1) * PERIOD + 20 * S


def settlement(n: int) -> int:
    return (n - 1) * PERIOD + 45 * S


def pay_claim(h: Harness, key, n: int, disease: str = "malignant_tumor") -> int:
    """File and approve a claim before notice n so it is paid at settlement n."""
    t = h.g0 + notice(n) - 5 * S
    with h.block(t):
        assert h.claim(key, t - S, disease=disease).code == "ok"
        cid = h.last_claim_id()
        assert h.assess(cid).code == "ok"
    return cid


def test_ceil_share_and_surplus_carry() -> None:
    h = Harness(small_payouts())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(7)]
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2))
    p = h.app.get_period(2)
    assert (p["P"], p["F"], p["S"], p["M"]) == (1000, 80, 0, 7)
    assert p["share"] == 155 and p["surplus_new"] == 5 and p["operator_covered"] == 0
    pay_claim(h, keys[1], 3)
    h.tick(h.g0 + settlement(3))
    p = h.app.get_period(3)
    assert (p["P"], p["F"], p["S"], p["M"]) == (1000, 80, 5, 6)
    assert p["need"] == 1075 and p["share"] == 180 and p["surplus_new"] == 5
    # a period without claims carries the surplus on unchanged
    h.tick(h.g0 + settlement(4))
    p = h.app.get_period(4)
    assert (p["share"], p["surplus_new"], p["S"]) == (0, 5, 5)
    # the claimant of period 2 shared in period 2 and was paid out with it
    m0 = h.app.get_member(keys[0].public_key.hex())
    assert m0["status"] == "paid_out" and m0["billed_fen"] == 155
    m2 = h.app.get_member(keys[2].public_key.hex())
    assert m2["billed_fen"] == 155 + 180


def test_per_case_cap_and_operator_covered() -> None:
    h = Harness(devnet_params())       # real payouts, 0.1 yuan per case cap
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(5)]
    pay_claim(h, keys[0], 2)
    pay_claim(h, keys[1], 2, disease="thyroid_cancer")
    h.tick(h.g0 + settlement(2))
    p = h.app.get_period(2)
    assert p["P"] == 35_000_000 and p["F"] == 2_800_000 and p["cases"] == 2
    assert p["share_raw"] == 7_560_000 and p["share"] == 20
    assert p["operator_covered"] == 5 * 7_560_000 - 5 * 20
    assert p["surplus_new"] == 0


def test_capped_period_creates_no_surplus_the_operator_covers_exactly_the_gap() -> None:
    # 7 members, one 300,000-yuan claim: need = 32,400,000 is not a multiple of 7, and the
    # 0.1-yuan-per-case cap binds. Members pay 7 x 10; the operator covers need - 70 and
    # no rounding surplus is created (it would be the operator's money carried on as
    # members').
    h = Harness(devnet_params())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(7)]
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2))
    p = h.app.get_period(2)
    assert (p["need"], p["M"], p["share_raw"], p["share"]) == (32_400_000, 7, 4_628_572, 10)
    assert p["collected"] == 70
    assert p["operator_covered"] == 32_400_000 - 70
    assert p["surplus_new"] == 0
    assert records.load(h.state, records.META_KEY)["surplus"] == 0
    h.tick(h.g0 + settlement(3))
    assert h.app.get_period(3)["S"] == 0


def test_full_scale_worked_example_23_million_members() -> None:
    # docs/rules.md, rule 6, worked example: 23,000,000 sharing members, 2 cases of
    # 300,000 yuan. need = 2 x 30,000,000 + 8 % = 64,800,000 fen; raw = ceil(64,800,000 /
    # 23,000,000) = 3 fen each (under the 2 x 10 fen case cap); collected 69,000,000;
    # surplus carried 4,200,000. The counts are set in the state (cohort 1 and
    # meta.active), not by registering 23 M members: settlement never loops over them.
    h = Harness(devnet_params())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(2)]
    assert h.app.get_member(keys[0].public_key.hex())["cohort"] == 1
    records.store(h.state, records.cohort_key(1), {"active": 23_000_000})
    meta = records.load_meta(h.state)
    meta["active"] = meta["members"] = 23_000_000
    records.store_meta(h.state, meta)
    pay_claim(h, keys[0], 2)
    pay_claim(h, keys[1], 2)
    h.tick(h.g0 + settlement(2))
    p = h.app.get_period(2)
    assert (p["P"], p["F"], p["S"]) == (60_000_000, 4_800_000, 0)
    assert (p["need"], p["M"], p["cases"]) == (64_800_000, 23_000_000, 2)
    assert (p["share_raw"], p["case_cap"], p["share"]) == (3, 20, 3)
    assert p["groups"] == [{"cohort": 0, "members": 23_000_000, "ytd_before": 0,
                            "charge": 3, "ytd": 3}]
    assert p["collected"] == 69_000_000
    assert p["operator_covered"] == 0
    assert p["surplus_new"] == 69_000_000 - 64_800_000 == 4_200_000
    assert h.app.member_share(keys[0].public_key.hex(), 2)["charge"] == 3
    h.tick(h.g0 + settlement(3))
    p3 = h.app.get_period(3)
    assert p3["S"] == 4_200_000 and p3["M"] == 23_000_000 - 2
    assert p3["surplus_new"] == 4_200_000 and p3["share"] == 0


def test_annual_cap_per_cohort_and_year_reset() -> None:
    sched = {"kind": "interval", "period_ms": PERIOD, "notice_offset_ms": 20 * S,
             "settlement_offset_ms": 45 * S, "periods_per_year": 3}
    h = Harness(devnet_params(cap_per_year_fen=25, schedule=sched))
    with h.block(h.g0 + S):
        old = [h.join(i) for i in range(6)]
    for n in (2, 3):
        pay_claim(h, old[n], n)
    new = h.join(50)                      # joins after notice 2 -> cohort 3 (mid-year)
    assert h.app.get_member(new.public_key.hex())["cohort"] == 3
    pay_claim(h, old[4], 4)
    pay_claim(h, old[5], 5)
    h.tick(h.g0 + settlement(5))
    p2, p3 = h.app.get_period(2), h.app.get_period(3)
    assert [(g["cohort"], g["charge"]) for g in p2["groups"]] == [(0, 10)]
    # in period 3 cohort 0 has 10 ytd; the new cohort 3 starts from 0
    assert [(g["cohort"], g["ytd_before"], g["charge"]) for g in p3["groups"]] == [
        (0, 10, 10), (3, 0, 10)]
    # period 4 opens cap year 1: every cohort is merged into group 0 with a fresh cap
    p4 = h.app.get_period(4)
    assert [(g["cohort"], g["ytd_before"], g["charge"]) for g in p4["groups"]] == [(0, 0, 10)]
    # conservation with a capped group: covered by the operator
    for p in (p2, p3, p4, h.app.get_period(5)):
        collected = sum(g["members"] * g["charge"] for g in p["groups"])
        assert collected + p["operator_covered"] == p["need"] + p["surplus_new"]
    m = h.app.get_member(old[0].public_key.hex())
    assert m["billed_fen"] == 10 + 10 + 10 + 10
    mn = h.app.get_member(new.public_key.hex())
    assert mn["billed_fen"] == 10 + 10 + 10
    assert [h.app.member_share(new.public_key.hex(), n)["charge"] for n in (2, 3, 4, 5)] == [
        0, 10, 10, 10]


def test_annual_cap_binds_and_operator_covers_the_rest() -> None:
    h = Harness(devnet_params(cap_per_year_fen=25))
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(6)]
    for n in (2, 3, 4):
        pay_claim(h, keys[n], n)
    h.tick(h.g0 + settlement(4))
    p4 = h.app.get_period(4)
    g = p4["groups"][0]
    assert (g["ytd_before"], g["charge"], g["ytd"]) == (20, 5, 25)
    assert p4["share"] == 10
    assert p4["operator_covered"] == p4["M"] * p4["share_raw"] - p4["M"] * 5
    share = h.app.member_share(keys[0].public_key.hex(), 4)
    assert share["charge"] == 5 and share["ytd_before"] == 20 and share["annual_cap"] == 25


def test_compute_shares_edge_cases() -> None:
    # no members: the operator covers everything
    r = compute_shares(1000, 800, 0, 0, 1, 10**6, 10**6, [], {})
    assert r["operator_covered"] == 1080 and r["surplus_new"] == 0
    # surplus larger than the need: nothing charged, the rest carried
    r = compute_shares(0, 800, 7, 5, 0, 10, 100, [{"cohort": 0, "members": 5}], {})
    assert r["share"] == 0 and r["surplus_new"] == 7 and r["operator_covered"] == 0
    # exact division leaves no surplus
    r = compute_shares(1000, 0, 0, 10, 1, 10**6, 10**6, [{"cohort": 0, "members": 10}], {})
    assert r["share"] == 100 and r["surplus_new"] == 0


def test_member_who_leaves_after_notice_still_owes_that_period() -> None:
    h = Harness(small_payouts())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(4)]
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + notice(2))
    h.ok(keys[1], "leave", {})                        # after notice 2, before settlement 2
    h.tick(h.g0 + settlement(3))
    assert h.app.get_period(2)["M"] == 4 and h.app.get_period(3)["M"] == 2
    m1 = h.app.get_member(keys[1].public_key.hex())
    assert m1["exit_period"] == 2 and m1["billed_fen"] == h.app.get_period(2)["share"]
    assert h.app.member_share(keys[1].public_key.hex(), 3)["shares"] is False


class CountingState:
    def __init__(self, base) -> None:
        self.base = base
        self.reads = 0
        self.writes = 0

    def get(self, key):
        self.reads += 1
        return self.base.get(key)

    def set(self, key, value):
        self.writes += 1
        self.base.set(key, value)

    def delete(self, key):
        self.writes += 1
        self.base.delete(key)


def _settlement_cost(members: int) -> tuple[int, int]:
    h = Harness(small_payouts())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(members)]
    pay_claim(h, keys[0], 2)
    pay_claim(h, keys[1], 2)
    h.tick(h.g0 + settlement(2) - S)
    counting = CountingState(h.state)
    h.app.state = counting
    h.tick(h.g0 + settlement(3))        # settlement 2, notice 3, objection close, settle 3
    assert h.app.get_period(3)["status"] == "settled"
    return counting.reads, counting.writes


def test_settlement_cost_does_not_grow_with_members() -> None:
    assert _settlement_cost(10) == _settlement_cost(1500)
