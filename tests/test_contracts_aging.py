"""Rule 1, "Upper age" (issue 15 item 5): a member whose ``max_age_years``-th birthday falls
on or before a notice is out of that period's M and every later one, is not covered for a
diagnosis on or after the birthday, and reads ``aged_out`` (resolved on read, like a
payout), with ``exit_period`` = the last period they shared in.

The schedule here has one-hour periods (notice at +20 s, settlement at +45 s, 12 periods
per cap year) so that birthdays a day apart are a few periods apart. Genesis is
2024-01-01 08:00 CST; period n's notice is at g + (n-1) h + 20 s. Someone born on
1964-01-02 turns 60 at 2024-01-02 00:00 CST = g + 16 h, so notice 17 (g + 16 h + 20 s) is
the first that takes them out and their exit period is 16. Cap year 1 is periods 13-24.
"""

from __future__ import annotations

from chain.hashing import sha256
from contracts import records
from contracts.params import Params, ParamsError
from tests.test_contracts_harness import REGISTRAR, Harness, devnet_params

S = 1000
H = 3_600_000
HOURLY = {"kind": "interval", "period_ms": H, "notice_offset_ms": 20_000,
          "settlement_offset_ms": 45_000, "periods_per_year": 12}
TURNS_60_AT_NOTICE_17 = "1964-01-02"


def hourly(**overrides) -> Harness:
    return Harness(devnet_params(schedule=HOURLY, **overrides))


def notice(h: Harness, n: int) -> int:
    return h.g0 + (n - 1) * H + 20 * S


def status(h: Harness, k) -> dict:
    return h.app.get_member(k.public_key.hex())


def stored(h: Harness, k) -> dict:
    return records.load(h.state, records.member_key(k.public_key.raw))


def groups(h: Harness, n: int) -> list[tuple[int, int]]:
    return [(g["cohort"], g["members"]) for g in h.app.get_period(n)["groups"]]


def meta(h: Harness) -> dict:
    return records.load(h.state, records.META_KEY)


def test_params_max_age_years_optional_and_validated() -> None:
    p = devnet_params()
    assert Params.from_dict(p).max_age_years == 60
    del p["max_age_years"]
    assert Params.from_dict(p).max_age_years is None        # absent: the rule is off
    for bad in (59, 151, "60"):
        try:
            Params.from_dict({**p, "max_age_years": bad})
        except ParamsError:
            continue
        raise AssertionError(f"max_age_years={bad!r} accepted")
    assert Params.from_dict({**p, "max_age_years": 60}).max_age_years == 60


def test_aged_out_member_leaves_m_at_the_first_notice_on_or_after_the_birthday() -> None:
    h = hourly()
    g = h.g0
    with h.block(g + S):
        a = h.join(1, TURNS_60_AT_NOTICE_17)                 # cohort 1: group 0 in year 1
        h.join(2)
        d = h.join(4, "1964-01-03")                          # 60 at g + 40 h: notice 41
        e = h.join(5, TURNS_60_AT_NOTICE_17)                 # leaves before aging out
    h.tick(g + 2 * H)
    h.ok(e, "leave", {})
    with h.block(g + 13 * H + 30 * S):                       # after notice 14
        c = h.join(3, TURNS_60_AT_NOTICE_17)                 # cohort 15: its own group
        f = h.join(6, TURNS_60_AT_NOTICE_17)
    assert stored(h, a)["age_out_period"] == 17 and stored(h, d)["age_out_period"] == 41
    assert stored(h, c)["cohort"] == 15
    h.tick(g + 16 * H + 10 * S)                              # birthday passed, notice 17 not
    assert groups(h, 16) == [(0, 3), (15, 2)]
    assert status(h, a)["status"] == "active"
    ev = h.tick(notice(h, 17))
    assert [e.attrs for e in ev if e.type == "members_aged_out"] == [{"period": 17,
                                                                      "count": 3}]
    assert groups(h, 17) == [(0, 2)] and h.app.get_period(17)["members"] == 2
    assert meta(h)["active"] == 2
    assert records.load(h.state, records.cohort_key(15)) is None
    assert records.load(h.state, records.aging_key(17)) is None
    h.tick(notice(h, 18))
    assert groups(h, 18) == [(0, 2)]
    # resolved on read: the stored record is not rewritten
    for k in (a, c, f):
        m = status(h, k)
        assert (m["status"], m["exit_period"], m["ended_ms"]) == ("aged_out", 16,
                                                                  notice(h, 17))
        assert stored(h, k)["status"] == "active"
    assert status(h, d)["status"] == "active"
    # member_share (verify-share's figures): shares through 16, not from 17 on
    h.tick(g + 17 * H + 50 * S)
    assert h.app.member_share(a.public_key.hex(), 16)["shares"]
    assert not h.app.member_share(a.public_key.hex(), 17)["shares"]


def test_exit_after_aging_out_does_not_subtract_twice() -> None:
    h = hourly()
    g = h.g0
    with h.block(g + S):
        h.join(2)
    with h.block(g + 13 * H + 30 * S):
        c = h.join(3, TURNS_60_AT_NOTICE_17)                 # cohort 15
        h.join(7)                                            # cohort 15, stays
    h.tick(notice(h, 17))
    assert meta(h)["active"] == 2 and groups(h, 17) == [(0, 1), (15, 1)]
    r = h.send(c, "leave", {})
    assert r.code == "member_not_active"
    assert meta(h)["active"] == 2
    assert records.load(h.state, records.cohort_key(15)) == {"active": 1}
    h.tick(notice(h, 18))
    assert groups(h, 18) == [(0, 1), (15, 1)]


def test_no_cover_for_a_diagnosis_on_or_after_the_birthday_but_before_it() -> None:
    h = hourly()
    g = h.g0
    birthday = g + 16 * H
    with h.block(g + S):
        a = h.join(1, TURNS_60_AT_NOTICE_17)
        b = h.join(2)
    h.tick(birthday + 5 * S)                                 # before notice 17 runs
    r = h.claim(a, birthday)
    assert r.code == "aged_out"
    h.tick(notice(h, 17) + S)
    assert status(h, a)["status"] == "aged_out"
    assert h.claim(a, birthday + 10 * S).code == "aged_out"
    # a diagnosis before the birthday, filed after aging out, is covered
    r = h.claim(a, birthday - H)
    assert r.code == "ok" and r.events[0].type == "claim_filed"
    cid = h.last_claim_id()
    h.assess(cid)
    ev = h.tick(g + 18 * H)                                  # notice 18 .. settlement 18
    assert h.app.get_claim(cid)["status"] == "paid"
    assert not [e for e in ev if e.type == "member_paid_out"]
    m = status(h, a)
    assert (m["status"], m["exit_period"], m["open_claim"]) == ("aged_out", 16, 0)
    assert meta(h)["active"] == 1
    assert h.app.get_period(18)["members"] == 1
    # another member keeps the ordinary rule
    assert h.claim(b, birthday).code == "ok"


def test_paid_out_before_aging_is_not_taken_out_again() -> None:
    h = hourly()
    g = h.g0
    with h.block(g + S):
        p = h.join(1, TURNS_60_AT_NOTICE_17)
        h.join(2)
        h.join(3, TURNS_60_AT_NOTICE_17)
    h.tick(g + 40 * S)
    h.claim(p, g + 35 * S)
    h.assess(h.last_claim_id())
    h.tick(g + H + 50 * S)                                   # paid at settlement 2
    assert status(h, p)["status"] == "paid_out"
    assert records.load(h.state, records.aging_key(17)) == {"active": 1, "late": []}
    ev = h.tick(notice(h, 17))
    assert [e.attrs["count"] for e in ev if e.type == "members_aged_out"] == [1]
    assert meta(h)["active"] == 1 and groups(h, 17) == [(0, 1)]
    assert status(h, p)["status"] == "paid_out"


def test_rule_off_without_max_age_years() -> None:
    p = devnet_params(schedule=HOURLY)
    del p["max_age_years"]
    h = Harness(p)
    with h.block(h.g0 + S):
        a = h.join(1, TURNS_60_AT_NOTICE_17)
    assert "age_out_period" not in stored(h, a)
    h.tick(notice(h, 17))
    assert status(h, a)["status"] == "active" and h.app.get_period(17)["members"] == 1


def test_aged_out_juror_is_not_drawn_cannot_vote_and_leaves_the_pool() -> None:
    h = hourly(jury={"mode": "panel", "panel_size": 3, "panel_min_votes": 2})
    g = h.g0
    with h.block(g + S):
        a = h.join(1, TURNS_60_AT_NOTICE_17)
        jurors = [h.join(10 + i) for i in range(3)]
        claimant = h.join(20)
    with h.block(g + 20 * S):
        for k in (a, *jurors):
            h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                              "exam_ref": sha256(b"exam")})
    assert meta(h)["pool"] == 4
    h.tick(notice(h, 17) + S)
    assert status(h, a)["status"] == "aged_out"
    assert meta(h)["pool"] == 4                              # the notice does not loop
    h.claim(claimant, notice(h, 17))
    cid = h.last_claim_id()
    h.assess(cid, approve=False)
    h.ok(claimant, "appeal_claim", {"claim_id": cid, "reason_hash": sha256(b"a")})
    ev = h.tick(h.time + S)                                  # the draw
    drawn = [e for e in ev if e.type == "jury_drawn"][0].attrs["panel"]
    assert sorted(drawn) == sorted(k.public_key.hex() for k in jurors)
    assert [e.attrs for e in ev if e.type == "juror_aged_out"] == [
        {"member": a.public_key.hex(), "pool_size": 3}]
    assert meta(h)["pool"] == 3 and status(h, a)["pool_index"] is None
    assert stored(h, a)["status"] == "aged_out"              # rewritten: stored resolved
    assert h.send(a, "jury_vote", {"claim_id": cid, "pay": True}).code == \
        "member_not_active"
    assert h.send(jurors[0], "jury_vote", {"claim_id": cid, "pay": True}).code == "ok"
