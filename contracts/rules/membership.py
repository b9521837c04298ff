"""Rule 1 (join), exits, and the juror pool.

A member's id is their Ed25519 public key (32 bytes; lowercase hex in APIs). A member
joins into *cohort* j = the first period whose notice snapshot will include them, and the
active count of cohort j is kept so settlement never loops over members (rule 7).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from contracts import errors, records
from contracts.calendar import (
    age_days,
    age_years,
    birthday,
    cst_date,
    cst_midnight_ms,
    first_notice_at_or_after,
    parse_date,
)
from contracts.rules.context import Ctx, require


def cohort_add(ctx: Ctx, j: int, delta: int) -> None:
    key = records.cohort_key(j)
    rec = records.load(ctx.state, key) or {"active": 0}
    rec["active"] += delta
    if rec["active"] < 0:  # pragma: no cover - would mean a bookkeeping bug
        raise AssertionError(f"cohort {j} count went negative")
    if rec["active"] == 0:
        ctx.state.delete(key)
    else:
        records.store(ctx.state, key, rec)


def cohort_count(ctx: Ctx, j: int) -> int:
    rec = records.load(ctx.state, records.cohort_key(j))
    return 0 if rec is None else rec["active"]


def sharing_cohort(ctx: Ctx, joined_ms: int) -> int:
    """The first period a member joining at ``joined_ms`` shares in: the first notice not
    run yet, and under ``sharing_basis = "protected"`` the first of those at or after the
    end of the waiting period (docs/rules.md, rule 1)."""
    n = ctx.meta["next_notice"]
    if ctx.params.sharing_basis == "protected":
        # notice instants increase with n: the first at or after the end of the waiting
        # period, unless that notice already ran
        n = max(n, first_notice_at_or_after(ctx.schedule, joined_ms + ctx.params.waiting_ms))
    return n


def aging_ms(ctx: Ctx, birth_date: str | date) -> int | None:
    """00:00 CST of the member's ``max_age_years``-th birthday (None: the rule is off)."""
    if ctx.params.max_age_years is None:
        return None
    birth = parse_date(birth_date) if isinstance(birth_date, str) else birth_date
    return cst_midnight_ms(birthday(birth, ctx.params.max_age_years))


def aging_period(ctx: Ctx, birth_date: str | date) -> int | None:
    """The notice that takes the member out (rule 1, "Upper age"): the first whose instant
    is at or after their ``max_age_years``-th birthday. None when the rule is off."""
    t = aging_ms(ctx, birth_date)
    return None if t is None else first_notice_at_or_after(ctx.schedule, t)


def aging_add(ctx: Ctx, n: int, cohort: int, delta: int) -> None:
    """Count an active member (``delta`` +1) in, or out of (-1), ``age/n``: the members the
    notice n takes out. Cohorts after the first period of n's cap year are kept apart
    (``late``): at notice n they are groups of their own or waiting cohorts, whose counts
    must lose the member; an earlier cohort is in group 0, which only ``meta.active``
    feeds (rule 7)."""
    key = records.aging_key(n)
    rec = records.load(ctx.state, key) or {"active": 0, "late": []}
    rec["active"] += delta
    sch = ctx.schedule
    if cohort > sch.first_period_of_year(sch.year(n)):
        late = dict((j, c) for j, c in rec["late"])
        late[cohort] = late.get(cohort, 0) + delta
        rec["late"] = sorted([j, c] for j, c in late.items() if c)
    if rec["active"] == 0:
        ctx.state.delete(key)
    else:
        records.store(ctx.state, key, rec)


def age_out(ctx: Ctx, n: int) -> int:
    """At notice n, before its snapshot: take the members whose ``max_age_years``-th
    birthday is after notice n-1 and at or before notice n out of the active count and
    their cohorts' counts. O(cohorts of the current cap year), never a loop over members:
    their records are not written, they read ``aged_out`` (contracts/rules/payout.py)."""
    key = records.aging_key(n)
    rec = records.load(ctx.state, key)
    if rec is None:
        return 0
    for j, count in rec["late"]:
        cohort_add(ctx, j, -count)
    ctx.meta["active"] -= rec["active"]
    ctx.state.delete(key)
    return rec["active"]


def member_tags(m: dict[str, Any]) -> list[bytes]:
    """The identity tags a member record carries (one per identity key it was registered
    under)."""
    return [tag for _, tag in m["identity_tags"]]


def register_member(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    pk = body["member"]
    require(ctx.member(pk) is None, errors.MEMBER_EXISTS,
            "a member record already exists for this key")
    p = ctx.params
    key_ids = [k for k, _ in body["identity_tags"]]
    require(key_ids == list(p.identity_key_ids), errors.IDENTITY_KEYS_MISMATCH,
            f"identity tags under keys {key_ids}; the keys in use are "
            f"{list(p.identity_key_ids)}")
    tags = [bytes(t) for _, t in body["identity_tags"]]
    # any tag under any key in use finds an earlier membership of the same identity,
    # including one registered before a later key was added (docs/privacy.md)
    for tag in tags:
        ident = records.load(ctx.state, records.identity_key(tag))
        if ident is None:
            continue
        require(ident["status"] != "barred", errors.IDENTITY_BARRED,
                "this identity was barred by the waiting-period rule")
        # a payout ends the membership without rewriting the identity record
        # (docs/rules.md, "Payouts"), so "live" means: its member still reads active
        holder = ctx.member(ident["member"])
        require(holder is None or holder["status"] != "active", errors.IDENTITY_IN_USE,
                "this identity already has a live membership")
    birth = parse_date(body["birth_date"])
    today = cst_date(ctx.time_ms)
    require(birth <= today, errors.BAD_DATE, "birth date is in the future")
    age = age_years(birth, today)
    require(age_days(birth, today) >= p.min_join_age_days and age <= p.max_join_age_years,
            errors.OUTSIDE_AGE_WINDOW,
            f"age on {today.isoformat()} must be {p.min_join_age_days} days to "
            f"{p.max_join_age_years} years")
    guardian = body.get("guardian_tag")
    minor = p.adult_age_years is not None and age < p.adult_age_years
    if minor:
        # a child has no credit record of its own: the attestation is the guardian's
        require(guardian is not None, errors.GUARDIAN_REQUIRED,
                f"a member under {p.adult_age_years} joins on a guardian's credit "
                "attestation: guardian_tag is required")
        require(guardian not in tags, errors.GUARDIAN_IS_MEMBER,
                "the guardian's identity is the member's own")
    else:
        require(guardian is None, errors.GUARDIAN_NOT_ALLOWED,
                "guardian_tag is only for a member under the adult age"
                if p.adult_age_years is not None else "this chain has no guardian rule")
    whose = "the guardian's" if minor else "the member's"
    require(body["credit_passed"] is True, errors.CREDIT_NOT_PASSED,
            f"{whose} credit attestation must say passed (registrars apply the threshold off "
            "chain)")
    meta = ctx.meta
    cohort = sharing_cohort(ctx, ctx.time_ms)
    aging = aging_period(ctx, birth)
    ctx.put_member(pk, {
        "pubkey": pk,
        "identity_tags": [[k, t] for k, t in zip(key_ids, tags, strict=True)],
        "birth_date": body["birth_date"],
        "health_commitment": body["health_commitment"],
        "credit_attestation": body["credit_attestation"],
        # only a minor's record has the key
        **({"guardian_tag": guardian} if guardian is not None else {}),
        "registrar": sender,
        "joined_ms": ctx.time_ms,
        "cohort": cohort,
        "status": "active",
        "ended_ms": None,
        "exit_period": None,
        "juror": False,
        "exam_ref": None,
        "pool_index": None,
        "arrears": [],
        "open_claim": 0,
        "refund": False,
        **({} if aging is None else {"age_out_period": aging}),
    })
    for tag in tags:
        records.store(ctx.state, records.identity_key(tag), {"member": pk, "status": "live"})
    cohort_add(ctx, cohort, 1)
    if aging is not None:
        aging_add(ctx, aging, cohort, 1)
    meta["active"] += 1
    meta["members"] += 1
    # no account record: a key without one has nonce 0 (Application.next_nonce), and the
    # member's first transaction creates it; writing it here cost a third of every join
    ctx.emit("member_joined", member=pk.hex(), cohort=cohort, joined_ms=ctx.time_ms)


def active_member(ctx: Ctx, pk: bytes) -> dict[str, Any]:
    m = ctx.member(pk)
    require(m is not None, errors.UNKNOWN_MEMBER, f"no member {pk.hex()}")
    assert m is not None
    require(m["status"] == "active", errors.MEMBER_NOT_ACTIVE,
            f"member {pk.hex()} is {m['status']}")
    return m


def count_out(ctx: Ctx, pk: bytes, m: dict[str, Any]) -> None:
    """Take an active membership out of its cohort's count, the active total and the
    juror pool: what ending it changes besides its own records."""
    cohort_add(ctx, m["cohort"], -1)
    if m.get("age_out_period") is not None:
        # still active, so its aging notice has not run: it must not take them out again
        aging_add(ctx, m["age_out_period"], m["cohort"], -1)
    ctx.meta["active"] -= 1
    if m["pool_index"] is not None:
        pool_remove(ctx, pk, m)


def end_membership(ctx: Ctx, pk: bytes, m: dict[str, Any], status: str) -> None:
    """End an active membership. The member still owes every period already in notice."""
    m["status"] = status
    m["ended_ms"] = ctx.time_ms
    m["exit_period"] = ctx.meta["next_notice"] - 1
    count_out(ctx, pk, m)
    if status == "barred":
        bar_identity(ctx, pk, m)
    else:
        for tag in member_tags(m):
            ikey = records.identity_key(tag)
            if (records.load(ctx.state, ikey) or {}).get("status") != "barred":
                # (rule 3 can bar an identity that has since rejoined: the bar stays)
                ctx.state.delete(ikey)
    ctx.put_member(pk, m)


def bar_identity(ctx: Ctx, pk: bytes, m: dict[str, Any]) -> None:
    """Rule 3: every tag of the member's identity is barred for good."""
    for tag in member_tags(m):
        records.store(ctx.state, records.identity_key(tag), {"member": pk, "status": "barred"})


def leave(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    m = active_member(ctx, sender)
    end_membership(ctx, sender, m, "left")
    ctx.emit("member_left", member=sender.hex(), exit_period=m["exit_period"])


# juror pool: an array in state with swap-remove, so add/remove/draw are O(1) reads each

def pool_add(ctx: Ctx, pk: bytes, m: dict[str, Any]) -> None:
    meta = ctx.meta
    i = meta["pool"]
    records.store(ctx.state, records.pool_key(i), {"member": pk})
    m["pool_index"] = i
    meta["pool"] = i + 1


def pool_remove(ctx: Ctx, pk: bytes, m: dict[str, Any]) -> None:
    meta = ctx.meta
    i, last = m["pool_index"], meta["pool"] - 1
    if i != last:
        moved_pk = records.load(ctx.state, records.pool_key(last))["member"]
        records.store(ctx.state, records.pool_key(i), {"member": moved_pk})
        moved = ctx.member(moved_pk)
        moved["pool_index"] = i
        ctx.put_member(moved_pk, moved)
    ctx.state.delete(records.pool_key(last))
    meta["pool"] = last
    m["pool_index"] = None


def pool_member(ctx: Ctx, i: int) -> bytes:
    return records.load(ctx.state, records.pool_key(i))["member"]


def approve_juror(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    pk = body["member"]
    m = active_member(ctx, pk)
    require(not m["juror"], errors.ALREADY_JUROR, "already an approved juror")
    jp = ctx.params.jury
    age = age_years(parse_date(m["birth_date"]), cst_date(ctx.time_ms))
    require(age >= jp.juror_min_age_years, errors.JUROR_INELIGIBLE,
            f"age {age} < {jp.juror_min_age_years}")
    require(ctx.time_ms - m["joined_ms"] >= jp.juror_min_membership_ms,
            errors.JUROR_INELIGIBLE,
            f"member for less than {jp.juror_min_membership_ms} ms")
    require(not m["arrears"], errors.JUROR_INELIGIBLE, "member is in arrears")
    m["juror"] = True
    m["exam_ref"] = body["exam_ref"]
    pool_add(ctx, pk, m)
    ctx.put_member(pk, m)
    ctx.emit("juror_approved", member=pk.hex(), pool_size=ctx.meta["pool"])
