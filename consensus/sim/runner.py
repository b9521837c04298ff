"""Runs many seeded scenarios, checks them, and summarises the results per fault family.

Scenario ``seed`` of a run with families ``F`` and cluster sizes ``N`` has family
``F[seed % len(F)]`` and size ``N[(seed // len(F)) % len(N)]``; everything else is drawn
from PRNGs seeded with ``(seed, family, n)``. So one scenario is replayed exactly by
``--start-seed seed --seeds 1 --faults family --validators n`` (with the same
``--heights``, ``--byzantine`` and ``--no-signatures``), and the trace printed for a bad
scenario comes from such a replay.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chain.evidence import DuplicateProposalEvidence
from chain.vote import Proposal, Vote, VoteType
from consensus.events import (
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
    Commit,
    EmitEvidence,
    ProposalReceived,
    Rejected,
    RequestBlock,
    RequestValue,
    ScheduleTimeout,
    SignerRefused,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from consensus.sim.checks import Violation, check_run
from consensus.sim.cluster import LIVENESS_MS, Cluster, RunRecord
from consensus.sim.faults import FAMILIES, Scenario, make_scenario


@dataclass
class ScenarioResult:
    scenario: Scenario
    violations: list[Violation]
    heights: int  # highest height committed by an honest validator
    evidence: int  # distinct pieces of evidence emitted
    recovery_ms: int
    events: int
    record: RunRecord


@dataclass
class FamilyStats:
    scenarios: int = 0
    heights: int = 0
    evidence: int = 0
    violations: int = 0
    bad_scenarios: int = 0
    max_recovery_ms: int = 0
    events: int = 0
    set_changes: int = 0


@dataclass
class Summary:
    families: dict[str, FamilyStats] = field(default_factory=dict)
    first_bad: ScenarioResult | None = None

    @property
    def scenarios(self) -> int:
        return sum(s.scenarios for s in self.families.values())

    @property
    def violations(self) -> int:
        return sum(s.violations for s in self.families.values())

    @property
    def heights(self) -> int:
        return sum(s.heights for s in self.families.values())

    @property
    def evidence(self) -> int:
        return sum(s.evidence for s in self.families.values())

    @property
    def set_changes(self) -> int:
        return sum(s.set_changes for s in self.families.values())


def scenario_for(seed: int, families: Sequence[str], sizes: Sequence[int], heights: int,
                 byzantine: int | None = None, changes: bool = False) -> Scenario:
    """The scenario that ``seed`` names in a run over ``families`` and ``sizes``."""
    family = families[seed % len(families)]
    n = sizes[(seed // len(families)) % len(sizes)]
    rng = random.Random(f"scenario:{seed}:{family}:{n}:{byzantine}")
    return make_scenario(family, n, heights, rng, seed, byzantine, changes)


def run_scenario(sc: Scenario, signatures: bool = True, trace_limit: int = 0,
                 liveness_ms: int = LIVENESS_MS) -> ScenarioResult:
    """Run one scenario and check it."""
    rec = Cluster(sc, signatures=signatures, trace_limit=trace_limit,
                  liveness_ms=liveness_ms).run()
    violations = check_run(rec)
    heights = max((max(rec.commits[ep], default=0) for ep in rec.honest), default=0)
    if not rec.honest:
        heights = max((max(c, default=0) for c in rec.commits), default=0)
    evidence = len({ev.hash() if signatures else ev.encode() for _, ev in rec.evidence})
    return ScenarioResult(sc, violations, heights, evidence, rec.recovery_ms, rec.events, rec)


def run_many(seeds: Sequence[int], families: Sequence[str], sizes: Sequence[int],
             heights: int, byzantine: int | None = None, signatures: bool = True,
             liveness_ms: int = LIVENESS_MS,
             progress: Callable[[int, ScenarioResult], None] | None = None,
             changes: bool = False) -> Summary:
    """Run one scenario per seed; collect per-family figures and the first failure."""
    summary = Summary({f: FamilyStats() for f in families})
    for k, seed in enumerate(seeds):
        sc = scenario_for(seed, families, sizes, heights, byzantine, changes)
        res = run_scenario(sc, signatures, liveness_ms=liveness_ms)
        st = summary.families[sc.family]
        st.scenarios += 1
        st.heights += res.heights
        st.evidence += res.evidence
        st.violations += len(res.violations)
        st.events += res.events
        st.max_recovery_ms = max(st.max_recovery_ms, res.recovery_ms)
        st.set_changes += len(sc.changes)
        if res.violations:
            st.bad_scenarios += 1
            if summary.first_bad is None:
                summary.first_bad = res
        if progress is not None:
            progress(k, res)
    return summary


def parse_families(text: str) -> list[str]:
    if text.strip() == "all":
        return list(FAMILIES)
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"unknown fault families {unknown}; known: {', '.join(FAMILIES)}")
    return names


def format_table(summary: Summary) -> str:
    head = (f"{'family':<12} {'scenarios':>9} {'heights':>9} {'evidence':>9} "
            f"{'violations':>10} {'bad':>5} {'max recovery ms':>15} {'events':>10} "
            f"{'set changes':>11}")
    lines = [head, "-" * len(head)]
    for name, s in summary.families.items():
        lines.append(f"{name:<12} {s.scenarios:>9} {s.heights:>9} {s.evidence:>9} "
                     f"{s.violations:>10} {s.bad_scenarios:>5} {s.max_recovery_ms:>15} "
                     f"{s.events:>10} {s.set_changes:>11}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<12} {summary.scenarios:>9} {summary.heights:>9} "
                 f"{summary.evidence:>9} {summary.violations:>10} {'':>5} {'':>15} "
                 f"{'':>10} {summary.set_changes:>11}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- traces


def _b(block_id: bytes | None) -> str:
    return "nil" if block_id is None else block_id.hex()[:8]


def _vote(v: Vote) -> str:
    kind = "prevote" if v.type == VoteType.PREVOTE else "precommit"
    return f"{kind} h{v.height} r{v.round} by v{v.validator} for {_b(v.block_id)}"


def _proposal(p: Proposal) -> str:
    return (f"proposal h{p.height} r{p.round} pol{p.pol_round} by v{p.validator} "
            f"of {_b(p.block_id)}")


def describe(obj: object) -> str:
    """A one-line human form of an event, action or simulator message."""
    cls = obj.__class__
    if cls is VoteReceived:
        return "recv " + _vote(obj.vote)
    if cls is ProposalReceived:
        return f"recv {_proposal(obj.proposal)} valid={obj.valid}"
    if cls is TimeoutFired:
        return f"timeout {obj.step.name.lower()} h{obj.height} r{obj.round}"
    if cls is BlockValidated:
        return f"block {_b(obj.block_id)} h{obj.height} valid={obj.valid}"
    if cls is ValueReady:
        return f"value ready h{obj.height} r{obj.round} {_b(obj.block_id)}"
    if cls is BroadcastVote:
        return "send " + _vote(obj.vote)
    if cls is BroadcastProposal:
        return "send " + _proposal(obj.proposal)
    if cls is ScheduleTimeout:
        return (f"schedule {obj.step.name.lower()} timeout h{obj.height} r{obj.round} "
                f"+{obj.duration_ms}ms")
    if cls is RequestValue:
        return f"request value h{obj.height} r{obj.round}"
    if cls is RequestBlock:
        return f"request block {_b(obj.block_id)} h{obj.height}"
    if cls is Commit:
        signers = [s.validator for s in obj.certificate.sigs]
        return f"COMMIT h{obj.height} r{obj.round} {_b(obj.block_id)} signers={signers}"
    if cls is EmitEvidence:
        ev = obj.evidence
        if isinstance(ev, DuplicateProposalEvidence):
            return (f"EVIDENCE {_proposal(ev.proposal_a)} vs {_b(ev.proposal_b.block_id)} "
                    f"pol{ev.proposal_b.pol_round}")
        return f"EVIDENCE {_vote(ev.vote_a)} vs {_b(ev.vote_b.block_id)}"
    if cls is Rejected:
        return f"rejected {obj.kind.value}: {obj.reason}"
    if cls is SignerRefused:
        return f"SIGNER REFUSED h{obj.height} r{obj.round} step{int(obj.step)}: {obj.reason}"
    return repr(obj)


def format_trace(rec: RunRecord, last: int | None = None) -> list[str]:
    """The recorded trace (or its ``last`` entries) as readable lines."""
    entries = list(rec.trace)
    if last is not None:
        entries = entries[-last:]
    lines = []
    for t, ep, kind, obj in entries:
        who = "net" if ep < 0 else f"e{ep}/m{rec.endpoints[ep]}"
        if kind in ("in", "out", "rejected"):
            text = describe(obj)
        elif kind == "start":
            text = f"start height {obj}"
        elif kind == "gossip":
            text = f"gossip: no commit for a while at height {obj}, re-sending"
        elif kind == "catchup-reply":
            text = f"catch-up: send certificate of height {obj[1]} to e{obj[0]}"
        else:
            text = f"{kind} {obj if obj else ''}".rstrip()
        lines.append(f"{t:>8} ms  {who:<8} {text}")
    return lines


def replay_command(sc: Scenario, signatures: bool, byzantine: int | None) -> str:
    cmd = (f"python -m consensus.sim --validators {sc.n} --faults {sc.family} "
           f"--start-seed {sc.seed} --seeds 1 --heights {sc.heights}")
    if sc.changes:
        cmd += " --changes"
    if byzantine is not None:
        cmd += f" --byzantine {byzantine}"
    if not signatures:
        cmd += " --no-signatures"
    return cmd
