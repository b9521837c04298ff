"""Params validation, the two profiles, CST dates and both schedules."""

from __future__ import annotations

import copy
from datetime import date

import pytest

from chain.genesis import parse_time_ms
from contracts import params as P
from contracts.calendar import (
    DAY_MS,
    CalendarError,
    age_years,
    cst_date,
    cst_midnight_ms,
    parse_date,
)


def test_profiles_validate_and_round_trip() -> None:
    for name in ("production", "devnet"):
        d = P.profile(name)
        p = P.Params.from_dict(d)
        assert p.to_dict() == d
    prod = P.Params.from_dict(P.profile("production"))
    assert prod.identity_key_ids == (1,) and prod.fee_bps == 800
    assert prod.payout_for("malignant_tumor", 39) == 30_000_000
    assert prod.payout_for("malignant_tumor", 40) == 10_000_000
    assert prod.payout_for("malignant_tumor", 60) is None
    assert prod.payout_for("thyroid_cancer", 25) == 5_000_000
    assert prod.cap_per_case_fen == 10 and prod.cap_per_year_fen == 18_800
    assert prod.jury.open_quorum == 1000 and prod.jury.mode == "open"


def test_profile_returns_a_copy_and_unknown_profile_fails() -> None:
    a = P.profile("devnet")
    a["fee_bps"] = 1
    assert P.profile("devnet")["fee_bps"] == 800
    with pytest.raises(P.ParamsError, match="unknown profile"):
        P.profile("mainnet")


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.pop("fee_bps"), "missing"),
    (lambda d: d.update(extra=1), "unknown fields"),
    (lambda d: d.update(fee_bps=True), "fee_bps must be an integer"),
    (lambda d: d.update(fee_bps=10_001), "outside"),
    (lambda d: d.update(waiting_ms=1.5), "must be an integer"),
    (lambda d: d.update(disease_codes=[f"d{i}" for i in range(101)]), "1 to 100"),
    (lambda d: d.update(disease_codes=["a", "a"]), "duplicates"),
    (lambda d: d.update(disease_codes=["Bad Code"]), "invalid code"),
    (lambda d: d["disease_overrides"].update(nope=5), "not a disease code"),
    (lambda d: d.update(payout_bands=[{"max_age": 40, "fen": 1}, {"max_age": 39, "fen": 1}]),
     "strictly increasing"),
    (lambda d: d["jury"].update(mode="lottery"), "mode"),
    (lambda d: d["jury"].update(panel_min_votes=99), "panel_min_votes"),
    (lambda d: d["schedule"].update(notice_days=[7, 29]), "1..28"),
    (lambda d: d["schedule"].update(settlement_days=[8, 28]), "objection window"),
    (lambda d: d["schedule"].update(notice_days=[14, 21]), "alternate"),
    (lambda d: d.update(arrears_grace_ms=14 * DAY_MS), "shorter than the gap"),
    (lambda d: d["schedule"].update(kind="weekly"), "kind"),
])
def test_bad_production_params_are_refused(mutate, match) -> None:
    d = P.profile("production")
    mutate(d)
    with pytest.raises(P.ParamsError, match=match):
        P.Params.from_dict(d)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["schedule"].update(settlement_offset_ms=25_000), "objection window"),
    (lambda d: d["schedule"].update(settlement_offset_ms=80_000), "outside"),
    (lambda d: d.update(arrears_grace_ms=60_000), "shorter than a period"),
    (lambda d: d["schedule"].update(period_ms=10), "outside"),
])
def test_bad_devnet_params_are_refused(mutate, match) -> None:
    d = P.profile("devnet")
    mutate(d)
    with pytest.raises(P.ParamsError, match=match):
        P.Params.from_dict(d)


def test_cst_dates() -> None:
    # 2019-01-13T16:00Z is 00:00 on the 14th in Beijing
    ms = parse_time_ms("2019-01-13T16:00:00Z")
    assert cst_date(ms) == date(2019, 1, 14)
    assert cst_date(ms - 1) == date(2019, 1, 13)
    assert cst_midnight_ms(date(2019, 1, 14)) == ms
    assert parse_date("2000-02-29") == date(2000, 2, 29)
    for bad in ("2001-02-29", "2019-1-14", "20190114", 20190114, "2019-01-14T00"):
        with pytest.raises(CalendarError):
            parse_date(bad)
    assert age_years(date(2000, 2, 29), date(2001, 2, 28)) == 0
    assert age_years(date(2000, 2, 29), date(2001, 3, 1)) == 1
    assert age_years(date(1980, 6, 1), date(2019, 5, 31)) == 38
    assert age_years(date(1980, 6, 1), date(2019, 6, 1)) == 39


def test_monthly_schedule_from_genesis() -> None:
    p = P.Params.from_dict(P.profile("production"))
    g = parse_time_ms("2018-10-16T12:00:00+08:00")
    s = p.make_schedule(g)
    got = [(cst_date(s.notice_ms(n)), cst_date(s.settlement_ms(n))) for n in range(1, 8)]
    assert got == [
        (date(2018, 10, 21), date(2018, 10, 28)),
        (date(2018, 11, 7), date(2018, 11, 14)),
        (date(2018, 11, 21), date(2018, 11, 28)),
        (date(2018, 12, 7), date(2018, 12, 14)),
        (date(2018, 12, 21), date(2018, 12, 28)),
        (date(2019, 1, 7), date(2019, 1, 14)),
        (date(2019, 1, 21), date(2019, 1, 28)),
    ]
    assert s.notice_ms(7) == cst_midnight_ms(date(2019, 1, 21))
    assert [s.year(n) for n in (5, 6)] == [2018, 2019]
    assert s.first_period_of_year(2019) == 6
    assert s.first_period_of_year(2020) == 30
    assert s.first_period_of_year(2018) < 1
    # a genesis exactly at a notice instant makes that notice period 1
    s2 = p.make_schedule(cst_midnight_ms(date(2019, 1, 7)))
    assert cst_date(s2.notice_ms(1)) == date(2019, 1, 7)
    # after the last notice day of a month, period 1 is next month's first
    s3 = p.make_schedule(cst_midnight_ms(date(2019, 12, 22)))
    assert cst_date(s3.notice_ms(1)) == date(2020, 1, 7)


def test_interval_schedule() -> None:
    d = P.profile("devnet")
    s = P.Params.from_dict(d).make_schedule(1_000_000)
    assert s.notice_ms(1) == 1_020_000 and s.settlement_ms(1) == 1_045_000
    assert s.notice_ms(3) == 1_140_000
    assert [s.year(n) for n in (1, 12, 13)] == [0, 0, 1]
    assert s.first_period_of_year(1) == 13
    for n in range(1, 30):
        assert s.notice_ms(n) < s.settlement_ms(n) < s.notice_ms(n + 1)


def test_params_from_dict_does_not_alias_input() -> None:
    d = P.profile("devnet")
    p = P.Params.from_dict(d)
    d2 = copy.deepcopy(d)
    d["jury"]["mode"] = "panel"
    assert p.to_dict() == d2
