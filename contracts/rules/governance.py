"""Governance: proposals, votes, and how a passed change applies (docs/governance.md).

A validator's operator account proposes one change (``propose``, which counts as its yes)
and the operators vote (``vote_proposal``). A proposal passes in the transaction where the
yes votes of validators in the set of the executing height hold more than 2/3 of that
set's power (counted again at every vote), and expires at its deadline. A passed change
applies in the same transaction:

* validator-set kinds write the set of height H+2 (H: the executing block), computed from
  the latest known set, under the one-third bound against the set of H+1;
* role kinds rewrite ``role/<pk>`` (effective from the next transaction);
* ``set_params`` writes a new parameter version effective from ``from_period``.

Every check is made when the proposal is opened (a refusal is the transaction's error,
no state change) and again when it would apply (a refusal then marks the proposal
``failed`` with the code; the vote itself is accepted). Jailing (``jail``) runs from
``begin_block`` on committed evidence and is not held to the bound.
"""

from __future__ import annotations

import copy
from bisect import bisect_right
from dataclasses import replace
from typing import Any

from chain.tx import to_jsonable
from chain.validators import (
    Validator,
    ValidatorSet,
    ValidatorSetError,
    transition_error,
)
from contracts import errors, records
from contracts.calendar import DAY_MS
from contracts.errors import RuleError
from contracts.params import Params, ParamsError
from contracts.records import State
from contracts.rules.context import Ctx, require
from contracts.txtypes import GOV_KIND_FIELDS, GOV_KIND_OPTIONAL

#: at most this many proposals are open at once (each block's expiry check reads them)
MAX_OPEN_PROPOSALS = 64
#: a deadline at most this far after the block time
MAX_DEADLINE_MS = 30 * DAY_MS
#: ``from_period`` at most this many periods after the first period not in notice
MAX_PERIODS_AHEAD = 120
#: parameters fixed for the life of a chain: they define the calendar, or indexes built
#: when a member joins or a dispute opens depend on them (docs/governance.md)
FIXED_PARAMS = frozenset({"schedule", "waiting_ms", "sharing_basis", "max_age_years",
                          "objection_window_ms", "appeal_window_ms"})
FIXED_JURY_PARAMS = frozenset({"window_ms"})

VSET_KINDS = frozenset({"add_validator", "remove_validator", "set_power", "rotate_key"})


# validator sets in the state ---------------------------------------------------------

def set_heights(state: State) -> list[int]:
    rec = records.load(state, records.VSETS_KEY)
    if rec is None:
        raise RuntimeError("state is not initialised (run init_chain)")
    return rec["heights"]


def set_at(state: State, height: int) -> ValidatorSet:
    """The set that signs ``height`` as far as the state knows it."""
    heights = set_heights(state)
    start = heights[bisect_right(heights, height) - 1]
    return ValidatorSet.from_maps(records.load(state, records.vset_key(start))["validators"])


def latest_set(state: State) -> ValidatorSet:
    """The set of the highest height the state has a record for."""
    return set_at(state, set_heights(state)[-1])


def operator_power(vset: ValidatorSet, accounts: set[bytes]) -> int:
    return sum(v.power for v in vset.validators if v.operator in accounts)


def _write_set(ctx: Ctx, new: ValidatorSet, change: dict[str, Any]) -> int:
    """Store ``new`` as the set of H+2 (adding to the changes already made there in this
    block); returns H+2."""
    h = ctx.height + 2
    key = records.vset_key(h)
    rec = records.load(ctx.state, key)
    changes = [] if rec is None else rec["changes"]
    changes.append(change)
    records.store(ctx.state, key, {"validators": new.to_maps(), "changes": changes})
    idx = records.load(ctx.state, records.VSETS_KEY)
    if idx["heights"][-1] != h:
        idx["heights"].append(h)
        records.store(ctx.state, records.VSETS_KEY, idx)
    ctx.emit("validator_set_changed", height=h, change=change["kind"],
             total_power=new.total_power, validators=len(new),
             set_hash=new.hash().hex())
    return h


def _key_used(state: State, pk: bytes) -> bool:
    return state.get(records.used_key(pk)) is not None


def _next_set(ctx: Ctx, kind: str, ch: dict[str, Any]) -> ValidatorSet:
    """The set a validator-set change would make, or a RuleError saying why not."""
    st = ctx.state
    base = latest_set(st)
    vals = list(base.validators)
    where = {v.pub_key: i for i, v in enumerate(vals)}
    operators = {v.operator for v in vals if v.operator is not None}
    pk = ch["pub_key"]

    def node_key_free(node_key: bytes | None, skip: bytes | None = None) -> None:
        require(node_key is None or all(v.node_key != node_key for v in vals
                                        if v.pub_key != skip),
                errors.NODE_KEY_IN_USE, "the node key is used by a validator in the set")

    def fresh_key(key: bytes) -> None:
        require(not _key_used(st, key) and key not in operators, errors.KEY_USED,
                f"consensus key {key.hex()} was used before (or is an operator account)")

    try:
        if kind == "add_validator":
            fresh_key(pk)
            op = ch["operator"]
            require(op != pk and not _key_used(st, op), errors.BAD_OPERATOR,
                    "the operator account must not be a consensus key")
            node_key_free(ch["node_key"])
            vals.append(Validator(pk, ch["power"], ch["name"], ch["node_key"], op))
        elif kind == "remove_validator":
            require(pk in where, errors.UNKNOWN_VALIDATOR, f"no validator {pk.hex()}")
            del vals[where[pk]]
            require(bool(vals), errors.EMPTY_VALIDATOR_SET, "the set would be empty")
        elif kind == "set_power":
            if pk in where:
                vals[where[pk]] = replace(vals[where[pk]], power=ch["power"])
            else:
                jail = records.load(st, records.jail_key(pk))
                require(jail is not None and jail["restored_height"] is None,
                        errors.UNKNOWN_VALIDATOR,
                        f"no validator {pk.hex()} in the set and none jailed")
                assert jail is not None
                # restored as it was recorded when jailed, at the end of the set
                v = Validator.from_map(jail["validator"])
                node_key_free(v.node_key)
                vals.append(replace(v, power=ch["power"]))
        elif kind == "rotate_key":
            require(pk in where, errors.UNKNOWN_VALIDATOR, f"no validator {pk.hex()}")
            new_pk = ch["new_pub_key"]
            fresh_key(new_pk)
            old = vals[where[pk]]
            require(new_pk != old.operator, errors.KEY_USED,
                    "the new key is this validator's operator account")
            node_key = ch.get("new_node_key", old.node_key)
            node_key_free(node_key, skip=pk)
            vals[where[pk]] = replace(old, pub_key=new_pk, node_key=node_key)
        else:  # pragma: no cover - callers pass VSET_KINDS only
            raise AssertionError(kind)
        new = ValidatorSet(vals)
    except ValidatorSetError as exc:
        raise RuleError(errors.BAD_VALIDATOR, str(exc)) from None
    err = transition_error(set_at(st, ctx.height + 1), new)
    require(err is None, errors.POWER_SHIFT_TOO_LARGE, err or "")
    return new


# roles ---------------------------------------------------------------------------------

def roles_of(state: State, pk: bytes) -> list[str]:
    rec = records.load(state, records.role_key(pk))
    return [] if rec is None else list(rec["roles"])


def _check_role(ctx: Ctx, kind: str, ch: dict[str, Any]) -> list[str]:
    roles = roles_of(ctx.state, ch["account"])
    held = ch["role"] in roles
    if kind == "grant_role":
        require(not held, errors.ROLE_HELD, f"the account already holds {ch['role']}")
        return sorted([*roles, ch["role"]])
    require(held, errors.ROLE_NOT_HELD, f"the account does not hold {ch['role']}")
    return [r for r in roles if r != ch["role"]]


# rule parameters -----------------------------------------------------------------------

def _merged_params(ctx: Ctx, ch: dict[str, Any]) -> dict[str, Any]:
    """The whole params object the change makes for ``from_period``, validated."""
    n = ch["from_period"]
    nxt = ctx.meta["next_notice"]
    require(nxt <= n <= nxt + MAX_PERIODS_AHEAD, errors.BAD_FROM_PERIOD,
            f"from_period must be {nxt} (the first period not in notice) to "
            f"{nxt + MAX_PERIODS_AHEAD}")
    hist = ctx.history
    if hist is not None:
        last_start = hist.index(ctx.state)["versions"][-1][0]
        require(n >= last_start, errors.BAD_FROM_PERIOD,
                f"a change already applies from period {last_start}: from_period must "
                "not be earlier")
    base = ctx.params_at(n).to_dict()
    change = ch["params"]
    require(bool(change), errors.BAD_PARAMS, "no parameter to change")
    merged = copy.deepcopy(base)
    for key, value in change.items():
        if key == "jury" and isinstance(value, dict) and isinstance(base.get("jury"), dict):
            # the jury map may be given in part
            merged["jury"] = {**base["jury"], **value}
        else:
            merged[key] = value
    for key in FIXED_PARAMS:
        require(merged.get(key) == base.get(key), errors.PARAM_NOT_CHANGEABLE,
                f"{key} may not be changed on a running chain")
    if isinstance(merged.get("jury"), dict) and isinstance(base.get("jury"), dict):
        for key in FIXED_JURY_PARAMS:
            require(merged["jury"].get(key) == base["jury"].get(key),
                    errors.PARAM_NOT_CHANGEABLE, f"jury.{key} may not be changed")
    old_ids, new_ids = base.get("identity_key_ids"), merged.get("identity_key_ids")
    if isinstance(old_ids, list) and isinstance(new_ids, list):
        # identity keys are only ever added: a member registered under an old key is found
        # (and a barred identity stays barred) only while that key's tags are still asked
        # for (docs/privacy.md, "Rotating the identity key")
        require(new_ids[:len(old_ids)] == old_ids, errors.BAD_PARAMS,
                f"identity_key_ids must keep {old_ids} and may only add ids after them")
    try:
        Params.from_dict(merged)
    except ParamsError as exc:
        raise RuleError(errors.BAD_PARAMS, str(exc)) from None
    except (TypeError, ValueError, KeyError) as exc:  # malformed nested values
        raise RuleError(errors.BAD_PARAMS, f"malformed parameters: {exc}") from None
    return merged


def _apply_params(ctx: Ctx, prop: dict[str, Any], merged: dict[str, Any]) -> None:
    n = prop["change"]["from_period"]
    idx = ctx.history.index(ctx.state) if ctx.history is not None else {
        "next_v": 1, "versions": [[1, 0]]}
    v = idx["next_v"]
    records.store(ctx.state, records.params_version_key(v), {
        "v": v, "from_period": n, "params": merged, "proposal": prop["id"],
        "height": ctx.height})
    versions = [e for e in idx["versions"] if e[0] != n]
    versions.append([n, v])
    records.store(ctx.state, records.PARAMH_KEY, {"next_v": v + 1, "versions": versions})
    ctx.emit("params_changed", proposal_id=prop["id"], version=v, from_period=n,
             changed=sorted(prop["change"]["params"]))


# checking and applying a change ----------------------------------------------------------

def check_change(ctx: Ctx, kind: str, ch: dict[str, Any]) -> Any:
    """Everything that would refuse the change now (RuleError); returns what applying
    needs (the new set, the new role list, or the merged params)."""
    if kind in VSET_KINDS:
        return _next_set(ctx, kind, ch)
    if kind in ("grant_role", "revoke_role"):
        return _check_role(ctx, kind, ch)
    return _merged_params(ctx, ch)


def _change_entry(prop: dict[str, Any]) -> dict[str, Any]:
    entry = {"kind": prop["kind"], "proposal": prop["id"]}
    entry.update(prop["change"])
    return entry


def _apply(ctx: Ctx, prop: dict[str, Any]) -> None:
    """Apply a passed proposal, or mark it failed with the code that now refuses it."""
    kind, ch = prop["kind"], prop["change"]
    try:
        result = check_change(ctx, kind, ch)
    except RuleError as exc:
        prop["status"] = "failed"
        prop["code"] = exc.code
        prop["reason"] = exc.reason
        ctx.emit("proposal_failed", proposal_id=prop["id"], kind=kind, code=exc.code,
                 reason=exc.reason)
        return
    prop["status"] = "passed"
    ctx.emit("proposal_passed", proposal_id=prop["id"], kind=kind,
             yes_power=prop["yes_power"], total_power=prop["total_power"])
    if kind in VSET_KINDS:
        h = _write_set(ctx, result, _change_entry(prop))
        prop["applies_height"] = h
        # the key that starts signing at h is never accepted again (a restored or
        # re-powered validator's key is already recorded)
        new_key = {"add_validator": ch["pub_key"],
                   "rotate_key": ch.get("new_pub_key")}.get(kind)
        if new_key is not None:
            records.store(ctx.state, records.used_key(new_key), {"height": h})
        if kind == "set_power":
            jkey = records.jail_key(ch["pub_key"])
            jail = records.load(ctx.state, jkey)
            if jail is not None and jail["restored_height"] is None:
                jail["restored_height"] = h
                records.store(ctx.state, jkey, jail)
    elif kind in ("grant_role", "revoke_role"):
        rkey = records.role_key(ch["account"])
        if result:
            records.store(ctx.state, rkey, {"roles": result})
        else:
            ctx.state.delete(rkey)
        ctx.emit("role_granted" if kind == "grant_role" else "role_revoked",
                 account=ch["account"].hex(), role=ch["role"], proposal_id=prop["id"])
    else:
        _apply_params(ctx, prop, result)


# proposals -----------------------------------------------------------------------------

def _index(state: State) -> dict[str, Any]:
    return records.load(state, records.PROPS_KEY) or {"next": 1, "open": []}


def tally(vset: ValidatorSet, prop: dict[str, Any]) -> tuple[int, int]:
    """(yes power, total power) of the proposal's votes against ``vset``: only operators
    of validators in ``vset`` count."""
    yes = {v["operator"] for v in prop["votes"] if v["yes"]}
    return operator_power(vset, yes), vset.total_power


def _count_and_close(ctx: Ctx, prop: dict[str, Any], idx: dict[str, Any]) -> None:
    vset = set_at(ctx.state, ctx.height)
    yes, total = tally(vset, prop)
    prop["yes_power"], prop["total_power"] = yes, total
    sole_rotation = (prop["kind"] == "rotate_key"
                     and _operator_of(vset, prop["change"]["pub_key"]) == prop["proposer"])
    if vset.has_quorum(yes) or sole_rotation:
        prop["closed_height"] = ctx.height
        idx["open"] = [e for e in idx["open"] if e[0] != prop["id"]]
        records.store(ctx.state, records.PROPS_KEY, idx)
        _apply(ctx, prop)
    records.store(ctx.state, records.proposal_key(prop["id"]), prop)


def _operator_of(vset: ValidatorSet, pk: bytes) -> bytes | None:
    i = vset.index_of(pk)
    return None if i is None else vset[i].operator


def propose(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    kind = body["kind"]
    fields = GOV_KIND_FIELDS[kind] + GOV_KIND_OPTIONAL.get(kind, ())
    ch = {k: body[k] for k in fields if k in body}
    dl = body["deadline_ms"]
    require(ctx.time_ms < dl <= ctx.time_ms + MAX_DEADLINE_MS, errors.BAD_DEADLINE,
            f"deadline must be after the block time {ctx.time_ms} and at most "
            f"{MAX_DEADLINE_MS} ms later")
    idx = _index(ctx.state)
    require(len(idx["open"]) < MAX_OPEN_PROPOSALS, errors.TOO_MANY_PROPOSALS,
            f"{MAX_OPEN_PROPOSALS} proposals are open")
    check_change(ctx, kind, ch)
    pid = idx["next"]
    idx["next"] = pid + 1
    idx["open"].append([pid, dl])
    prop = {
        "id": pid, "kind": kind, "change": ch, "proposer": sender, "deadline_ms": dl,
        "opened_height": ctx.height, "opened_ms": ctx.time_ms, "status": "open",
        "votes": [{"operator": sender, "yes": True, "height": ctx.height}],
        "yes_power": 0, "total_power": 0, "closed_height": None, "code": None,
        "reason": None, "applies_height": None,
    }
    records.store(ctx.state, records.PROPS_KEY, idx)
    ctx.emit("proposal_opened", proposal_id=pid, kind=kind, proposer=sender.hex(),
             deadline_ms=dl)
    _count_and_close(ctx, prop, idx)


def vote_proposal(ctx: Ctx, sender: bytes, body: dict[str, Any]) -> None:
    pid = body["proposal_id"]
    prop = records.load(ctx.state, records.proposal_key(pid)) if pid > 0 else None
    require(prop is not None, errors.UNKNOWN_PROPOSAL, f"no proposal {pid}")
    assert prop is not None
    require(prop["status"] != "expired" and not (prop["status"] == "open"
                                                 and ctx.time_ms >= prop["deadline_ms"]),
            errors.PROPOSAL_EXPIRED, f"proposal {pid} expired at {prop['deadline_ms']}")
    require(prop["status"] == "open", errors.PROPOSAL_CLOSED,
            f"proposal {pid} is {prop['status']}")
    require(all(v["operator"] != sender for v in prop["votes"]),
            errors.ALREADY_VOTED_PROPOSAL, "this operator already voted")
    prop["votes"].append({"operator": sender, "yes": body["yes"], "height": ctx.height})
    ctx.emit("proposal_voted", proposal_id=pid, operator=sender.hex(), yes=body["yes"])
    _count_and_close(ctx, prop, _index(ctx.state))


def expire_due(ctx: Ctx) -> None:
    """Mark every open proposal whose deadline is at or before the block time expired."""
    idx = records.load(ctx.state, records.PROPS_KEY)
    if idx is None or not idx["open"]:
        return
    due = [pid for pid, dl in idx["open"] if ctx.time_ms >= dl]
    if not due:
        return
    idx["open"] = [e for e in idx["open"] if ctx.time_ms < e[1]]
    records.store(ctx.state, records.PROPS_KEY, idx)
    for pid in due:
        key = records.proposal_key(pid)
        prop = records.load(ctx.state, key)
        prop["status"] = "expired"
        prop["closed_height"] = ctx.height
        records.store(ctx.state, key, prop)
        ctx.emit("proposal_expired", proposal_id=pid, kind=prop["kind"])


# jailing -------------------------------------------------------------------------------

def jail(ctx: Ctx, offence_height: int, pk: bytes, evidence: bytes) -> None:
    """Jail the offender from H+2 (power 0: dropped from the set), unless it is not in the
    latest known set, is jailed already, or is the last validator."""
    jkey = records.jail_key(pk)
    prev = records.load(ctx.state, jkey)
    attrs = {"pub_key": pk.hex(), "evidence": evidence.hex(), "offence_height": offence_height}
    if prev is not None and (prev["restored_height"] is None or prev["evidence"] == evidence):
        ctx.emit("validator_jail_skipped", reason="already jailed", **attrs)
        return
    base = latest_set(ctx.state)
    i = base.index_of(pk)
    if i is None:
        ctx.emit("validator_jail_skipped", reason="not in the latest known set", **attrs)
        return
    if len(base) == 1:
        ctx.emit("validator_jail_skipped", reason="it is the last validator", **attrs)
        return
    new = ValidatorSet(v for j, v in enumerate(base.validators) if j != i)
    h = _write_set(ctx, new, {"kind": "jail", "pub_key": pk, "evidence": evidence,
                              "offence_height": offence_height})
    records.store(ctx.state, jkey, {
        "evidence": evidence, "height": offence_height, "jailed_height": h,
        "validator": base[i].to_map(), "restored_height": None})
    ctx.emit("validator_jailed", height=h, power=base[i].power, **attrs)


# queries -------------------------------------------------------------------------------

def proposal_view(prop: dict[str, Any], vset: ValidatorSet) -> dict[str, Any]:
    """The JSON form of a proposal: an open one tallied against ``vset`` (the set that
    would execute a vote now), a closed one as counted at its last vote."""
    out = to_jsonable(prop)
    if prop["status"] == "open":
        yes, total = tally(vset, prop)
    else:
        yes, total = prop["yes_power"], prop["total_power"]
    powers: dict[bytes, int] = {}
    for v in vset.validators:
        if v.operator is not None:
            powers[v.operator] = powers.get(v.operator, 0) + v.power
    out["votes"] = [{"operator": v["operator"].hex(), "yes": v["yes"], "height": v["height"],
                     "power": powers.get(v["operator"], 0)} for v in prop["votes"]]
    out.update(yes_power=yes, total_power=total, needed=2 * total // 3 + 1)
    return out
