"""Rule 8: arrears. A registrar records a failed deduction for a settled period; the member
is in arrears until a payment is recorded, or is removed at the deadline: the next
settlement of the following period minus ``arrears_grace_ms`` (production: 2 days before
the next deduction date). Arrears of period n all share one deadline, so they queue per
period and removal costs O(arrears of that period), never O(members). Any member billed
for the period may be recorded (one who left or was removed owes it as a debt); the
period record counts recorded, unpaid shares as ``uncollected``.
"""

from __future__ import annotations

from typing import Any

from contracts import errors, records
from contracts.rules.context import Ctx, require
from contracts.rules.membership import end_membership, pool_add, pool_remove
from contracts.rules.settlement import member_charge


def deadline_ms(ctx: Ctx, n: int) -> int:
    # period n's grace (deadlines stay in period order: any grace is shorter than the gap
    # between settlements, contracts.params)
    return ctx.schedule.settlement_ms(n + 1) - ctx.params_at(n).arrears_grace_ms


def _member(ctx: Ctx, pk: bytes) -> dict[str, Any]:
    m = ctx.member(pk)
    require(m is not None, errors.UNKNOWN_MEMBER, f"no member {pk.hex()}")
    assert m is not None
    return m


def _uncollected(ctx: Ctx, n: int, amount: int) -> None:
    """Move ``amount`` of settled period n's charges from ``collected`` to ``uncollected``
    (negative: back), keeping the period's conservation identity."""
    key = records.period_key(n)
    rec = records.load(ctx.state, key)
    rec["uncollected"] += amount
    rec["collected"] -= amount
    records.store(ctx.state, key, rec)


def record_arrears(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    pk, n = body["member"], body["period"]
    # any member billed for n (in n's snapshot, charge > 0), whatever their status now: a
    # member who left or was removed after the notice still owes the period
    m = _member(ctx, pk)
    # the recorded refund settled every share the member was billed (unpaid ones netted):
    # arrears recorded after it would count a netted share twice
    require(m.get("refund_fen") is None, errors.ALREADY_REFUNDED,
            "the member's refund is recorded; its billed shares are settled")
    require(1 <= n < ctx.meta["next_settlement"], errors.PERIOD_NOT_SETTLED,
            f"period {n} is not settled")
    require(ctx.time_ms < deadline_ms(ctx, n), errors.WINDOW_CLOSED,
            f"arrears for period {n} had to be recorded before {deadline_ms(ctx, n)}")
    require(all(p != n for p, _ in m["arrears"]), errors.ALREADY_IN_ARREARS,
            f"arrears for period {n} already recorded")
    amount = member_charge(ctx.state, ctx.schedule, m, n)
    require(bool(amount), errors.NOTHING_OWED, f"member was not billed for period {n}")
    m["arrears"] = sorted([*m["arrears"], [n, amount]])
    if m["pool_index"] is not None:
        pool_remove(ctx, pk, m)
    ctx.put_member(pk, m)
    _uncollected(ctx, n, amount)
    ckey = records.arrears_count_key(n)
    count = (records.load(ctx.state, ckey) or {"count": 0})["count"]
    records.store(ctx.state, records.arrears_queue_key(n, count), {"member": pk})
    records.store(ctx.state, ckey, {"count": count + 1})
    ctx.emit("arrears_recorded", member=pk.hex(), period=n, amount=amount,
             remove_at_ms=deadline_ms(ctx, n))


def record_payment(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    pk, n = body["member"], body["period"]
    m = _member(ctx, pk)
    entry = next((e for e in m["arrears"] if e[0] == n), None)
    require(entry is not None, errors.NOT_IN_ARREARS, f"no open arrears for period {n}")
    m["arrears"] = [e for e in m["arrears"] if e[0] != n]
    if m["status"] == "active" and m["juror"] and not m["arrears"]:
        pool_add(ctx, pk, m)
    ctx.put_member(pk, m)
    _uncollected(ctx, n, -entry[1])
    ctx.emit("arrears_paid", member=pk.hex(), period=n, amount=entry[1])


def remove_defaulters(ctx: Ctx, n: int) -> None:
    """The deadline for period n's arrears has passed: remove who has not paid."""
    ckey = records.arrears_count_key(n)
    count = (records.load(ctx.state, ckey) or {"count": 0})["count"]
    for i in range(count):
        qkey = records.arrears_queue_key(n, i)
        pk = records.load(ctx.state, qkey)["member"]
        ctx.state.delete(qkey)
        m = ctx.member(pk)
        if m["status"] == "active" and any(p == n for p, _ in m["arrears"]):
            end_membership(ctx, pk, m, "removed")
            ctx.emit("member_removed", member=pk.hex(), period=n,
                     exit_period=m["exit_period"],
                     arrears=sum(a for _, a in m["arrears"]))
    ctx.state.delete(ckey)
    ctx.meta["next_arrears"] = n + 1
