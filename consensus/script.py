"""Scripted scenarios for one state machine, in the style of etcd raft's interaction tests.

A script is text: a command line, then ``----``, then the exact actions the machine must
return, rendered one per line; cases are separated by blank lines. ``run(text)`` executes
the commands and returns the script with the *actual* output filled in, so a test compares
``run(text) == text``. The machine under test is validator ``me`` of ``n`` (keys derived
from the index, real Ed25519 signatures); the others are played by the script.
Blocks are named by capital letters; ``nil`` is a vote for nil.

Commands (``h`` defaults to the current height, ``r`` to the current round):

    setup n=4 me=0 [powers=1,1,1,1]     no output
    start [h=1] [now=T]                  start_height
    now T                                set the clock (ms) for the next inputs
    proposal [r=R] [pol=-1] [from=I] block=X [valid|invalid]   from = the round's proposer
    validated block=X valid|invalid [time=T]
    prevote|precommit [r=R] [h=H] from=1,2,3 block=X|nil       one vote event each, in order
    timeout propose|prevote|precommit [r=R] [h=H]
    value [r=R] block=X [time=T]         ValueReady
    state                                the machine's height, round, step, lock, valid value
    restart [resume]                     a new machine over the same signer storage
                                         (resume: also hand it the old round_state())
    start-next                           start_height(h+1)

Output lines: ``proposal h r pol block``, ``prevote h r block``, ``precommit h r block``
(our own broadcasts), ``timeout <step> h r <ms>``, ``request-value h r``,
``request-block h X``, ``commit h r X signers=...``, ``evidence v=I h r <type> X/Y`` (type prevote, precommit or proposal),
``rejected <kind>``, ``signer-refused h r <step>``.
"""

from __future__ import annotations

from chain.crypto import PrivateKey
from chain.evidence import DuplicateProposalEvidence
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote, VoteType
from consensus.events import (
    Action,
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
    Step,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.signer import MemorySignerBackend, Signer

CHAIN_ID = "script-chain"
_STEPS = {"propose": Step.PROPOSE, "prevote": Step.PREVOTE, "precommit": Step.PRECOMMIT}


class ScriptError(ValueError):
    """A script line cannot be understood."""


def key_of(index: int) -> PrivateKey:
    """The deterministic test key of validator ``index``."""
    return PrivateKey(sha256(b"script-validator-" + str(index).encode()))


def block(name: str) -> bytes:
    return sha256(b"block-" + name.encode())


class Script:
    """Drives one machine from script commands."""

    def __init__(self) -> None:
        self.n = 4
        self.me = 0
        self.powers = [1] * 4
        self.now = 1000
        self.machine: ConsensusMachine | None = None
        self.backend = MemorySignerBackend()
        self.names: dict[bytes, str] = {}
        self._setup(4, 0, [1] * 4)

    def _setup(self, n: int, me: int, powers: list[int]) -> None:
        self.n, self.me, self.powers = n, me, powers
        self.keys = [key_of(i) for i in range(n)]
        self.validators = ValidatorSet(
            Validator(k.public_key.raw, p) for k, p in zip(self.keys, powers, strict=True))
        self.backend = MemorySignerBackend()
        self.machine = self._new_machine()

    def _new_machine(self) -> ConsensusMachine:
        return ConsensusMachine(CHAIN_ID, Signer(self.keys[self.me], self.backend),
                                TimeoutConfig(1000, 500, 500, 250))

    def block(self, name: str) -> bytes | None:
        if name == "nil":
            return None
        bid = block(name)
        self.names[bid] = name
        return bid

    def name(self, bid: bytes | None) -> str:
        return "nil" if bid is None else self.names.get(bid, bid.hex()[:8])

    # ------------------------------------------------------------------ commands

    def execute(self, line: str) -> list[str]:
        words = line.split()
        cmd, args, flags = words[0], {}, set()
        for w in words[1:]:
            if "=" in w:
                k, v = w.split("=", 1)
                args[k] = v
            else:
                flags.add(w)
        m = self.machine
        h = int(args.get("h", m.height))
        r = int(args.get("r", m.round))
        if cmd == "setup":
            n = int(args.get("n", 4))
            powers = [int(x) for x in args["powers"].split(",")] if "powers" in args else [1] * n
            self._setup(n, int(args.get("me", 0)), powers)
            return []
        if cmd == "now":
            self.now = int(words[1])
            return []
        if cmd == "start":
            self.now = int(args.get("now", self.now))
            return self.render(m.start_height(int(args.get("h", 1)), self.validators, self.now))
        if cmd == "start-next":
            return self.render(m.start_height(m.height + 1, self.validators, self.now))
        if cmd == "restart":
            state = m.round_state()
            self.machine = self._new_machine()
            return self.render(self.machine.start_height(
                state.height, self.validators, self.now,
                resume=state if "resume" in flags else None))
        if cmd == "state":
            lr, lv = m.locked
            vr, vv = m.valid
            dec = "" if m.decision is None else f" decided={self.name(m.decision[1])}@{m.decision[0]}"
            return [f"h={m.height} r={m.round} step={m.step.name.lower()} "
                    f"locked={self.name(lv)}@{lr} valid={self.name(vv)}@{vr}{dec}"]
        if cmd == "proposal":
            sender = int(args["from"]) if "from" in args else m.proposer(h, r)
            p = Proposal(h, r, int(args.get("pol", -1)), self.block(args["block"]), self.now,
                         sender).signed(self.keys[sender], CHAIN_ID)
            valid = True if "valid" in flags else False if "invalid" in flags else None
            return self.render(m.handle(ProposalReceived(p, valid, self.now - 1), self.now))
        if cmd == "validated":
            bid = self.block(args["block"])
            ev = BlockValidated(h, bid, "valid" in flags, int(args.get("time", self.now - 1)))
            return self.render(m.handle(ev, self.now))
        if cmd in ("prevote", "precommit"):
            t = VoteType.PREVOTE if cmd == "prevote" else VoteType.PRECOMMIT
            out: list[Action] = []
            for sender in (int(x) for x in args["from"].split(",")):
                v = Vote(t, h, r, self.block(args["block"]), self.now, sender)
                out += m.handle(VoteReceived(v.signed(self.keys[sender], CHAIN_ID)), self.now)
            return self.render(out)
        if cmd == "timeout":
            return self.render(m.handle(TimeoutFired(h, r, _STEPS[words[1]]), self.now))
        if cmd == "value":
            ev = ValueReady(h, r, self.block(args["block"]), int(args.get("time", self.now - 1)))
            return self.render(m.handle(ev, self.now))
        raise ScriptError(f"unknown command {cmd!r}")

    def render(self, actions: list[Action]) -> list[str]:
        lines = []
        for a in actions:
            c = a.__class__
            if c is BroadcastProposal:
                p = a.proposal
                lines.append(f"proposal {p.height} {p.round} {p.pol_round} {self.name(p.block_id)}")
            elif c is BroadcastVote:
                v = a.vote
                kind = "prevote" if v.type == VoteType.PREVOTE else "precommit"
                lines.append(f"{kind} {v.height} {v.round} {self.name(v.block_id)}")
            elif c is ScheduleTimeout:
                lines.append(f"timeout {a.step.name.lower()} {a.height} {a.round} "
                             f"{a.duration_ms}ms")
            elif c is RequestValue:
                lines.append(f"request-value {a.height} {a.round}")
            elif c is RequestBlock:
                lines.append(f"request-block {a.height} {self.name(a.block_id)}")
            elif c is Commit:
                signers = ",".join(str(s.validator) for s in a.certificate.sigs)
                lines.append(f"commit {a.height} {a.round} {self.name(a.block_id)} "
                             f"signers={signers}")
            elif c is EmitEvidence:
                e = a.evidence
                if isinstance(e, DuplicateProposalEvidence):
                    x, y = e.proposal_a, e.proposal_b
                    kind = "proposal"
                else:
                    x, y = e.vote_a, e.vote_b
                    kind = "prevote" if x.type == VoteType.PREVOTE else "precommit"
                lines.append(f"evidence v={e.validator} {e.height} {x.round} {kind} "
                             f"{self.name(x.block_id)}/{self.name(y.block_id)}")
            elif c is Rejected:
                lines.append(f"rejected {a.kind.value}")
            elif c is SignerRefused:
                lines.append(f"signer-refused {a.height} {a.round} {a.step.name.lower()}")
            else:  # pragma: no cover - every action type is listed above
                lines.append(repr(a))
        return lines


def run(text: str) -> str:
    """Execute a script; return it with each case's output replaced by the actual one."""
    script = Script()
    result: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            result.append(line)
            i += 1
            continue
        result.append(line)
        i += 1
        if i >= len(lines) or lines[i].strip() != "----":
            raise ScriptError(f"line {i}: expected ---- after {stripped!r}")
        result.append("----")
        i += 1
        while i < len(lines) and lines[i].strip():  # skip the expected output
            i += 1
        try:
            result.extend(script.execute(stripped))
        except (KeyError, ValueError, IndexError) as exc:
            raise ScriptError(f"{stripped!r}: {exc}") from exc
    return "\n".join(result) + "\n"
