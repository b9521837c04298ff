"""The audit's own model of governance: proposals, votes and the rule-parameter history,
derived from the transactions themselves.

The replay runs the contracts; this model does not trust them. It reads each applied
``propose`` and ``vote_proposal`` transaction, tallies the yes votes against the validator
set of the executing height (the set the replay computed, which every certified header
commits to), decides when a proposal passes (more than 2/3 of that set's power, or a key
rotation its own operator proposes) or expires (block time at or after its deadline), and
for ``set_params`` builds the parameter version it makes (docs/governance.md, "Rule
parameters"). After every block it compares with the state: the proposal records' status
and tally, the parameter history (``paramh``, ``paramv/<v>``), and every validator-set
change recorded for H+2 (``vset/<H+2>``'s ``changes``) must come from a proposal this
model saw pass in block H, or from evidence in block H (jailing). Any mismatch is named.

``params_at(n)`` is the parameters the model holds in force for period ``n``; the rule
model (audit/rules.py) computes each period with them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from audit.report import ABSENT, AuditFailure
from chain.tx import Transaction, to_jsonable
from chain.validators import ValidatorSet
from contracts import records
from contracts.params import Params, ParamsError

# mirrored from docs/governance.md ("Rule parameters"): what a set_params change may do
MAX_PERIODS_AHEAD = 120
FIXED_PARAMS = ("schedule", "waiting_ms", "sharing_basis", "max_age_years",
                "objection_window_ms", "appeal_window_ms")
FIXED_JURY_PARAMS = ("window_ms",)


@dataclass
class Version:
    """One parameter version: in force from ``from_period`` (until a later one)."""

    v: int
    from_period: int
    raw: dict[str, Any]
    params: Params
    proposal: int | None
    height: int


@dataclass
class Proposal:
    id: int
    kind: str
    change: dict[str, Any]
    proposer: bytes
    deadline_ms: int
    yes: set[bytes] = field(default_factory=set)
    voted: set[bytes] = field(default_factory=set)
    status: str = "open"
    yes_power: int = 0
    total_power: int = 0
    closed_height: int | None = None


class GovernanceModel:
    """Proposals and the parameter history, from the transactions (see the module doc)."""

    #: every recorded validator-set change must come from a proposal seen to pass or from
    #: evidence (tests that write set records directly, standing in for governance
    #: transactions, turn this off: tests/test_audit_builder.py ``set_changes``)
    CHECK_SET_ORIGINS = True

    def __init__(self, genesis_params: dict[str, Any],
                 validators_at: Callable[[int], ValidatorSet]) -> None:
        base = Params.from_dict(genesis_params)
        self.validators_at = validators_at
        self.versions: list[Version] = [Version(0, 1, base.to_dict(), base, None, 0)]
        self.by_v: dict[int, Version] = {0: self.versions[0]}
        self.next_v = 1
        self.proposals: dict[int, Proposal] = {}
        self.next_id = 1
        self.closed_in_block: set[int] = set()
        self.touched: set[int] = set()
        self.stats = {"proposals": 0, "passed": 0, "params_versions": 0}

    # ---- the parameter history -----------------------------------------------------------

    def version_at(self, n: int) -> int:
        v = 0
        for ver in self.versions:
            if ver.from_period > n:
                break
            v = ver.v
        return v

    def params_at(self, n: int) -> Params:
        """The parameters of period ``n``."""
        return self.by_v[self.version_at(n)].params

    def params_v(self, v: int) -> Params:
        return self.by_v[v].params

    # ---- driving -------------------------------------------------------------------------

    def begin_block(self, height: int, time_ms: int) -> None:
        """Proposals whose deadline is reached expire before the block's transactions."""
        self.closed_in_block = set()
        self.height = height
        for p in self.proposals.values():
            if p.status == "open" and time_ms >= p.deadline_ms:
                p.status = "expired"
                p.closed_height = height
                self.touched.add(p.id)

    def on_tx(self, tx: Transaction, next_notice: int) -> None:
        """An applied transaction (its receipt ok); ``next_notice`` is the first period
        not in notice as the transaction runs."""
        if tx.type == "propose":
            b = tx.body
            kind = b["kind"]
            change = {k: v for k, v in b.items() if k not in ("kind", "deadline_ms")}
            p = Proposal(self.next_id, kind, change, tx.sender, b["deadline_ms"])
            self.next_id += 1
            self.proposals[p.id] = p
            self.stats["proposals"] += 1
            self._vote(p, tx.sender, True, next_notice)
        elif tx.type == "vote_proposal":
            p = self.proposals.get(tx.body["proposal_id"])
            if p is None or p.status != "open" or tx.sender in p.voted:
                raise AuditFailure(self.height, f"a vote on proposal "
                                                f"{tx.body['proposal_id']} was applied although "
                                                "the proposal was not open to this operator",
                                   field=f"prop/{tx.body['proposal_id']}.status",
                                   expected="open and not voted by the sender",
                                   found=None if p is None else p.status)
            self._vote(p, tx.sender, tx.body["yes"], next_notice)

    def _vote(self, p: Proposal, operator: bytes, yes: bool, next_notice: int) -> None:
        p.voted.add(operator)
        if yes:
            p.yes.add(operator)
        vset = self.validators_at(self.height)
        p.yes_power = sum(v.power for v in vset.validators if v.operator in p.yes)
        p.total_power = vset.total_power
        self.touched.add(p.id)
        sole = (p.kind == "rotate_key" and any(
            v.pub_key == p.change.get("pub_key") and v.operator == p.proposer
            for v in vset.validators))
        if not (3 * p.yes_power > 2 * p.total_power or sole):
            return
        p.closed_height = self.height
        self.closed_in_block.add(p.id)
        if p.kind != "set_params":
            p.status = "closed"  # passed, or failed a check only the contracts make
            self.stats["passed"] += 1
            return
        merged = self._merged(p, next_notice)
        if merged is None:
            p.status = "failed"
            return
        p.status = "passed"
        self.stats["passed"] += 1
        n = p.change["from_period"]
        ver = Version(self.next_v, n, merged, Params.from_dict(merged), p.id, self.height)
        self.next_v += 1
        self.by_v[ver.v] = ver
        self.versions = [x for x in self.versions if x.from_period != n] + [ver]
        self.stats["params_versions"] += 1

    def _merged(self, p: Proposal, next_notice: int) -> dict[str, Any] | None:
        """The whole params object a passed set_params makes, or None if the rules
        refuse it (docs/governance.md, "Rule parameters")."""
        n, change = p.change.get("from_period"), p.change.get("params")
        if (not isinstance(n, int) or not isinstance(change, dict) or not change
                or not next_notice <= n <= next_notice + MAX_PERIODS_AHEAD
                or n < self.versions[-1].from_period):
            return None
        base = self.params_at(n).to_dict()
        merged = copy.deepcopy(base)
        for key, value in change.items():
            if key == "jury" and isinstance(value, dict) and isinstance(base.get("jury"), dict):
                merged["jury"] = {**base["jury"], **value}
            else:
                merged[key] = value
        if any(merged.get(k) != base.get(k) for k in FIXED_PARAMS):
            return None
        if isinstance(merged.get("jury"), dict) and isinstance(base.get("jury"), dict) and any(
                merged["jury"].get(k) != base["jury"].get(k) for k in FIXED_JURY_PARAMS):
            return None
        old_ids, new_ids = base.get("identity_key_ids"), merged.get("identity_key_ids")
        if (isinstance(old_ids, list) and isinstance(new_ids, list)
                and new_ids[:len(old_ids)] != old_ids):
            # identity keys are only ever added (docs/privacy.md, "Rotating the identity
            # key"): an old membership is found only through its old-key tag
            return None
        try:
            Params.from_dict(merged)
        except (ParamsError, TypeError, ValueError, KeyError):
            return None
        return merged

    # ---- comparing with the replayed state ------------------------------------------------

    def end_block(self, state: Any, evidence_hashes: set[bytes]) -> None:
        """Compare the block's governance records with the model (see the module doc)."""
        for pid in sorted(self.touched):
            self._check_proposal(state, self.proposals[pid])
        self.touched.clear()
        self._check_params(state)
        if self.CHECK_SET_ORIGINS:
            self._check_set_changes(state, evidence_hashes)

    def _fail(self, what: str, name: str, expected: Any, found: Any) -> AuditFailure:
        return AuditFailure(self.height, what, field=name, expected=expected, found=found)

    def _check_proposal(self, state: Any, p: Proposal) -> None:
        rec = records.load(state, records.proposal_key(p.id))
        name = f"prop/{p.id}"
        if rec is None:
            raise self._fail(f"proposal {p.id} the model saw opened has no record", name,
                             p.kind, ABSENT)
        status = rec.get("status")
        want = p.status
        if want == "closed" and status in ("passed", "failed"):
            want = status
        if status != want:
            raise self._fail(f"proposal {p.id} ({p.kind}) is {status} in the state, but "
                             f"tallying its votes against the validator set of height "
                             f"{p.closed_height or self.height} gives {want}",
                             f"{name}.status", want, status)
        if p.status != "expired":
            for fname, value in (("yes_power", p.yes_power), ("total_power", p.total_power)):
                if rec.get(fname) != value:
                    raise self._fail(f"proposal {p.id}'s tally is not the model's",
                                     f"{name}.{fname}", value, rec.get(fname))

    def _check_params(self, state: Any) -> None:
        idx = records.load(state, records.PARAMH_KEY) if hasattr(records, "PARAMH_KEY") \
            else None
        want = [[v.from_period, v.v] for v in self.versions]
        got = [[1, 0]] if idx is None else idx.get("versions")
        if got != want:
            extra = [e for e in (got or []) if e not in want]
            what = ("the state's parameter history holds a version no proposal the model "
                    "saw pass made" if extra else "the state's parameter history is not the "
                    "one the passed proposals make")
            raise self._fail(what, "paramh.versions", want, got)
        for v in self.versions[1:]:
            rec = records.load(state, records.params_version_key(v.v))
            expected = {"v": v.v, "from_period": v.from_period, "params": v.raw,
                        "proposal": v.proposal, "height": v.height}
            if rec is None or to_jsonable(rec) != to_jsonable(expected):
                from audit.compare import first_difference

                name, ev, fv = first_difference(to_jsonable(expected),
                                                to_jsonable(rec) if rec else ABSENT)
                raise self._fail(f"parameter version {v.v} (from period {v.from_period}) "
                                 f"is not what proposal {v.proposal} made",
                                 f"paramv/{v.v}.{name}", ev, fv)

    def _check_set_changes(self, state: Any, evidence_hashes: set[bytes]) -> None:
        h = self.height
        idx = records.load(state, records.VSETS_KEY)
        if idx is None or h + 2 not in idx["heights"]:
            passed_sets = [pid for pid in self.closed_in_block
                           if self.proposals[pid].kind in VSET_KINDS]
            rec_status = [records.load(state, records.proposal_key(pid))["status"]
                          for pid in passed_sets]
            if "passed" in rec_status:
                raise self._fail(f"a validator-set proposal passed in block {h} but no set "
                                 f"is recorded for height {h + 2}", f"vset/{h + 2}",
                                 "a changed set", ABSENT)
            return
        rec = records.load(state, records.vset_key(h + 2))
        for i, ch in enumerate(rec.get("changes", [])):
            kind = ch.get("kind")
            if kind == "jail":
                if ch.get("evidence") not in evidence_hashes:
                    raise self._fail(f"the validator set of height {h + 2} records a jailing "
                                     f"for evidence that is not in block {h}",
                                     f"vset/{h + 2}.changes[{i}].evidence",
                                     sorted(e.hex() for e in evidence_hashes),
                                     to_jsonable(ch.get("evidence")))
                continue
            pid = ch.get("proposal")
            p = self.proposals.get(pid) if isinstance(pid, int) else None
            if p is None or pid not in self.closed_in_block or p.kind != kind:
                raise self._fail(f"the validator set of height {h + 2} records a change "
                                 f"({kind}, proposal {pid}) that no proposal the model saw "
                                 f"pass in block {h} made (a forged validator change)",
                                 f"vset/{h + 2}.changes[{i}]",
                                 sorted(self.closed_in_block), to_jsonable(ch))


VSET_KINDS = frozenset({"add_validator", "remove_validator", "set_power", "rotate_key"})
