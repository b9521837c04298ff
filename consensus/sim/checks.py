"""The invariants every simulated run must satisfy, checked on its ``RunRecord``.

* **agreement**: no two endpoints running the honest machine (honest validators, and the
  honest code inside Twins and other faulty validators) commit different blocks at a height;
* **validity**: every committed block was built valid for that height and proposed by
  someone at that height;
* **certificates**: every commit carries a certificate for that height and block id that
  ``chain.certificate.verify_certificate`` accepts against **the validator set of that
  height** (with signatures off, the same checks minus Ed25519: distinct validators of
  that set holding more than 2/3 of its power);
* **membership**: every message any endpoint signed for a height was signed by the key
  the set of that height holds at the message's validator index: a removed or jailed
  validator, a validator not added yet, and a rotated-away key sign nothing there
  (**retired keys** names the last case: an old key signing at or after its switch);
* **no honest double-sign**: across the whole message log, no honest validator signed two
  different messages for one (height, round, step);
* **liveness**: after the global stabilisation time every honest validator committed again
  and reached the scenario's height within the liveness budget;
* **evidence**: every endpoint that processed two conflicting votes of one validator for
  one (height, round, type), or two proposals with different values for one (height,
  round), emitted evidence for it; all evidence verifies against the set of its height
  (``verify``, or its structural half ``check_shape`` with signatures off) and accuses
  only validators that really signed two different votes or proposals at that height.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.evidence import DuplicateProposalEvidence
from consensus.sim.cluster import RunRecord
from consensus.sim.verify import certificate_ok, evidence_ok

CHECKS = ("agreement", "validity", "certificates", "membership", "retired_key",
          "double_sign", "liveness", "evidence")


@dataclass(frozen=True)
class Violation:
    check: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.detail}"


def _short(b: bytes | None) -> str:
    return "nil" if b is None else b.hex()[:8]


def check_run(rec: RunRecord) -> list[Violation]:
    """All violations of the invariants in one run (empty when the run is correct)."""
    out: list[Violation] = []
    _agreement_validity_certificates(rec, out)
    _membership(rec, out)
    _double_sign(rec, out)
    _liveness(rec, out)
    _evidence(rec, out)
    return out


def _agreement_validity_certificates(rec: RunRecord, out: list[Violation]) -> None:
    decided: dict[int, tuple[bytes, int]] = {}
    checked_certs: set[tuple[int, bytes]] = set()
    for ep in sorted(rec.honest_code):
        for h, c in sorted(rec.commits[ep].items()):
            first = decided.setdefault(h, (c.block_id, ep))
            if first[0] != c.block_id:
                out.append(Violation("agreement", (
                    f"height {h}: endpoint {first[1]} committed {_short(first[0])}, "
                    f"endpoint {ep} committed {_short(c.block_id)}")))
            info = rec.blocks.get(c.block_id)
            if info is None or not info.valid or info.height != h:
                out.append(Violation("validity", (
                    f"endpoint {ep} committed block {_short(c.block_id)} at height {h} "
                    f"that is not a valid block for that height ({info})")))
            elif (h, c.block_id) not in rec.proposed:
                out.append(Violation("validity", (
                    f"endpoint {ep} committed block {_short(c.block_id)} at height {h} "
                    "that nobody proposed")))
            tag = (h, c.certificate.encode() if rec.signatures else c.block_id + bytes(
                [s.validator for s in c.certificate.sigs]))
            if tag in checked_certs:
                continue  # the same certificate was already verified
            checked_certs.add(tag)
            ok, why = certificate_ok(c.certificate, rec.schedule.set_at(h), h, c.block_id,
                                     rec.signatures)
            if not ok:
                out.append(Violation("certificates",
                                     f"endpoint {ep} height {h}: certificate refused: {why}"))


def _membership(rec: RunRecord, out: list[Violation]) -> None:
    switch = {old: (member, height) for member, old, height in rec.schedule.rotations}
    for key, h, index in sorted(rec.signed_keys):
        vs = rec.schedule.set_at(h)
        if index < len(vs) and vs[index].pub_key == key:
            continue
        retired = switch.get(key)
        if retired is not None and h >= retired[1]:
            out.append(Violation("retired_key", (
                f"the old key {key.hex()[:8]} of member {retired[0]} signed at height {h}, "
                f"at or after its rotation at height {retired[1]}")))
        else:
            out.append(Violation("membership", (
                f"key {key.hex()[:8]} signed as validator {index} at height {h}, which the "
                f"set of that height does not give it")))


def _double_sign(rec: RunRecord, out: list[Violation]) -> None:
    steps = {1: "proposal", 2: "prevote", 3: "precommit"}
    for (v, h, r, step), contents in sorted(rec.honest_signed.items()):
        if len(contents) > 1:
            shown = ", ".join(sorted(f"{_short(c[0])}@t{c[-1]}" for c in contents))
            out.append(Violation("double_sign", (
                f"honest validator {v} signed {len(contents)} different {steps[step]}s at "
                f"height {h} round {r}: {shown}")))


def _liveness(rec: RunRecord, out: list[Violation]) -> None:
    if not rec.timed_out:
        return
    want = rec.scenario.heights
    for ep in sorted(rec.honest):
        commits = rec.commits[ep]
        top = max(commits, default=0)
        after = [h for h, c in commits.items() if c.time_ms > rec.heal_at]
        if top < want or not after:
            out.append(Violation("liveness", (
                f"endpoint {ep}: at {rec.end_time} ms (healed at {rec.heal_at} ms) it has "
                f"height {top} of {want}, {len(after)} committed after healing")))
    if not out or out[-1].check != "liveness":
        out.append(Violation("liveness", f"run did not finish by {rec.end_time} ms"))


def _evidence(rec: RunRecord, out: list[Violation]) -> None:
    emitted: set[tuple[int, tuple[int, int, int, int]]] = set()
    for ep, ev in rec.evidence:
        if isinstance(ev, DuplicateProposalEvidence):
            p = ev.proposal_a
            emitted.add((ep, (p.validator, p.height, p.round, 0)))
        else:
            a = ev.vote_a
            emitted.add((ep, (a.validator, a.height, a.round, int(a.type))))
        ok, why = evidence_ok(ev, rec.schedule.set_at(ev.height), rec.signatures)
        if not ok:
            out.append(Violation("evidence", f"endpoint {ep} emitted bad evidence: {why}"))
        elif (ev.height, ev.validator) not in rec.equivocators:
            out.append(Violation("evidence", (
                f"endpoint {ep} accused validator {ev.validator} at height {ev.height}, "
                "which never equivocated there")))
    what = {0: "proposals", 1: "prevotes", 2: "precommits"}
    for ep, (v, h, r, t) in sorted(rec.conflicts_seen):
        if ep in rec.honest_code and (ep, (v, h, r, int(t))) not in emitted:
            out.append(Violation("evidence", (
                f"endpoint {ep} processed conflicting {what[int(t)]}"
                f" of validator {v} at height {h} round {r} but emitted no evidence")))
