"""One simulated cluster: validators running ``ConsensusMachine`` over the in-memory network.

The cluster is the *driver* of every machine (what ``node/`` is in production):

* blocks are opaque ids; on ``RequestValue`` the cluster builds one
  (``sha256("sim-block" ‖ seed ‖ height ‖ round ‖ validator ‖ counter)``), registers it as
  valid for that height with the BFT time of the builder's last certificate, and answers
  ``ValueReady``; proposals are delivered with the registry's verdict inline, and a
  ``RequestBlock`` is answered with ``BlockValidated`` (a block is valid iff it was built
  valid *for that height*);
* ``Commit`` is stored in the endpoint's block store (which survives crashes) and the next
  height starts after ``timeout_commit_ms`` of simulated time;
* gossip: when an endpoint has not committed since its last gossip tick it re-sends every
  message it signed at its current height and asks its peers for the certificate of that
  height (``CatchUp``); an endpoint that receives a message two or more heights ahead (or
  one ahead while undecided) asks that peer directly. A peer that has the certificate
  answers with its precommits, which the lagging machine counts like any votes (the
  paper's L49 "commit from precommits" path, with the block fetched by ``RequestBlock``).

Endpoints are the genesis validators ``0..n-1`` (members, in ``consensus.sim.changes``
terms), one extra endpoint per Twin (same member and key, its own signer), and one per
validator the scenario's change schedule adds later (it runs from the start as an
observer). Every endpoint starts height h with the set of h and the set of h+1 from the
schedule, and switches to its rotated key (``ConsensusMachine.use_signer``) between
heights. Everything observed is recorded in a ``RunRecord`` for ``consensus.sim.checks``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from chain.certificate import CommitCertificate
from chain.crypto import PrivateKey
from chain.evidence import Evidence
from chain.genesis import DEFAULT_CONSENSUS
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote
from consensus.certificate import block_time
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
    TimeoutFired,
    ValueReady,
    VoteReceived,
    execute,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.signer import MemorySignerBackend, Signer
from consensus.sim.byzantine import FAKE_SIG, Adversary
from consensus.sim.changes import SetSchedule, member_key
from consensus.sim.faults import HONEST, Scenario, faulty_members
from consensus.sim.network import (
    DELIVER,
    FAULT,
    GOSSIP,
    START_HEIGHT,
    SYNCHRONOUS,
    TIMER,
    Network,
    Scheduler,
)
from consensus.sim.verify import CHAIN_ID, certificate_ok

TIMEOUT_COMMIT_MS = DEFAULT_CONSENSUS["timeout_commit_ms"]
GOSSIP_MS = 700
LIVENESS_MS = 30_000
PER_HEIGHT_MS = 1_000
MAX_EVENTS = 3_000_000

_SETS: dict[int, ValidatorSet] = {}


def validator_key(i: int) -> PrivateKey:
    """The simulator's fixed key of validator ``i`` (the same in every scenario)."""
    return member_key(i)


def validator_set(n: int) -> ValidatorSet:
    """Equal-power validators 0..n-1 with the simulator's keys."""
    vs = _SETS.get(n)
    if vs is None:
        vs = _SETS[n] = ValidatorSet(
            Validator(validator_key(i).public_key.raw, 1, f"v{i}") for i in range(n))
    return vs


class FakeKey:
    """A signing key whose signatures are 64 zero bytes (for runs with signatures off)."""

    __slots__ = ("public_key",)

    def __init__(self, key: PrivateKey) -> None:
        self.public_key = key.public_key

    def sign_raw(self, message: bytes) -> bytes:
        return FAKE_SIG


@dataclass(frozen=True, slots=True)
class CatchUp:
    """Simulator gossip: "I am at ``height``; send me its certificate if you have it"."""

    height: int


@dataclass(frozen=True, slots=True)
class CertificateReply:
    """Simulator gossip: the certificate of a decided height, answering a ``CatchUp``."""

    height: int
    block_id: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class BlockInfo:
    height: int
    round: int
    builder: int
    valid: bool
    time_ms: int


@dataclass(frozen=True, slots=True)
class CommitRecord:
    height: int
    round: int
    block_id: bytes
    certificate: CommitCertificate
    time_ms: int  # simulated time of the commit
    synced: bool = False  # taken from a peer's certificate (block sync), not decided here


@dataclass
class RunRecord:
    """What happened in one run, for the invariant checks."""

    scenario: Scenario
    signatures: bool
    schedule: SetSchedule  # the validator set of every height
    endpoints: list[int]  # endpoint -> member (genesis validator index, or added member)
    honest: set[int]  # endpoints of honest validators (no-double-sign, liveness)
    honest_code: set[int]  # endpoints running the unmodified machine (agreement, evidence)
    commits: list[dict[int, CommitRecord]]  # per endpoint
    blocks: dict[bytes, BlockInfo]
    proposed: set[tuple[int, bytes]]  # (height, block id) of every proposal sent
    # (validator, height, round, step) -> distinct signed contents, honest endpoints only
    honest_signed: dict[tuple[int, int, int, int], set[tuple]]
    evidence: list[tuple[int, Evidence]]  # (endpoint, evidence)
    # (endpoint, (validator, height, round, type)) of conflicting votes (type 1, 2) or
    # proposals (type 0) an endpoint processed
    conflicts_seen: set[tuple[int, tuple[int, int, int, int]]]
    # (height, validator index) of validators that signed two different votes for one
    # step or two proposals with different values for one round
    equivocators: set[tuple[int, int]]
    # (signing public key, height, validator index) of every message any endpoint signed
    signed_keys: set[tuple[bytes, int, int]]
    signer_refusals: list[tuple[int, SignerRefused]]
    heal_at: int
    end_time: int
    events: int
    timed_out: bool
    trace: deque[tuple]
    recovery_ms: int = -1  # time from heal until every honest endpoint committed again
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def validators(self) -> ValidatorSet:
        """The genesis set (the set of height 1)."""
        return self.schedule.set_at(1)


class Endpoint:
    """One running copy of a validator (or a Twin copy)."""

    __slots__ = ("ep", "validator", "role", "key", "backends", "machine", "height",
                 "first_proposal",
                 "commits", "sent", "asked", "tick_height", "first_vote", "incarnation",
                 "adversary", "persisted", "up", "last_commit_time", "top", "relay",
                 "relay_next", "wal", "wal_height", "replaying")

    def __init__(self, ep: int, validator: int, role: str, key: PrivateKey) -> None:
        self.ep = ep
        self.validator = validator
        self.role = role
        self.key = key  # the consensus key it signs with now (rotations change it)
        # one signer store per key (a node keeps its old key's record when it rotates)
        self.backends: dict[bytes, MemorySignerBackend] = {}
        self.machine: ConsensusMachine | None = None
        self.height = 0
        self.commits: dict[int, CommitRecord] = {}
        self.sent: list[Vote | Proposal] = []  # signed at the current height (for gossip)
        self.relay: list[Vote | Proposal] = []  # others' messages accepted at this height
        self.relay_next: list[Vote | Proposal] = []  # ... buffered for the next height
        # the consensus WAL as node/driver.py keeps it (survives crashes): every proposal and
        # vote received at the current height, and every own message, in order
        self.wal: list[tuple[str, Vote | Proposal]] = []
        self.wal_height = 0
        self.replaying = False
        self.asked: set[tuple[int, int]] = set()  # (peer, height) catch-ups requested
        self.tick_height = -1
        # (validator, height, round, type) -> first block id this incarnation processed
        self.first_vote: dict[tuple[int, int, int, int], bytes | None] = {}
        # (validator, height, round) -> (block id, pol round) of the first proposal taken
        self.first_proposal: dict[tuple[int, int, int], tuple[bytes, int]] = {}
        self.incarnation = 0
        self.adversary: Adversary | None = None
        self.persisted = None
        self.up = False
        self.last_commit_time = -1
        self.top = 0  # highest committed height


class EndpointActions:
    """Carries out one endpoint's actions for the cluster (a ``consensus.events.
    ActionHandler``). Inputs the actions ask for (``ValueReady``, ``BlockValidated``) are
    collected in ``follow`` for the cluster to feed once the whole list is done."""

    __slots__ = ("cluster", "e", "follow")

    def __init__(self, cluster: Cluster, e: Endpoint) -> None:
        self.cluster = cluster
        self.e = e
        self.follow: list[ValueReady | BlockValidated] = []

    def broadcast_vote(self, a: BroadcastVote) -> None:
        """Send the vote; remember the first one per step to spot conflicts."""
        e, vote = self.e, a.vote
        if vote.height == e.height:
            key = (vote.validator, vote.height, vote.round, vote.type)
            first = e.first_vote.setdefault(key, vote.block_id)
            if first != vote.block_id:
                self.cluster.conflicts_seen.add((e.ep, key))
        self.cluster._send_signed(e, vote)

    def schedule_timeout(self, a: ScheduleTimeout) -> None:
        """A timer event in simulated time, dropped if the endpoint restarts meanwhile."""
        c, ep = self.cluster, self.e.ep
        c.sched.at(c.sched.now + a.duration_ms, TIMER, ep, c.net.epoch[ep],
                   TimeoutFired(a.height, a.round, a.step))

    def rejected(self, a: Rejected) -> None:
        """Nothing to do: the cluster only counts it (``execute`` returns True)."""

    def broadcast_proposal(self, a: BroadcastProposal) -> None:
        """Send the proposal (the block is an id the cluster's registry knows)."""
        p = a.proposal
        if p.height == self.e.height:
            self.e.first_proposal.setdefault((p.validator, p.height, p.round),
                                             (p.block_id, p.pol_round))
        self.cluster._send_signed(self.e, p)

    def request_value(self, a: RequestValue) -> None:
        """Build a block now; its ``ValueReady`` follows the action list."""
        self.follow.append(self.cluster._build(self.e, a))

    def request_block(self, a: RequestBlock) -> None:
        """The registry's verdict, if the block exists, follows the action list."""
        verdict = self.cluster._verdict(a.height, a.block_id)
        if verdict is not None:
            self.follow.append(BlockValidated(a.height, a.block_id, *verdict))

    def commit(self, a: Commit) -> None:
        """Store the decision; the next height starts after timeout_commit_ms."""
        self.cluster._commit(self.e, a)

    def emit_evidence(self, a: EmitEvidence) -> None:
        """Record the evidence for the checks."""
        self.cluster.evidence.append((self.e.ep, a.evidence))

    def signer_refused(self, a: SignerRefused) -> None:
        """Record the refusal for the checks."""
        self.cluster.refusals.append((self.e.ep, a))


class Cluster:
    """Runs one ``Scenario`` to completion and returns its ``RunRecord``."""

    def __init__(self, scenario: Scenario, signatures: bool = True, trace_limit: int = 400,
                 gossip: bool = True, liveness_ms: int = LIVENESS_MS,
                 timeouts: TimeoutConfig | None = None,
                 timeout_commit_ms: int = TIMEOUT_COMMIT_MS,
                 core_clock: Callable[[], float] | None = None) -> None:
        """``core_clock``, if given (bench only), times every call into the machine so the
        cost of the consensus logic can be told apart from the simulator's own."""
        self.sc = scenario
        self.core_clock = core_clock
        self.core_seconds = 0.0
        self.signatures = signatures
        self.rng = random.Random(f"sim:{scenario.seed}:{scenario.family}:{scenario.n}")
        self.sched = Scheduler()
        self.schedule = SetSchedule(scenario.n, scenario.changes, faulty_members(scenario))
        self.timeouts = timeouts or TimeoutConfig()
        self.timeout_commit_ms = timeout_commit_ms
        self.gossip = gossip
        self.liveness_ms = liveness_ms
        self.tracing = trace_limit > 0
        self.trace: deque[tuple] = deque(maxlen=max(trace_limit, 1))
        self.block_counter = 0
        self.blocks: dict[bytes, BlockInfo] = {}
        self.proposed: set[tuple[int, bytes]] = set()
        self.honest_signed: dict[tuple[int, int, int, int], set[tuple]] = {}
        self.evidence: list[tuple[int, Evidence]] = []
        self.conflicts_seen: set[tuple[int, tuple[int, int, int, int]]] = set()
        self.signed_by: dict[tuple[int, int, int, int], tuple] = {}
        self.equivocators: set[tuple[int, int]] = set()
        self.signed_keys: set[tuple[bytes, int, int]] = set()
        self.refusals: list[tuple[int, SignerRefused]] = []
        self.events = 0
        self.synced = 0

        self.eps: list[Endpoint] = []
        for i, role in enumerate(scenario.roles):
            self.eps.append(Endpoint(i, i, role, validator_key(i)))
        for i, role in enumerate(scenario.roles):
            if role == "twins":
                self.eps.append(Endpoint(len(self.eps), i, role, validator_key(i)))
        for m in self.schedule.added:  # honest validators added by the change schedule
            self.eps.append(Endpoint(len(self.eps), m, HONEST, member_key(m)))
        for e in self.eps:
            if e.role in ("equivocate", "double_vote"):
                e.adversary = Adversary(e.role, e.key, CHAIN_ID, signatures, self.rng,
                                        self._new_block)
        self.all_eps = list(range(len(self.eps)))
        self.handlers = [EndpointActions(self, e) for e in self.eps]
        self.net = Network(self.rng, self.sched, len(self.eps), scenario.conditions)
        self.honest = {e.ep for e in self.eps if e.role == HONEST}
        self.honest_code = {e.ep for e in self.eps if e.role != "silent"}

    # ------------------------------------------------------------------ blocks

    def _new_block(self, height: int, round_: int, valid: bool, builder: int = -1,
                   time_ms: int = 0) -> bytes:
        self.block_counter += 1
        block_id = sha256(b"sim-block:%d:%d:%d:%d:%d" % (
            self.sc.seed, height, round_, builder, self.block_counter))
        self.blocks[block_id] = BlockInfo(height, round_, builder, valid, time_ms)
        return block_id

    def _verdict(self, height: int, block_id: bytes) -> tuple[bool, int] | None:
        info = self.blocks.get(block_id)
        if info is None:
            return None
        return info.valid and info.height == height, info.time_ms

    # ------------------------------------------------------------------ lifecycle

    def _signer(self, e: Endpoint, key: PrivateKey) -> Signer:
        backend = e.backends.get(key.public_key.raw)
        if backend is None:
            backend = e.backends[key.public_key.raw] = MemorySignerBackend()
        return Signer(key if self.signatures else FakeKey(key), backend)

    def _machine(self, e: Endpoint) -> ConsensusMachine:
        e.key = self.schedule.key_of(e.validator, e.top + 1)
        if e.adversary is not None:
            e.adversary.key = e.key
        return ConsensusMachine(CHAIN_ID, self._signer(e, e.key), self.timeouts,
                                verify_signatures=self.signatures)

    def _boot(self, e: Endpoint, mode: str = "fresh") -> None:
        e.up = True
        e.incarnation += 1
        e.first_vote = {}
        e.first_proposal = {}
        e.sent = []
        e.relay = []
        e.relay_next = []
        e.asked = set()
        e.tick_height = -1
        if mode == "wipe":
            e.backends = {}
        e.machine = self._machine(e)
        height = e.top + 1
        if mode in ("wal", "wal+state") and e.wal_height == height:
            # as node/driver.py restarts: start the height, then replay the WAL into it
            # ("wal+state" also hands the machine its saved RoundState)
            records = list(e.wal)
            self._start_height(e, height, e.persisted if mode == "wal+state" else None)
            e.replaying = True
            for kind, msg in records:
                if e.machine is None:
                    break
                if msg.__class__ is Vote:
                    rejected = self._feed(e, VoteReceived(msg))
                else:
                    verdict = self._verdict(msg.height, msg.block_id)
                    rejected = self._feed(e, ProposalReceived(msg) if verdict is None
                                          else ProposalReceived(msg, verdict[0], verdict[1]))
                # what the machine knows again is gossiped again
                if kind == "own":
                    e.sent.append(msg)
                elif not rejected:
                    e.relay.append(msg)
            e.replaying = False
        else:
            if mode != "fresh":
                e.wal = []  # the WAL is lost (signer-only restart, or a wiped validator)
            self._start_height(e, height)
        if self.gossip:
            self.sched.at(self.sched.now + GOSSIP_MS + self.rng.randint(0, 100), GOSSIP,
                          e.ep, self.net.epoch[e.ep], None)

    def _start_height(self, e: Endpoint, height: int, resume=None) -> None:
        e.height = height
        e.sent = []
        e.relay = [m for m in e.relay_next if m.height == height]
        e.relay_next = []
        if e.wal_height != height:  # the previous height's end marker: start a new log
            e.wal = []
            e.wal_height = height
        if self.tracing:
            self.trace.append((self.sched.now, e.ep, "start", height))
        key = self.schedule.key_of(e.validator, height)
        if key is not e.key:
            # a key rotation takes effect: the old key signs nothing of this height on
            e.key = key
            e.machine.use_signer(self._signer(e, key), committed=height - 1)
            if e.adversary is not None:
                e.adversary.key = key
            if self.tracing:
                self.trace.append((self.sched.now, e.ep, "rotate",
                                   key.public_key.raw.hex()[:8]))
        vset, nxt = self.schedule.set_at(height), self.schedule.set_at(height + 1)
        clock = self.core_clock
        if clock is None:
            actions = e.machine.start_height(height, vset, self.sched.now, resume, nxt)
        else:
            t0 = clock()
            actions = e.machine.start_height(height, vset, self.sched.now, resume, nxt)
            self.core_seconds += clock() - t0
        self._execute(e, actions)

    def _crash(self, ep: int) -> None:
        e = self.eps[ep]
        if not e.up:
            return
        self.net.crash(ep)
        e.persisted = e.machine.round_state()  # what a WAL synced every step would hold
        e.machine = None
        e.up = False
        if self.tracing:
            self.trace.append((self.sched.now, ep, "crash", None))

    def _restart(self, ep: int, mode: str) -> None:
        e = self.eps[ep]
        if e.up:
            return
        self.net.restart(ep)
        if self.tracing:
            self.trace.append((self.sched.now, ep, "restart", mode))
        self._boot(e, mode)

    # ------------------------------------------------------------------ running

    def run(self) -> RunRecord:
        sc = self.sc
        for t, op, args in sc.events:
            self.sched.at(t, FAULT, -1, 0, (op, args))
        self.sched.at(sc.heal_at, FAULT, -1, 0, ("gst", ()))
        for e in self.eps:
            if e.role == "silent":
                self.net.crash(e.ep)  # never up: everything sent to it is lost
                continue
            self._boot(e)
        # after GST: liveness_ms to recover, plus a generous second per height to reach H
        deadline = sc.heal_at + self.liveness_ms + PER_HEIGHT_MS * sc.heights
        timed_out = False
        sched = self.sched
        eps = self.eps
        net_epoch = self.net.epoch
        while True:
            entry = sched.pop()
            if entry is None:
                timed_out = True
                break
            t, _, kind, ep, epoch, data = entry
            if t > deadline:
                timed_out = True
                break
            self.events += 1
            if self.events > MAX_EVENTS:
                timed_out = True
                break
            if kind == FAULT:
                self._fault(*data)
                if self._finished():
                    break
                continue
            if epoch != net_epoch[ep]:
                continue  # sent to an earlier incarnation: lost in the crash
            e = eps[ep]
            if kind == DELIVER:
                self._deliver(e, data[0], data[1])
            elif kind == TIMER:
                self._feed(e, data)
            elif kind == START_HEIGHT:
                if data == e.height + 1:
                    self._start_height(e, data)
            elif kind == GOSSIP:
                self._gossip(e)
                sched.at(t + GOSSIP_MS, GOSSIP, ep, epoch, None)
            if self._committed:
                self._committed = False
                if self._check_done and self._finished():
                    break
        return self._record(timed_out)

    _check_done = False
    _committed = False

    def _fault(self, op: str, args: tuple) -> None:
        if self.tracing:
            self.trace.append((self.sched.now, -1, op, args))
        if op == "conditions":
            self.net.set_conditions(args[0])
        elif op == "partition":
            self.net.partition(args[0])
        elif op == "heal":
            self.net.heal()
        elif op == "crash":
            self._crash(args[0])
        elif op == "restart":
            self._restart(args[0], args[1])
        elif op == "gst":
            # the global stabilisation time: links become reliable and timely for good
            self.net.heal()
            self.net.set_conditions(SYNCHRONOUS)
            self._check_done = True

    def _finished(self) -> bool:
        heal, want = self.sc.heal_at, self.sc.heights
        for ep in self.honest:
            e = self.eps[ep]
            if e.top < want or e.last_commit_time <= heal:
                return False
        return True

    # ------------------------------------------------------------------ inputs

    def _deliver(self, e: Endpoint, src: int, msg) -> None:
        cls = msg.__class__
        if cls is Vote:
            if msg.height > e.height + 1 or (msg.height == e.height + 1
                                            and e.machine.decision is None):
                self._ask(e, src)
            if msg.height != e.height:
                if not self._feed(e, VoteReceived(msg)) and msg.height == e.height + 1:
                    e.relay_next.append(msg)
                return
            e.wal.append(("v", msg))
            rejected = self._feed(e, VoteReceived(msg))
            if not rejected:
                e.relay.append(msg)
                key = (msg.validator, msg.height, msg.round, msg.type)
                first = e.first_vote.setdefault(key, msg.block_id)
                if first != msg.block_id:
                    self.conflicts_seen.add((e.ep, key))
        elif cls is Proposal:
            if msg.height > e.height + 1:
                self._ask(e, src)
            current = msg.height == e.height
            if current:
                e.wal.append(("p", msg))
            verdict = self._verdict(msg.height, msg.block_id)
            event = (ProposalReceived(msg) if verdict is None
                     else ProposalReceived(msg, verdict[0], verdict[1]))
            rejected = self._feed(e, event)
            if current and e.machine is not None and e.height == msg.height:
                # the machine keeps the first proposal of a round; a second one with
                # another value must become evidence
                key = (msg.validator, msg.height, msg.round)
                value = (msg.block_id, msg.pol_round)
                first = e.first_proposal.get(key)
                if first is None:
                    if not rejected:
                        e.first_proposal[key] = value
                elif first != value:
                    self.conflicts_seen.add((e.ep, (*key, 0)))
            if not rejected:
                if msg.height == e.height:
                    e.relay.append(msg)
                elif msg.height == e.height + 1:
                    e.relay_next.append(msg)
        elif cls is CatchUp:
            rec = e.commits.get(msg.height)
            if rec is not None:
                if self.tracing:
                    self.trace.append((self.sched.now, e.ep, "catchup-reply", (src, msg.height)))
                self.net.send(e.ep, src, CertificateReply(rec.height, rec.block_id,
                                                          rec.certificate))
        elif cls is CertificateReply:
            self._sync(e, msg)

    def _sync(self, e: Endpoint, msg: CertificateReply) -> None:
        """Catch up on a height others decided: first through the machine (its L49 rule
        fed with the certificate's precommits), else as block sync does it (verify the
        certificate and the block, store them, move on)."""
        if msg.height != e.height or msg.height in e.commits:
            return
        for vote in msg.certificate.votes():
            self._feed(e, VoteReceived(vote))
            if msg.height in e.commits or e.machine is None:
                return
        verdict = self._verdict(msg.height, msg.block_id)
        ok, _ = certificate_ok(msg.certificate, self.schedule.set_at(msg.height), msg.height,
                               msg.block_id, self.signatures)
        if not ok or verdict is None or not verdict[0]:
            return
        if self.tracing:
            self.trace.append((self.sched.now, e.ep, "block-sync", (msg.height, msg.block_id)))
        self.synced += 1
        self._store_commit(e, msg.height, msg.certificate.round, msg.block_id,
                           msg.certificate, synced=True)

    def _ask(self, e: Endpoint, peer: int) -> None:
        tag = (peer, e.height)
        if tag not in e.asked:
            e.asked.add(tag)
            self.net.send(e.ep, peer, CatchUp(e.height))

    def _gossip(self, e: Endpoint) -> None:
        if e.height != e.tick_height:
            e.tick_height = e.height
            return
        # No commit for a whole gossip period: re-send what we signed, relay what we
        # accepted from others (the paper's gossip property: a message one correct process
        # received reaches every correct one after GST) and ask for the certificate.
        if self.tracing:
            self.trace.append((self.sched.now, e.ep, "gossip", e.height))
        for msg in e.sent:
            self._send_signed(e, msg, record=False)
        if e.adversary is None:
            for msg in e.relay:
                self.net.broadcast(e.ep, msg, self.all_eps)
        self.net.broadcast(e.ep, CatchUp(e.height), self.all_eps)

    def _feed(self, e: Endpoint, event) -> bool:
        """Hand ``event`` to the endpoint's machine; True if it was rejected."""
        if self.tracing:
            self.trace.append((self.sched.now, e.ep, "in", event))
        clock = self.core_clock
        if clock is None:
            return self._execute(e, e.machine.handle(event, self.sched.now))
        t0 = clock()
        actions = e.machine.handle(event, self.sched.now)
        self.core_seconds += clock() - t0
        return self._execute(e, actions)

    # ------------------------------------------------------------------ outputs

    def _execute(self, e: Endpoint, actions: list[Action]) -> bool:
        """Carry out the endpoint's actions (``consensus.events.execute``); answers to
        ``RequestValue`` and ``RequestBlock`` are fed back only after the whole list, as a
        node's inbox would. True if the input was rejected."""
        if self.tracing:
            now = self.sched.now
            for a in actions:
                self.trace.append((now, e.ep, "rejected" if a.__class__ is Rejected else "out",
                                   a))
        handler = self.handlers[e.ep]
        rejected = execute(actions, handler)
        if handler.follow:
            follow, handler.follow = handler.follow, []
            for event in follow:
                if e.machine is not None:
                    self._feed(e, event)
        return rejected

    def _build(self, e: Endpoint, a: RequestValue) -> ValueReady:
        prev = e.commits.get(a.height - 1)
        time_ms = block_time(prev.certificate, self.schedule.set_at(a.height - 1)) if prev else 0
        valid = e.role != "invalid"
        block_id = self._new_block(a.height, a.round, valid, e.validator, time_ms)
        return ValueReady(a.height, a.round, block_id, time_ms)

    def _commit(self, e: Endpoint, a: Commit) -> None:
        self._store_commit(e, a.height, a.round, a.block_id, a.certificate)

    def _store_commit(self, e: Endpoint, height: int, round_: int, block_id: bytes,
                      cert: CommitCertificate, synced: bool = False) -> None:
        now = self.sched.now
        e.commits[height] = CommitRecord(height, round_, block_id, cert, now, synced)
        e.last_commit_time = now
        if height > e.top:
            e.top = height
        self._committed = True
        self.sched.at(now + self.timeout_commit_ms, START_HEIGHT, e.ep, self.net.epoch[e.ep],
                      height + 1)

    def _send_signed(self, e: Endpoint, msg: Vote | Proposal, record: bool = True) -> None:
        """Send a message the endpoint's machine signed, through its adversary if any."""
        peers = self.all_eps
        if e.adversary is not None:
            e.adversary.key = self.schedule.key_of(e.validator, msg.height)
        sends = [(msg, peers)] if e.adversary is None else e.adversary.outgoing(msg, peers)
        for m, dests in sends:
            if record:
                self._log_signed(e, m)
            for dst in dests:
                if dst != e.ep:
                    self.net.send(e.ep, dst, m)

    def _log_signed(self, e: Endpoint, m: Vote | Proposal) -> None:
        if e.machine is not None and m.height == e.height and e.adversary is None:
            e.sent.append(m)
            if not e.replaying:
                e.wal.append(("own", m))
        signer = (e.adversary.key if e.adversary is not None else e.key).public_key.raw
        self.signed_keys.add((signer, m.height, m.validator))
        if m.__class__ is Proposal:
            step = 1
            content: tuple = (m.block_id, m.pol_round, m.timestamp)
            value: tuple = (m.block_id, m.pol_round)
            self.proposed.add((m.height, m.block_id))
        else:
            step = 1 + m.type
            content = (m.block_id, m.timestamp)
            value = (m.block_id,)
        key = (m.validator, m.height, m.round, step)
        prior = self.signed_by.setdefault(key, value)
        if prior != value:
            self.equivocators.add((m.height, m.validator))
        if e.ep in self.honest:
            key = (m.validator, m.height, m.round, step)
            seen = self.honest_signed.get(key)
            if seen is None:
                self.honest_signed[key] = {content}
            else:
                seen.add(content)

    # ------------------------------------------------------------------ result

    def _record(self, timed_out: bool) -> RunRecord:
        heal = self.sc.heal_at
        recovery = -1
        if not timed_out:
            firsts = []
            for ep in self.honest:
                after = [c.time_ms for c in self.eps[ep].commits.values() if c.time_ms > heal]
                firsts.append(min(after) if after else heal)
            recovery = max(firsts, default=heal) - heal
        return RunRecord(
            scenario=self.sc, signatures=self.signatures, schedule=self.schedule,
            endpoints=[e.validator for e in self.eps], honest=set(self.honest),
            honest_code=set(self.honest_code), commits=[e.commits for e in self.eps],
            blocks=self.blocks, proposed=self.proposed, honest_signed=self.honest_signed,
            evidence=self.evidence, conflicts_seen=self.conflicts_seen,
            equivocators=self.equivocators, signed_keys=self.signed_keys,
            signer_refusals=self.refusals, heal_at=heal,
            end_time=self.sched.now, events=self.events, timed_out=timed_out,
            trace=self.trace, recovery_ms=recovery,
            stats={"sent": self.net.sent, "dropped": self.net.dropped,
                   "duplicated": self.net.duplicated,
                   "synced": self.synced})
