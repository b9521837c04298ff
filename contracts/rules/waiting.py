"""Rule 3, the waiting period, when it is decided after filing (docs/rules.md, rule 3).

A claim diagnosed inside the waiting period and filed as an accident (a *waiting accident
claim*) is covered only if the accident is real. The assessor states whether it is
(``assess_claim``'s ``accident``); when the claim's final outcome is that it is not an
accident, rule 3 applies at that moment: the claim reads ``rejected_waiting``, the
membership ends (``barred``), the identity is barred and the member's shares are
refundable. The final outcome comes at one of two instants:

* the appeal window of a denial that found no accident closes without an appeal
  (scheduled work: the ``appq/`` FIFO, one entry per such denial);
* a jury closes without paying a waiting accident claim that was objected to (the jury
  overturned the approval, and so the accident it rested on) or that was appealed after a
  denial finding no accident (the denial stands).
"""

from __future__ import annotations

from typing import Any

from contracts import errors, records
from contracts.rules.context import Ctx, require
from contracts.rules.membership import bar_identity, end_membership
from contracts.rules.settlement import member_billed


def in_waiting(ctx: Ctx, c: dict[str, Any], m: dict[str, Any]) -> bool:
    return c["diagnosed_ms"] < m["joined_ms"] + ctx.params.waiting_ms


def is_waiting_accident(ctx: Ctx, c: dict[str, Any]) -> bool:
    """Filed as an accident and diagnosed inside the claimant's waiting period."""
    if not c["accident"]:
        return False
    m = ctx.member(c["member"])
    return m is not None and in_waiting(ctx, c, m)


def reject(ctx: Ctx, c: dict[str, Any], m: dict[str, Any]) -> None:
    """Apply rule 3 to claim ``c`` of member ``m`` now; stores both."""
    pk = c["member"]
    c["status"] = "rejected_waiting"
    ctx.put_claim(c)
    m["refund"] = True
    ctx.emit("claim_rejected_waiting", claim_id=c["id"], member=pk.hex(),
             diagnosed_ms=c["diagnosed_ms"],
             waiting_ends_ms=m["joined_ms"] + ctx.params.waiting_ms)
    if m["status"] == "active":
        end_membership(ctx, pk, m, "barred")
        ctx.emit("member_barred", member=pk.hex(), exit_period=m["exit_period"])
    else:
        # the membership already ended (left or removed) while the claim went on: the
        # identity is barred and the shares are refundable all the same
        bar_identity(ctx, pk, m)
        ctx.put_member(pk, m)


def final_not_accident(ctx: Ctx, c: dict[str, Any]) -> None:
    """A jury closed without paying ``c`` (caller has set its verdict): rule 3 if the
    outcome is that the waiting accident claim is not an accident."""
    if not is_waiting_accident(ctx, c):
        return
    if c["jury"]["origin"] == "objection" or c.get("accident_confirmed") is False:
        reject(ctx, c, ctx.member(c["member"]))


def queue_appeal_close(ctx: Ctx, c: dict[str, Any]) -> None:
    """A denial that found no accident becomes final when its appeal window closes."""
    meta = ctx.meta
    tail = meta.get("appeal_tail", 0)
    records.store(ctx.state, records.appeal_queue_key(tail),
                  {"claim": c["id"], "close_ms": c["assessed_ms"]
                   + ctx.params.appeal_window_ms})
    meta["appeal_head"] = meta.get("appeal_head", 0)
    meta["appeal_tail"] = tail + 1


def next_appeal_close(ctx: Ctx) -> int | None:
    meta = ctx.meta
    head = meta.get("appeal_head", 0)
    if head >= meta.get("appeal_tail", 0):
        return None
    return records.load(ctx.state, records.appeal_queue_key(head))["close_ms"]


def close_next_appeal(ctx: Ctx) -> None:
    """The appeal window at the head of the queue has closed: a denial not appealed is
    final, so rule 3 applies."""
    meta = ctx.meta
    qkey = records.appeal_queue_key(meta["appeal_head"])
    c = ctx.claim(records.load(ctx.state, qkey)["claim"])
    ctx.state.delete(qkey)
    meta["appeal_head"] += 1
    if c["status"] == "denied":
        reject(ctx, c, ctx.member(c["member"]))


def record_refund(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    """Record, once, that the shares a member barred by rule 3 paid were refunded. The
    amount comes from the per-member index: billed through the exit period (all settled)
    minus unpaid arrears, which the refund nets out and clears."""
    pk = body["member"]
    m = ctx.member(pk)
    require(m is not None, errors.UNKNOWN_MEMBER, f"no member {pk.hex()}")
    assert m is not None
    require(m["refund"], errors.NOT_REFUNDABLE,
            f"member {pk.hex()} was not barred by the waiting-period rule")
    require(m.get("refund_fen") is None, errors.ALREADY_REFUNDED,
            f"member {pk.hex()}'s refund is already recorded")
    last_settled = ctx.meta["next_settlement"] - 1
    require(m["exit_period"] <= last_settled, errors.REFUND_NOT_DUE,
            f"period {m['exit_period']} is not settled yet")
    billed = member_billed(ctx.state, ctx.schedule, m, last_settled)
    unpaid = sum(a for _, a in m["arrears"])
    require(billed - unpaid > 0, errors.NOTHING_TO_REFUND,
            f"member {pk.hex()} paid no shares")
    m["refund_fen"] = billed - unpaid
    m["refund_arrears_fen"] = unpaid
    m["refund_ref"] = body["payment_ref"]
    m["refunded_ms"] = ctx.time_ms
    m["arrears"] = []
    ctx.put_member(pk, m)
    ctx.emit("refund_recorded", member=pk.hex(), amount=billed - unpaid, billed=billed,
             arrears=unpaid, payment_ref=body["payment_ref"].hex())
