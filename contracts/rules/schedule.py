"""Scheduled work run at the start of each block, in time order.

Each kind of work has one pointer in meta and a due time computed from the schedule or a
FIFO queue head, so finding the next job is O(1) and a block costs O(work due), never
O(members). At equal times the order is: notice, objection close, jury close, appeal close
(rule 3), arrears removal, settlement (so claims cleared at a settlement instant are paid in it).
"""

from __future__ import annotations

from contracts import records
from contracts.rules import arrears, claims, jury, membership, settlement, waiting
from contracts.rules.context import Ctx


def _next_job(ctx: Ctx) -> tuple[int, int, str] | None:
    m = ctx.meta
    sch = ctx.schedule
    jobs = [(sch.notice_ms(m["next_notice"]), 0, "notice")]
    if m["next_objection_close"] < m["next_notice"]:
        jobs.append((sch.notice_ms(m["next_objection_close"])
                     + ctx.params.objection_window_ms, 1, "objection_close"))
    if m["jury_head"] < m["jury_tail"]:
        head = records.load(ctx.state, records.jury_queue_key(m["jury_head"]))
        jobs.append((head["close_ms"], 2, "jury_close"))
    appeal_close = waiting.next_appeal_close(ctx)
    if appeal_close is not None:
        jobs.append((appeal_close, 2.5, "appeal_close"))
    if m["next_arrears"] < m["next_settlement"]:
        jobs.append((arrears.deadline_ms(ctx, m["next_arrears"]), 3, "arrears"))
    if m["next_settlement"] < m["next_objection_close"]:
        jobs.append((sch.settlement_ms(m["next_settlement"]), 4, "settlement"))
    job = min(jobs)
    return job if job[0] <= ctx.time_ms else None


def run_due(ctx: Ctx) -> None:
    """Draw pending panels with this block's seed, then run every job due by now."""
    jury.run_draws(ctx)
    m = ctx.meta
    while (job := _next_job(ctx)) is not None:
        kind = job[2]
        if kind == "notice":
            n = m["next_notice"]
            noticed = claims.publish_notice(ctx, n)
            # the upper age (rule 1): out of the counts before the snapshot
            aged = membership.age_out(ctx, n)
            if aged:
                ctx.emit("members_aged_out", period=n, count=aged)
            rec = settlement.open_period(ctx, n, noticed)
            m["next_notice"] = n + 1
            ctx.emit("notice_published", period=n, claims=noticed, members=rec["members"],
                     objection_close_ms=job[0] + ctx.params.objection_window_ms)
        elif kind == "objection_close":
            n = m["next_objection_close"]
            period = records.load(ctx.state, records.period_key(n))
            claims.close_objections(ctx, period["noticed"])
            m["next_objection_close"] = n + 1
        elif kind == "jury_close":
            jury.close_next_jury(ctx)
        elif kind == "appeal_close":
            waiting.close_next_appeal(ctx)
        elif kind == "arrears":
            arrears.remove_defaulters(ctx, m["next_arrears"])
        else:
            settlement.settle(ctx, m["next_settlement"])
