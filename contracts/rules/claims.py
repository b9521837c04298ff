"""Rules 2-4: cover, the waiting period, and a claim's way to payment.

Claim statuses (docs/rules.md has the diagram):
filed -> approved -> in_notice -> payable -> paid
filed -> denied -> (appeal) disputed -> payable | denied_final
in_notice -> (objected, at window close) disputed -> payable | denied_final
file_claim inside the waiting period (not an accident) -> rejected_waiting (terminal)
a waiting-period accident claim finally found no accident -> rejected_waiting (rules/waiting.py)
"""

from __future__ import annotations

from typing import Any

from contracts import errors, records
from contracts.calendar import age_years, cst_date, parse_date
from contracts.rules import jury, waiting
from contracts.rules.context import Ctx, require
from contracts.rules.membership import active_member, aging_ms, end_membership
from contracts.rules.settlement import make_payable

OPEN_STATUSES = frozenset({"filed", "approved", "in_notice", "disputed", "payable"})


def claim_is_open(ctx: Ctx, c: dict[str, Any]) -> bool:
    """Open claims block a new claim by the same member; a denied claim is open while it
    can still be appealed."""
    if c["status"] in OPEN_STATUSES:
        return True
    return (c["status"] == "denied"
            and ctx.time_ms < c["assessed_ms"] + ctx.params.appeal_window_ms)


def file_claim(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    m = ctx.member(sender)
    require(m is not None, errors.UNKNOWN_MEMBER, f"no member {sender.hex()}")
    assert m is not None
    # an aged-out member may still claim for a diagnosis made before the upper age
    # (docs/rules.md rule 1, "Upper age": checked below)
    require(m["status"] in ("active", "aged_out"), errors.MEMBER_NOT_ACTIVE,
            f"member {sender.hex()} is {m['status']}")
    if m["open_claim"]:
        prev = ctx.claim(m["open_claim"])
        require(not claim_is_open(ctx, prev), errors.CLAIM_PENDING,
                f"claim {m['open_claim']} is still open")
    p = ctx.params
    require(body["disease"] in p.disease_codes, errors.UNKNOWN_DISEASE,
            f"{body['disease']!r} is not a covered disease")
    dx = body["diagnosed_ms"]
    require(dx <= ctx.time_ms, errors.BAD_DATE, "diagnosis is in the future")
    require(dx >= m["joined_ms"], errors.BAD_DATE, "diagnosis precedes joining")
    upper = aging_ms(ctx, m["birth_date"])
    require(upper is None or dx < upper, errors.AGED_OUT,
            f"diagnosed on or after the member's {p.max_age_years}th birthday: not covered")
    age = age_years(parse_date(m["birth_date"]), cst_date(dx))
    amount = p.payout_for(body["disease"], age)
    require(amount is not None, errors.OUTSIDE_COVER_AGE,
            f"age {age} at diagnosis is beyond every payout band")
    meta = ctx.meta
    claim_id = meta["next_claim"]
    meta["next_claim"] = claim_id + 1
    in_waiting = waiting.in_waiting(ctx, {"diagnosed_ms": dx}, m)
    c = {
        "id": claim_id, "member": sender, "disease": body["disease"],
        "diagnosed_ms": dx, "accident": body["accident"],
        "evidence_hash": body["evidence_hash"], "filed_ms": ctx.time_ms,
        "age_at_diagnosis": age, "age_band": p.age_band(age), "amount": amount,
        "filed_in_arrears": bool(m["arrears"]),
        "status": "filed", "assessor": None, "report_hash": None, "assessed_ms": None,
        "notice_period": None, "objection_close_ms": None, "objections": 0, "jury": None,
        "pay_period": None, "deduction": None, "net": None, "paid_ms": None,
    }
    if ctx.history is not None:
        # the claim keeps the parameters it was filed under (jury mode and sizes); only a
        # claim filed after a change names its version, so older records keep their bytes
        v = ctx.history.version_at(ctx.state, meta["next_notice"])
        if v:
            c["params_v"] = v
    if in_waiting and not body["accident"] and m["status"] != "active":
        # aged out since: their counts are already out, only the bar and refund apply
        waiting.reject(ctx, c, m)
        return
    if in_waiting and not body["accident"]:
        # Rule 3: the membership ends, the identity is barred, paid shares are refundable.
        c["status"] = "rejected_waiting"
        ctx.put_claim(c)
        m["refund"] = True
        end_membership(ctx, sender, m, "barred")
        ctx.emit("claim_rejected_waiting", claim_id=claim_id, member=sender.hex(),
                 diagnosed_ms=dx, waiting_ends_ms=m["joined_ms"] + p.waiting_ms)
        ctx.emit("member_barred", member=sender.hex(), exit_period=m["exit_period"])
        return
    ctx.put_claim(c)
    m["open_claim"] = claim_id
    ctx.put_member(sender, m)
    ctx.emit("claim_filed", claim_id=claim_id, member=sender.hex(), disease=body["disease"],
             amount=amount, accident=body["accident"])


def _claim(ctx: Ctx, claim_id: int) -> dict[str, Any]:
    c = ctx.claim(claim_id) if claim_id > 0 else None
    require(c is not None, errors.UNKNOWN_CLAIM, f"no claim {claim_id}")
    assert c is not None
    return c


def assess_claim(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    c = _claim(ctx, body["claim_id"])
    require(c["status"] == "filed", errors.WRONG_CLAIM_STATE,
            f"claim {c['id']} is {c['status']}, not filed")
    # rule 3: the assessor, not the claimant, decides whether a waiting-period claim is an
    # accident; the finding is given exactly for claims filed as one inside the period
    finding = body.get("accident")
    if waiting.is_waiting_accident(ctx, c):
        require(finding is not None, errors.ACCIDENT_FINDING_REQUIRED,
                f"claim {c['id']} is inside the waiting period: state whether the "
                "accident is confirmed")
        require(finding or not body["approve"], errors.NOT_COVERED_IN_WAITING,
                "inside the waiting period only a confirmed accident can be approved")
        c["accident_confirmed"] = finding
    else:
        require(finding is None, errors.ACCIDENT_FINDING_NOT_ALLOWED,
                f"claim {c['id']} is not an accident claim inside the waiting period")
    c["assessor"] = sender
    c["report_hash"] = body["report_hash"]
    c["assessed_ms"] = ctx.time_ms
    if body["approve"]:
        n = ctx.meta["next_notice"]
        c["status"] = "approved"
        c["notice_period"] = n
        ctx.append_id(records.notice_queue_key(n), c["id"])
        ctx.emit("claim_approved", claim_id=c["id"], notice_period=n)
    else:
        c["status"] = "denied"
        if finding is False:
            waiting.queue_appeal_close(ctx, c)
        ctx.emit("claim_denied", claim_id=c["id"],
                 appeal_until_ms=ctx.time_ms + ctx.params.appeal_window_ms)
    ctx.put_claim(c)


def object_claim(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    c = _claim(ctx, body["claim_id"])
    require(c["status"] == "in_notice", errors.WRONG_CLAIM_STATE,
            f"claim {c['id']} is {c['status']}, not in public notice")
    require(ctx.time_ms < c["objection_close_ms"], errors.WINDOW_CLOSED,
            "the objection window has closed")
    active_member(ctx, sender)
    require(sender != c["member"], errors.OWN_CLAIM, "cannot object to your own claim")
    okey = records.objection_key(c["id"], sender)
    require(ctx.state.get(okey) is None, errors.ALREADY_OBJECTED, "already objected")
    records.store(ctx.state, okey, {"reason_hash": body["reason_hash"]})
    c["objections"] += 1
    ctx.put_claim(c)
    ctx.emit("claim_objected", claim_id=c["id"], member=sender.hex(),
             objections=c["objections"])


def appeal_claim(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    c = _claim(ctx, body["claim_id"])
    require(sender == c["member"], errors.NOT_CLAIMANT, "only the claimant may appeal")
    require(c["status"] == "denied", errors.WRONG_CLAIM_STATE,
            f"claim {c['id']} is {c['status']}, not denied")
    require(ctx.time_ms < c["assessed_ms"] + ctx.params.appeal_window_ms,
            errors.WINDOW_CLOSED, "the appeal window has closed")
    c["appeal_hash"] = body["reason_hash"]
    jury.open_jury(ctx, c, "appeal")
    ctx.put_claim(c)
    ctx.emit("claim_appealed", claim_id=c["id"])


# scheduled work ------------------------------------------------------------------------

def publish_notice(ctx: Ctx, n: int) -> list[int]:
    """Put every claim approved for notice ``n`` into public notice; return their ids."""
    qkey = records.notice_queue_key(n)
    ids = ctx.id_list(qkey)
    close = ctx.schedule.notice_ms(n) + ctx.params.objection_window_ms
    for cid in ids:
        c = ctx.claim(cid)
        c["status"] = "in_notice"
        c["objection_close_ms"] = close
        ctx.put_claim(c)
    ctx.state.delete(qkey)
    return ids


def close_objections(ctx: Ctx, noticed: list[int]) -> None:
    for cid in noticed:
        c = ctx.claim(cid)
        if c["status"] != "in_notice":  # pragma: no cover - nothing else moves them
            continue
        if c["objections"]:
            jury.open_jury(ctx, c, "objection")
        else:
            make_payable(ctx, c)
        ctx.put_claim(c)
