"""Small whole-cluster runs of the state machine: agreement, certificates, liveness.

A miniature in-test network (random delays, reordering, duplicates, a silent validator, a
crash and restart), enough to show the machine decides and agrees when driven the way a
node drives it. The Byzantine simulator with many fault families is ``consensus.sim``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote, VoteType
from consensus.certificate import block_time, verify
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
    execute,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.signer import MemorySignerBackend, Signer

CHAIN = "cluster-test"


@dataclass
class Node:
    index: int
    machine: ConsensusMachine
    backend: MemorySignerBackend
    commits: dict[int, bytes] = field(default_factory=dict)
    certs: dict[int, object] = field(default_factory=dict)
    crashed: bool = False
    signer: Signer | None = None


class _Actions:
    """One node's ``ActionHandler`` in the miniature network: delivery with random delays
    and duplicates, timers and blocks in the cluster's queue, and the checks every action
    must pass (no honest double sign, valid certificates, no signer refusal)."""

    def __init__(self, cluster: Cluster, node: Node) -> None:
        self.c = cluster
        self.node = node

    def _broadcast(self, msg: Vote | Proposal, kind: int, ev: object) -> None:
        c = self.c
        key = (msg.validator, msg.height, msg.round, kind)
        assert c.signed.setdefault(key, msg.block_id) == msg.block_id, \
            f"honest double sign {key}"
        for dest in range(len(c.nodes)):
            if dest == self.node.index:
                continue
            for _ in range(2 if c.rng.random() < c.dup else 1):
                c.push(c.now + c.rng.randint(1, c.max_delay), dest, ev)

    def broadcast_vote(self, a: BroadcastVote) -> None:
        self._broadcast(a.vote, a.vote.type, VoteReceived(a.vote))

    def broadcast_proposal(self, a: BroadcastProposal) -> None:
        p = a.proposal
        self._broadcast(p, 0, ProposalReceived(p, True, self.c.blocks[p.block_id]))

    def schedule_timeout(self, a: ScheduleTimeout) -> None:
        c = self.c
        c.push(c.now + a.duration_ms, self.node.index, TimeoutFired(a.height, a.round, a.step))

    def request_value(self, a: RequestValue) -> None:
        c, i = self.c, self.node.index
        bid = sha256(b"%d/%d/%d" % (i, a.height, a.round))
        c.blocks[bid] = c.now
        c.push(c.now + 5, i, ValueReady(a.height, a.round, bid, c.now))

    def commit(self, a: Commit) -> None:
        c, node, h = self.c, self.node, a.height
        assert h not in node.commits
        node.commits[h] = a.block_id
        node.certs[h] = a.certificate
        ok, why = verify(a.certificate, a.block_id, c.vals, CHAIN, height=h)
        assert ok, why
        c.push(c.now + 10, node.index, ("next", h + 1))
        # lagging peers catch up from the commit votes, as block sync would
        for v in a.certificate.votes():
            for dest in range(len(c.nodes)):
                c.push(c.now + c.rng.randint(1, c.max_delay), dest, VoteReceived(v))

    def emit_evidence(self, a: EmitEvidence) -> None:
        self.c.evidence += 1

    def request_block(self, a: RequestBlock) -> None:
        c = self.c
        if a.block_id in c.blocks:
            c.push(c.now + 5, self.node.index,
                   BlockValidated(a.height, a.block_id, True, c.blocks[a.block_id]))

    def signer_refused(self, a: SignerRefused) -> None:
        raise AssertionError(f"signer refused: {a}")

    def rejected(self, a: Rejected) -> None:
        pass  # a duplicate or late message: nothing to do


class Cluster:
    def __init__(self, n: int, seed: int, *, powers: list[int] | None = None,
                 silent: set[int] = frozenset(), verify_sigs: bool = True,
                 max_delay: int = 300, dup: float = 0.1) -> None:
        self.rng = random.Random(seed)
        self.keys = [PrivateKey(sha256(b"cluster-%d" % i)) for i in range(n)]
        self.vals = ValidatorSet(Validator(k.public_key.raw, (powers or [1] * n)[i])
                                 for i, k in enumerate(self.keys))
        self.silent = set(silent)
        self.verify_sigs = verify_sigs
        self.max_delay, self.dup = max_delay, dup
        self.timeouts = TimeoutConfig(1000, 500, 500, 250)
        self.queue: list[tuple[int, int, int, object]] = []
        self.seq = 0
        self.now = 0
        self.blocks: dict[bytes, int] = {}  # block id -> header time: every block is valid
        self.signed: dict[tuple, bytes] = {}  # (validator, h, r, type) -> block id
        self.evidence = 0
        # (restart height, the restarted signer's last record) of each crash, for the tests
        self.restarts: list[tuple[int, object]] = []
        self.nodes = [self._new_node(i, MemorySignerBackend()) for i in range(n)]

    def _new_node(self, i: int, backend: MemorySignerBackend) -> Node:
        signer = Signer(self.keys[i], backend)
        m = ConsensusMachine(CHAIN, signer, self.timeouts, verify_signatures=self.verify_sigs)
        return Node(i, m, backend, signer=signer)

    def push(self, at: int, dest: int, event: object) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, dest, event))

    def execute(self, node: Node, actions: list) -> None:
        """Carry out ``node``'s actions the way every driver does (``events.execute``); a
        silent validator carries out none."""
        if node.index not in self.silent:
            execute(actions, _Actions(self, node))

    def _mid_height(self, node: Node) -> bool:
        """True if ``node``'s signer has signed at a height it has not committed yet: a
        crash now restarts it into a height its signer already signed in."""
        last = node.backend.load().last
        return last is not None and last.height > max(node.commits, default=0)

    def _crash(self, node: Node) -> Node:
        """Restart ``node`` from its signer storage at the height after its last commit."""
        fresh = self._new_node(node.index, node.backend)
        fresh.commits, fresh.certs = node.commits, node.certs
        self.nodes[node.index] = fresh
        h = max(fresh.commits, default=0) + 1
        self.restarts.append((h, fresh.signer.state.last))
        self.execute(fresh, fresh.machine.start_height(h, self.vals, self.now))
        return fresh

    def run(self, heights: int, budget: int = 20000, crash: tuple[int, int] | None = None
            ) -> None:
        """``crash=(node, at_ms)``: from ``at_ms`` on, the node crashes and restarts at the
        first moment its signer has signed in a height it has not committed (mid-height,
        the case the signer's record exists for), not at a moment chance picks."""
        for node in self.nodes:
            self.execute(node, node.machine.start_height(1, self.vals, 0))
        armed: int | None = None
        if crash is not None:
            self.push(crash[1], crash[0], ("crash",))
        live = [n for n in self.nodes if n.index not in self.silent]
        steps = 0
        while self.queue and steps < budget:
            if all(len(n.commits) >= heights for n in live):
                return
            steps += 1
            self.now, _, dest, event = heapq.heappop(self.queue)
            node = self.nodes[dest]
            if isinstance(event, tuple):
                if event[0] == "crash":
                    armed = dest
                    if self._mid_height(node):
                        self._crash(node)
                        armed = None
                elif event[1] == node.machine.height + 1 and node.machine.decision:
                    self.execute(node, node.machine.start_height(event[1], self.vals, self.now))
                continue
            self.execute(node, node.machine.handle(event, self.now))
            if armed == dest and self._mid_height(node):
                self._crash(node)
                armed = None
        raise AssertionError(f"no liveness: {[len(n.commits) for n in live]} after {steps}")

    def check_agreement(self) -> None:
        by_height: dict[int, bytes] = {}
        for n in self.nodes:
            for h, b in n.commits.items():
                assert by_height.setdefault(h, b) == b, f"disagreement at height {h}"
                assert b in self.blocks  # validity: only proposed blocks are committed


@pytest.mark.parametrize("seed", range(12))
def test_random_delays_and_duplicates_agree_and_commit(seed: int) -> None:
    c = Cluster(4, seed, verify_sigs=seed < 3)
    c.run(heights=4)
    c.check_agreement()
    assert c.evidence == 0


@pytest.mark.parametrize("seed", range(6))
def test_one_silent_validator_of_four(seed: int) -> None:
    c = Cluster(4, seed, silent={seed % 4}, verify_sigs=False)
    c.run(heights=4)
    c.check_agreement()


@pytest.mark.parametrize("seed", range(6))
def test_crash_and_restart_never_double_signs(seed: int) -> None:
    c = Cluster(4, seed, verify_sigs=False, max_delay=600)
    c.run(heights=4, crash=(seed % 4, 300 + 137 * seed))
    c.check_agreement()
    # the crash happened, and mid-height: the restarted signer had a record at the height
    # it restarted into, so what it refused or re-sent there came from that record
    assert len(c.restarts) == 1
    h, last = c.restarts[0]
    assert last is not None and last.height == h, (h, last)


@pytest.mark.parametrize("seed", range(4))
def test_weighted_seven_validators(seed: int) -> None:
    c = Cluster(7, seed, powers=[5, 1, 1, 2, 3, 1, 1], verify_sigs=False)
    c.run(heights=3)
    c.check_agreement()


def test_block_times_strictly_increase() -> None:
    c = Cluster(4, 99, verify_sigs=True)
    c.run(heights=5)
    node = c.nodes[0]
    times = [block_time(node.certs[h], c.vals) for h in sorted(node.certs)]
    assert times == sorted(set(times))
    # each certificate's precommits for a block are stamped after that block's time
    for h, cert in node.certs.items():
        assert all(s.timestamp > c.blocks[cert.block_id] for s in cert.sigs), h
    assert all(v.type == VoteType.PRECOMMIT for v in node.certs[1].votes())
