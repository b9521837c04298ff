"""Random input sequences (with restarts) never crash the machine or make it double-sign.

Seeded random walks over every input type, biased towards the current height and small
rounds so that polkas, locks, round skips and commits actually happen.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote, VoteType
from consensus.events import (
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
    Commit,
    ProposalReceived,
    Rejected,
    Step,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.signer import MemorySignerBackend, Signer

CHAIN = "fuzz"
KEYS = [PrivateKey(sha256(b"f-%d" % i)) for i in range(4)]
# we are validator 1 of 4 equal ones: the other three can make a quorum without us
VALS = ValidatorSet(Validator(k.public_key.raw, p) for k, p in zip(KEYS, [1, 1, 1, 1],
                                                                     strict=True))
BLOCKS = [None, sha256(b"A"), sha256(b"B"), sha256(b"C")]
OTHERS = (0, 2, 3)


def new_machine(backend: MemorySignerBackend) -> ConsensusMachine:
    return ConsensusMachine(CHAIN, Signer(KEYS[1], backend), TimeoutConfig(),
                            verify_signatures=False)


def check_lock(vote: Vote, locks: dict[int, tuple[int, bytes]], m: ConsensusMachine) -> None:
    """The locking invariant behind the paper's safety proof: after precommitting v in
    round r, a node prevotes another value w in a later round only if it has seen a polka
    for w in some round in [r, that round)."""
    if vote.type == VoteType.PRECOMMIT:
        locks[vote.height] = (vote.round, vote.block_id)
        return
    lock = locks.get(vote.height)
    if lock is None or lock[1] == vote.block_id or lock[0] >= vote.round:
        return
    polkas = [r for r in range(lock[0], vote.round)
              if (pv := m.votes.prevotes(r)) is not None and pv.has_quorum_for(vote.block_id)]
    assert polkas, f"prevoted {vote.block_id.hex()[:8]} at {vote.round} against lock {lock}"


def walk(seed: int, steps: int, stats: Counter) -> None:
    rng = random.Random(seed)
    backend = MemorySignerBackend()
    m = new_machine(backend)
    now = 1000
    signed: dict[tuple, bytes | None] = {}
    decided: dict[int, bytes] = {}
    locks: dict[int, tuple[int, bytes]] = {}
    out = m.start_height(1, VALS, now)
    for _ in range(steps):
        now += rng.randint(0, 50)
        h = m.height + rng.choice([0, 0, 0, 0, 0, 1, -1, 2])
        r = max(0, m.round + rng.choice([0, 0, 0, 0, 0, 0, 1, -1, 2, 5]))
        b = rng.choice([None, BLOCKS[1], BLOCKS[1], BLOCKS[2], BLOCKS[2]])
        kind = rng.choices(["vote", "burst", "proposal", "timeout", "validated", "value",
                            "restart", "next"], [6, 4, 3, 3, 2, 1, 1, 2])[0]
        if kind == "vote":
            v = rng.choice(OTHERS + (1,))
            t = rng.choice(list(VoteType))
            out += m.handle(VoteReceived(Vote(t, h, r, b, now, v)), now)
        elif kind == "burst":  # the others (a quorum) cast one vote, in a random order
            t = rng.choice(list(VoteType))
            for v in rng.sample(OTHERS, 3):
                out += m.handle(VoteReceived(Vote(t, h, r, b, now, v)), now)
        elif kind == "proposal":
            sender = m.proposer(h, r) if rng.random() < 0.8 else rng.randrange(4)
            pol = rng.randint(-1, r - 1)
            valid = rng.choice([None, True, True, True, False])
            p = Proposal(h, r, pol, b or BLOCKS[1], now, sender)
            out += m.handle(ProposalReceived(p, valid, now - 1), now)
        elif kind == "timeout":
            out += m.handle(TimeoutFired(h, r, rng.choice(list(Step))), now)
        elif kind == "validated":
            out += m.handle(BlockValidated(h, b or BLOCKS[2], rng.random() < 0.8, now - 1), now)
        elif kind == "value":
            out += m.handle(ValueReady(h, r, b or BLOCKS[3], now - 1), now)
        elif kind == "restart":
            # as a node does: a decided height was stored, so it restarts at the next one
            state = m.round_state()
            height = state.height + (m.decision is not None)
            m = new_machine(backend)
            out += m.start_height(height, VALS, now,
                                  resume=state if rng.random() < 0.5 else None)
        elif m.decision is not None:
            out += m.start_height(m.height + 1, VALS, now)
        for a in out:
            stats[type(a).__name__] += 1
            if isinstance(a, BroadcastVote | BroadcastProposal):
                msg = a.vote if isinstance(a, BroadcastVote) else a.proposal
                key = (msg.height, msg.round, getattr(msg, "type", 0))
                fresh = key not in signed  # not a re-broadcast after a restart
                assert signed.setdefault(key, msg.block_id) == msg.block_id, key
                if fresh and isinstance(a, BroadcastVote) and a.vote.block_id is not None:
                    check_lock(a.vote, locks, m)
            elif isinstance(a, Commit):
                # the others hold 3/4 of the power, more than the f the protocol tolerates,
                # so only this node's own consistency is checked: one decision per height
                assert decided.setdefault(a.height, a.block_id) == a.block_id
                assert VALS.has_quorum(sum(VALS[s.validator].power for s in a.certificate.sigs))
                assert all(v.block_id == a.block_id for v in a.certificate.votes())
            elif isinstance(a, Rejected):
                assert a.reason
        out = []


@pytest.mark.parametrize("batch", range(4))
def test_random_inputs_never_crash_or_double_sign(batch: int) -> None:
    stats: Counter = Counter()
    for seed in range(batch * 50, batch * 50 + 50):
        walk(seed, 150, stats)
    # the walks reach the interesting places, not just rejections
    assert stats["Commit"] > 5 and stats["BroadcastVote"] > 100
    assert stats["EmitEvidence"] > 0 and stats["BroadcastProposal"] > 0
