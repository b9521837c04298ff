"""Rule 5: juries for disputed claims, in *open* or *panel* mode.

Open: every eligible juror may vote once while the window is open; the verdict is valid
only with at least ``open_quorum`` votes. Panel: ``panel_size`` jurors are drawn from the
pool in the first block after the dispute opened, with that block's seed (the hash of the
parent's commit certificate, which did not exist when the dispute was opened); the verdict
needs ``panel_min_votes``. Either way the claim is paid iff yes * 10000 > pass_bps * votes.
Without quorum the assessor's decision stands. docs/rules.md has the seed threat model.

The draw costs O(K) pool reads (O(K log N) against a Merkle state): slots are picked by
hashing (seed, claim id, attempt) modulo the pool size, skipping conflicts and repeats.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from chain.hashing import sha256
from contracts import errors, records
from contracts.rules import waiting
from contracts.rules.context import Ctx, require
from contracts.rules.membership import active_member, pool_member, pool_remove
from contracts.rules.settlement import make_payable

SEED_TAG = b"mutual-ledger/jury-draw/v1\x00"


def open_jury(ctx: Ctx, c: dict[str, Any], origin: str) -> None:
    """Move ``c`` to ``disputed`` with a fresh jury (caller stores ``c``)."""
    c["status"] = "disputed"
    # mode and sizes are the claim's own (filed under them); the window is not changeable
    jp = ctx.claim_params(c).jury
    c["jury"] = {
        "mode": jp.mode, "origin": origin, "opened_ms": ctx.time_ms,
        "opened_height": ctx.height, "start_ms": None, "close_ms": None,
        "seed": None, "panel": [], "yes": 0, "no": 0, "verdict": None,
    }
    if jp.mode == "open":
        _start(ctx, c)
    else:
        meta = ctx.meta
        records.store(ctx.state, records.draw_queue_key(meta["draw_tail"]), {"claim": c["id"]})
        meta["draw_tail"] += 1
    ctx.emit("jury_opened", claim_id=c["id"], origin=origin, mode=jp.mode)


def _start(ctx: Ctx, c: dict[str, Any]) -> None:
    j = c["jury"]
    j["start_ms"] = ctx.time_ms
    j["close_ms"] = ctx.time_ms + ctx.params.jury.window_ms
    meta = ctx.meta
    # windows have one length and start in time order, so the queue is FIFO by close time
    records.store(ctx.state, records.jury_queue_key(meta["jury_tail"]),
                  {"claim": c["id"], "close_ms": j["close_ms"]})
    meta["jury_tail"] += 1


def _conflicted(ctx: Ctx, c: dict[str, Any], pk: bytes) -> bool:
    return pk == c["member"] or ctx.state.get(records.objection_key(c["id"], pk)) is not None


def _aged_out(ctx: Ctx, pk: bytes, aged: list[bytes] | None) -> bool:
    """A pooled juror who reads ``aged_out`` (rule 1, "Upper age": the notice that took them
    out does not touch the pool) is skipped like a conflict, and noted in ``aged``."""
    if ctx.params.max_age_years is None:
        return False
    m = ctx.member(pk)
    if m is None or m["status"] == "active":
        return False
    if aged is not None and pk not in aged:
        aged.append(pk)
    return True


def draw_panel(ctx: Ctx, c: dict[str, Any], block_seed: bytes,
               aged: list[bytes] | None = None) -> list[bytes]:
    """Draw up to K distinct, unconflicted, active jurors from the pool, deterministically
    (aged-out jurors met are appended to ``aged``)."""
    k = ctx.claim_params(c).jury.panel_size
    n = ctx.meta["pool"]
    seed = sha256(SEED_TAG + block_seed + records.u64(c["id"]))
    chosen: list[bytes] = []
    seen: set[bytes] = set()
    if n <= 2 * k:
        # small pool: a seeded shuffle of all of it is still O(K)
        order = sorted(range(n), key=lambda i: sha256(seed + records.u64(i)))
        for i in order:
            pk = pool_member(ctx, i)
            if not _conflicted(ctx, c, pk) and not _aged_out(ctx, pk, aged):
                chosen.append(pk)
                if len(chosen) == k:
                    break
        return chosen
    for attempt in range(4 * k + 64):
        i = int.from_bytes(sha256(seed + records.u64(attempt)), "big") % n
        pk = pool_member(ctx, i)
        if pk in seen:
            continue
        seen.add(pk)
        if _conflicted(ctx, c, pk) or _aged_out(ctx, pk, aged):
            continue
        chosen.append(pk)
        if len(chosen) == k:
            break
    return chosen


def run_draws(ctx: Ctx) -> None:
    """Draw every panel queued by earlier blocks, with this block's seed."""
    meta = ctx.meta
    aged: list[bytes] = []
    while meta["draw_head"] < meta["draw_tail"]:
        qkey = records.draw_queue_key(meta["draw_head"])
        c = ctx.claim(records.load(ctx.state, qkey)["claim"])
        ctx.state.delete(qkey)
        meta["draw_head"] += 1
        panel = draw_panel(ctx, c, ctx.seed, aged)
        for seat, pk in enumerate(panel):
            records.store(ctx.state, records.panel_key(c["id"], pk), {"seat": seat})
        c["jury"]["panel"] = panel
        c["jury"]["seed"] = ctx.seed
        _start(ctx, c)
        ctx.put_claim(c)
        ctx.emit("jury_drawn", claim_id=c["id"], panel=[pk.hex() for pk in panel],
                 close_ms=c["jury"]["close_ms"])
    # every draw of the block ran on the same pool; aged-out jurors met leave it now
    for pk in aged:
        m = ctx.member(pk)
        pool_remove(ctx, pk, m)
        ctx.put_member(pk, m)
        ctx.emit("juror_aged_out", member=pk.hex(), pool_size=meta["pool"])


def eligible_juror(m: dict[str, Any]) -> bool:
    """An approved juror, active and not in arrears, *now*: exactly the members in the
    juror pool (docs/rules.md, rule 5). Checked at vote time in both modes."""
    return m["pool_index"] is not None


def jury_vote(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    c = ctx.claim(body["claim_id"]) if body["claim_id"] > 0 else None
    require(c is not None, errors.UNKNOWN_CLAIM, f"no claim {body['claim_id']}")
    j = c["jury"]
    require(c["status"] == "disputed" and j is not None and j["start_ms"] is not None,
            errors.JURY_NOT_OPEN, f"claim {c['id']} has no jury open for voting")
    require(ctx.time_ms < j["close_ms"], errors.WINDOW_CLOSED, "the jury window has closed")
    m = active_member(ctx, sender)
    require(sender != c["member"], errors.OWN_CLAIM, "cannot judge your own claim")
    vkey = records.vote_key(c["id"], sender)
    require(ctx.state.get(vkey) is None, errors.ALREADY_VOTED, "already voted")
    if j["mode"] == "open":
        require(eligible_juror(m), errors.NOT_A_JUROR,
                "not an eligible juror (not approved, or in arrears)")
        require(not _conflicted(ctx, c, sender), errors.NOT_A_JUROR,
                "objectors may not judge the claim they objected to")
    else:
        require(ctx.state.get(records.panel_key(c["id"], sender)) is not None,
                errors.NOT_ON_PANEL, "not drawn for this panel")
        # drawn while eligible is not enough: a panelist in arrears since the draw is refused
        require(eligible_juror(m), errors.NOT_A_JUROR,
                "not an eligible juror (not approved, or in arrears)")
    records.store(ctx.state, vkey, {"pay": body["pay"]})
    j["yes" if body["pay"] else "no"] += 1
    ctx.put_claim(c)
    ctx.emit("jury_vote", claim_id=c["id"], juror=sender.hex(), pay=body["pay"])


def verdict(ctx: Ctx, j: dict[str, Any]) -> str:
    """The jury's verdict under ``ctx.params``' quorum and threshold (the caller passes a
    context carrying the claim's own parameters)."""
    jp = ctx.params.jury
    votes = j["yes"] + j["no"]
    quorum = jp.open_quorum if j["mode"] == "open" else jp.panel_min_votes
    if votes < quorum:
        return "no_quorum"
    return "pay" if j["yes"] * 10_000 > jp.pass_bps * votes else "deny"


def close_next_jury(ctx: Ctx) -> None:
    """Close the jury at the head of the queue (its close time is due)."""
    meta = ctx.meta
    qkey = records.jury_queue_key(meta["jury_head"])
    c = ctx.claim(records.load(ctx.state, qkey)["claim"])
    ctx.state.delete(qkey)
    meta["jury_head"] += 1
    j = c["jury"]
    # the quorum and threshold the claim was filed under (a read-only view of ctx)
    v = verdict(replace(ctx, params=ctx.claim_params(c)), j)
    j["verdict"] = v
    # without quorum the assessor's decision stands: approved (objection) pays
    pay = v == "pay" or (v == "no_quorum" and j["origin"] == "objection")
    ctx.emit("jury_closed", claim_id=c["id"], verdict=v, yes=j["yes"], no=j["no"],
             pay=pay)
    if pay:
        make_payable(ctx, c)
    else:
        c["status"] = "denied_final"
    ctx.put_claim(c)
    if not pay:
        waiting.final_not_accident(ctx, c)
