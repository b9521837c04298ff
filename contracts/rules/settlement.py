"""Rules 6-7: settlement periods, the share formula, caps, and the per-cohort index.

At period n's notice the sharing members M are snapshotted as counts per *group*: within
cap year y (first period f), members whose cohort j <= f have shared every period of y so
far and form group 0; each later cohort j (f < j <= n) is its own group. All members of a
group have the same year-to-date total, so the annual cap is applied per group: O(periods
per cap year), never O(members). At settlement n:

    P = sum of payable claims' lump sums,  F = floor(P * fee_bps / 10000)
    S = surplus carried in,  need = P + F - S
    raw   = ceil(need / M)                          (0 if need <= 0 or M == 0)
    share = min(raw, cap_per_case_fen * cases)      (per-case cap)
    charge(g) = min(share, cap_per_year_fen - ytd_before(g))   (annual cap, per group)
    collected = sum(members(g) * charge(g))
    operator_covered = max(0, need - collected)     (only when a cap binds, or M == 0)
    new surplus      = max(0, collected - need)     (0 whenever the operator covers)

so collected + operator_covered = P + F - S + new surplus, exactly: the operator funds
only what the members' capped charges leave short, never a rounding surplus. Shares billed
but recorded unpaid later (rule 8) move from ``collected`` to ``uncollected`` in the
period record (the operator advances them), so collected + operator_covered + uncollected
= P + F - S + new surplus holds for the record at any time.
A member's total owed is the sum over cap years of their group's year-to-date total at the
last period they shared in that year: O(years), computed on read.
"""

from __future__ import annotations

from typing import Any

from contracts import records
from contracts.rules import payout
from contracts.rules.context import Ctx
from contracts.rules.membership import cohort_count, count_out


def make_payable(ctx: Ctx, c: dict[str, Any]) -> None:
    """Queue ``c`` (caller stores it) for the next settlement that has not run yet."""
    n = ctx.meta["next_settlement"]
    c["status"] = "payable"
    c["pay_period"] = n
    ctx.append_id(records.payable_queue_key(n), c["id"])
    ctx.emit("claim_payable", claim_id=c["id"], period=n)


def group_of(schedule: Any, cohort: int, n: int) -> int:
    first = schedule.first_period_of_year(schedule.year(n))
    return cohort if cohort > first else 0


def waiting_cohorts(sch: Any, waiting_ms: int, n: int) -> range:
    """The cohorts after n that can hold a member active at notice n: such a member joined
    before notice_ms(n), so its cohort j has notice_ms(j - 1) < notice_ms(n) + waiting_ms
    (sharing_basis "protected"; docs/rules.md rule 7). O(waiting_ms / period) periods."""
    end = n + 1
    while sch.notice_ms(end) < sch.notice_ms(n) + waiting_ms:
        end += 1
    return range(n + 1, end + 1)


def snapshot_groups(ctx: Ctx, n: int) -> list[dict[str, int]]:
    """Sharing members per group at notice n: the active members of cohorts <= n (the
    cohorts after n are members still in their waiting period)."""
    sch = ctx.schedule
    first = sch.first_period_of_year(sch.year(n))
    groups = []
    later = 0
    for j in range(max(first + 1, 1), n + 1):
        count = cohort_count(ctx, j)
        if count:
            groups.append({"cohort": j, "members": count})
            later += count
    if ctx.params.sharing_basis == "protected":
        for j in waiting_cohorts(sch, ctx.params.waiting_ms, n):
            later += cohort_count(ctx, j)
    old = ctx.meta["active"] - later
    if old:
        groups.insert(0, {"cohort": 0, "members": old})
    return groups


def open_period(ctx: Ctx, n: int, noticed: list[int]) -> dict[str, Any]:
    sch = ctx.schedule
    groups = snapshot_groups(ctx, n)
    rec = {
        "n": n, "status": "noticed", "notice_ms": sch.notice_ms(n),
        "settlement_ms": sch.settlement_ms(n), "year": sch.year(n),
        "noticed": noticed, "members": sum(g["members"] for g in groups), "groups": groups,
    }
    records.store(ctx.state, records.period_key(n), rec)
    return rec


def compute_shares(P: int, fee_bps: int, S: int, M: int, cases: int, cap_case: int,
                   cap_year: int, groups: list[dict[str, int]],
                   prev_ytd: dict[int, int]) -> dict[str, Any]:
    """The share formula as a pure function (the auditor's reference)."""
    F = P * fee_bps // 10_000
    need = P + F - S
    raw = -(-need // M) if need > 0 and M > 0 else 0
    share = min(raw, cap_case * cases)
    out_groups = []
    charged = 0
    for g in groups:
        before = prev_ytd.get(g["cohort"], 0)
        charge = min(share, max(0, cap_year - before))
        charged += g["members"] * charge
        out_groups.append({"cohort": g["cohort"], "members": g["members"],
                           "ytd_before": before, "charge": charge, "ytd": before + charge})
    return {
        "P": P, "F": F, "S": S, "need": need, "M": M, "cases": cases, "share_raw": raw,
        "case_cap": cap_case * cases, "share": share, "annual_cap": cap_year,
        "groups": out_groups, "collected": charged,
        "operator_covered": max(0, need - charged), "surplus_new": max(0, charged - need),
        "uncollected": 0,
    }


def settle(ctx: Ctx, n: int) -> None:
    # the fee and caps of period n itself (a later change never alters a settled period)
    p = ctx.params_at(n)
    sch = ctx.schedule
    meta = ctx.meta
    rec = records.load(ctx.state, records.period_key(n))
    pkey = records.payable_queue_key(n)
    ids = ctx.id_list(pkey)
    # Stored forms, read before the period is stored as settled: these claims are payable
    # in n and each is its member's open claim, so until then the payout views
    # (ctx.claim, ctx.member) would only add a period read each.
    claims = [records.load(ctx.state, records.claim_key(cid)) for cid in ids]
    # (the upper age is applied: a member aged out at an earlier notice is no longer active)
    members = [payout.aging_view(payout.loader(ctx.state),
                                 records.load(ctx.state, records.member_key(c["member"])))
               for c in claims]
    # Rule 8: a claim is paid minus the claimant's unpaid shares, which it then clears.
    owed = [sum(amount for _, amount in m["arrears"]) for m in members]
    deductions = [min(o, c["amount"]) for o, c in zip(owed, claims, strict=True)]
    prev_ytd: dict[int, int] = {}
    if n > 1 and sch.year(n - 1) == sch.year(n):
        prev = records.load(ctx.state, records.period_key(n - 1))
        prev_ytd = {g["cohort"]: g["ytd"] for g in prev["groups"]}
    figures = compute_shares(sum(c["amount"] for c in claims), p.fee_bps, meta["surplus"],
                             rec["members"], len(claims), p.cap_per_case_fen,
                             p.cap_per_year_fen, rec["groups"], prev_ytd)
    rec.update(figures)
    rec["status"] = "settled"
    rec["claims"] = ids
    rec["deductions"] = deductions
    rec["settled_ms"] = ctx.time_ms
    rec["payout_exit_period"] = meta["next_notice"] - 1
    records.store(ctx.state, records.period_key(n), rec)
    ctx.state.delete(pkey)
    meta["surplus"] = figures["surplus_new"]
    meta["next_settlement"] = n + 1
    ctx.emit("period_settled", period=n, P=figures["P"], F=figures["F"], S=figures["S"],
             M=figures["M"], share=figures["share"],
             operator_covered=figures["operator_covered"],
             surplus_new=figures["surplus_new"], claims=ids)
    for c, m, o, d in zip(claims, members, owed, deductions, strict=True):
        _pay(ctx, c, m, o, d, rec)


def _pay(ctx: Ctx, c: dict[str, Any], m: dict[str, Any], owed: int, deduction: int,
         period: dict[str, Any]) -> None:
    """Pay ``c`` (the period record already says so: docs/rules.md, "Payouts"). Only
    what the record cannot say is written here: the counters, and the juror pool."""
    pk = c["member"]
    if m["arrears"]:
        ctx.emit("arrears_cleared_by_claim", member=pk.hex(), claim_id=c["id"],
                 periods=[p for p, _ in m["arrears"]], amount=owed)
    ctx.emit("claim_paid", claim_id=c["id"], member=pk.hex(), period=period["n"],
             amount=c["amount"], deduction=deduction, net=c["amount"] - deduction)
    if m["status"] != "active":
        return
    pooled = m["pool_index"] is not None
    if pooled:
        # read again: paying an earlier claim of this settlement may have moved this
        # juror to another pool slot (and stored the record resolved while at it)
        m = records.load(ctx.state, records.member_key(pk))
    count_out(ctx, pk, m)
    if pooled:  # leaving the pool changed the record, so it is stored resolved
        payout.mark_member_paid(m, period)
        ctx.put_member(pk, m)
    ctx.emit("member_paid_out", member=pk.hex(), exit_period=period["payout_exit_period"])


# reading a member's figures ------------------------------------------------------------

def last_shared_period(m: dict[str, Any], last_settled: int) -> int:
    end = m["exit_period"] if m["exit_period"] is not None else last_settled
    return min(end, last_settled)


def member_group(sch: Any, period: dict[str, Any], cohort: int) -> dict[str, int] | None:
    g = group_of(sch, cohort, period["n"])
    for grp in period["groups"]:
        if grp["cohort"] == g:
            return grp
    return None


def member_billed(state: records.State, sch: Any, m: dict[str, Any],
                  last_settled: int) -> int:
    """Total fen billed to a member through ``last_settled``: O(cap years)."""
    j = m["cohort"]
    through = last_shared_period(m, last_settled)
    if through < j:
        return 0
    total = 0
    y = sch.year(j)
    while True:
        last_in_year = min(through, sch.first_period_of_year(y + 1) - 1)
        period = records.load(state, records.period_key(last_in_year))
        grp = member_group(sch, period, j)
        total += grp["ytd"]
        if last_in_year == through:
            return total
        y += 1


def member_charge(state: records.State, sch: Any, m: dict[str, Any], n: int) -> int | None:
    """What the member was billed for settled period n (0 if not sharing), None if n is not
    settled."""
    period = records.load(state, records.period_key(n))
    if period is None or period["status"] != "settled":
        return None
    exit_p = m["exit_period"]
    if n < m["cohort"] or (exit_p is not None and n > exit_p):
        return 0
    return member_group(sch, period, m["cohort"])["charge"]
