"""A worked period shaped like the plan's January 2019 settlement, at 1/10,000 scale.

Scale: members and lump sums are divided by 10,000 (about 20 million sharing members ->
2,000; 300,000 yuan -> 30 yuan), while the number of cases, the fee and the caps are kept,
so the per-member share comes out at the real order of magnitude (tens of fen). The case
mix below is illustrative, chosen for this test, not quoted from the plan's reports.

Timeline (China Standard Time, production calendar): genesis 2018-10-16; 2,000 members
join that day (waiting period ends 2019-01-14); 33 members are diagnosed 15-17 January
2019 and approved before the notice of 21 January (period 7); the objection window closes
24 January; settlement on 28 January. 100 members who join on 22 January are not sharing
(joined after the notice); 50 who leave on 25 January still share (they were protected on
the notice day).
"""

from __future__ import annotations

import copy
from datetime import date

from chain.hashing import sha256
from contracts import params
from contracts.calendar import DAY_MS, HOUR_MS, cst_date, cst_midnight_ms
from tests.test_contracts_harness import ASSESSOR, Harness, member_key

SCALE = 10_000


def scaled_params() -> dict:
    p = copy.deepcopy(params.profile("production"))
    p["payout_bands"] = [{"max_age": 39, "fen": 30_000_000 // SCALE},
                         {"max_age": 59, "fen": 10_000_000 // SCALE}]
    p["disease_overrides"] = {"thyroid_cancer": 5_000_000 // SCALE}
    return p


def cst(y: int, m: int, d: int, hour: int = 0) -> int:
    return cst_midnight_ms(date(y, m, d)) + hour * HOUR_MS


def test_january_2019_period_at_one_ten_thousandth() -> None:
    h = Harness(scaled_params(), genesis_time="2018-10-16T09:00:00+08:00")
    with h.block(cst(2018, 10, 16, 10)):
        for i in range(2000):
            h.join(i, birth_date="1990-03-01" if i < 1500 else "1972-07-15")
    sch = h.app.schedule
    assert cst_date(sch.notice_ms(7)) == date(2019, 1, 21)
    assert cst_date(sch.settlement_ms(7)) == date(2019, 1, 28)

    # 25 young members with cancer (3,000 fen), 5 aged 46 (1,000 fen), 3 thyroid (500 fen)
    cases = ([(i, "malignant_tumor") for i in range(25)]
             + [(1500 + i, "acute_myocardial_infarction") for i in range(5)]
             + [(100 + i, "thyroid_cancer") for i in range(3)])
    with h.block(cst(2019, 1, 18, 9)):
        for n, (i, disease) in enumerate(cases):
            diagnosed = cst(2019, 1, 15 + n % 3, 10)
            assert h.claim(member_key(i), diagnosed, disease=disease).code == "ok"
    with h.block(cst(2019, 1, 20, 9)):
        for cid in range(1, 34):
            assert h.assess(cid).code == "ok"
    h.tick(cst(2019, 1, 21, 0))                                     # notice, M fixed
    with h.block(cst(2019, 1, 22, 9)):
        for i in range(2000, 2100):
            h.join(i)
    with h.block(cst(2019, 1, 25, 9)):
        for i in range(1900, 1950):
            h.ok(member_key(i), "leave", {})
    h.tick(cst(2019, 1, 28, 0) + 60_000)

    p = h.app.get_period(7)
    assert p["noticed"] == list(range(1, 34)) and p["claims"] == list(range(1, 34))
    P = 25 * 3_000 + 5 * 1_000 + 3 * 500
    assert (p["P"], p["F"], p["S"], p["M"], p["cases"]) == (P, 6_520, 0, 2_000, 33)
    assert P == 81_500
    assert p["need"] == 88_020
    assert p["share_raw"] == 45                  # ceil(88,020 / 2,000) = ceil(44.01)
    assert p["case_cap"] == 330 and p["share"] == 45
    assert p["operator_covered"] == 0
    assert p["surplus_new"] == 2_000 * 45 - 88_020 == 1_980
    # protected from 14 January, the 2,000 first share at the notice of 21 January: period
    # 7 is their cohort, a later one than 2019's first (7 January), so it is its own group
    assert [(g["cohort"], g["members"], g["charge"]) for g in p["groups"]] == [(7, 2000, 45)]

    leaver = h.app.member_share(member_key(1900).public_key.hex(), 7)
    assert leaver["shares"] and leaver["charge"] == 45
    late = h.app.member_share(member_key(2050).public_key.hex(), 7)
    assert not late["shares"] and late["charge"] == 0
    claimant = h.app.get_member(member_key(0).public_key.hex())
    assert claimant["status"] == "paid_out" and claimant["billed_fen"] == 45
    assert h.app.get_claim(1)["net"] == 3_000

    # the surplus is carried into February's first period
    h.tick(cst(2019, 2, 14) + DAY_MS // 2)
    assert h.app.get_period(8)["S"] == 1_980
    # the 100 who joined on 22 January are in their waiting period until 22 April
    assert h.app.get_period(8)["M"] == 2000 - 33 - 50
    assert ASSESSOR.public_key.hex() == h.app.get_claim(1)["assessor"]
    assert sha256(b"report").hex() == h.app.get_claim(1)["report_hash"]
