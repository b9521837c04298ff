"""Byzantine behaviour: messages signed directly with a validator's key, past the safe signer.

A Byzantine validator in the simulator runs the honest state machine (so it takes part in
rounds and times its messages like everyone else) and the cluster passes each message the
machine wants to broadcast through ``Adversary.outgoing``, which decides what really goes
out and to whom:

* ``equivocate``: its own proposal goes to one half of the peers and a second proposal for
  a different (valid) block, same height/round/pol_round, to the other half;
* ``double_vote``: every prevote/precommit goes to one half, and a conflicting vote (nil
  instead of a block, or another block instead of nil) to the other half;
* ``invalid``: builds blocks that fail validation (handled where blocks are built);
* ``silent``, ``twins``, ``amnesia`` need nothing here (the cluster never starts a silent
  validator, runs two honest copies of a twin, and wipes an amnesiac's signer on restart).

The halves are drawn afresh for every message from the scenario's seeded PRNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from chain.crypto import PrivateKey
from chain.vote import Proposal, Vote

FAKE_SIG = b"\x00" * 64

# (message, destination endpoints) pairs the cluster sends
Sends = list[tuple[Vote | Proposal, list[int]]]


def sign_vote(vote: Vote, key: PrivateKey, chain_id: str, signatures: bool) -> Vote:
    """``vote`` signed with the raw key (no double-sign protection, on purpose)."""
    if signatures:
        return vote.signed(key, chain_id)
    return Vote(vote.type, vote.height, vote.round, vote.block_id, vote.timestamp,
                vote.validator, FAKE_SIG)


def sign_proposal(p: Proposal, key: PrivateKey, chain_id: str, signatures: bool) -> Proposal:
    if signatures:
        return p.signed(key, chain_id)
    return Proposal(p.height, p.round, p.pol_round, p.block_id, p.timestamp, p.validator,
                    FAKE_SIG)


class Adversary:
    """Rewrites one Byzantine validator's outgoing messages according to its kind."""

    def __init__(self, kind: str, key: PrivateKey, chain_id: str, signatures: bool,
                 rng: random.Random, new_block: Callable[[int, int, bool], bytes]) -> None:
        """``new_block(height, round, valid)`` registers a fresh block and returns its id."""
        self.kind = kind
        self.key = key
        self.chain_id = chain_id
        self.signatures = signatures
        self.rng = rng
        self.new_block = new_block

    def _halves(self, peers: list[int]) -> tuple[list[int], list[int]]:
        """Two random halves of ``peers``; half the time one peer is in both (a witness
        that receives both messages and must turn them into evidence)."""
        shuffled = list(peers)
        self.rng.shuffle(shuffled)
        cut = max(1, len(shuffled) // 2) if len(shuffled) > 1 else len(shuffled)
        a, b = shuffled[:cut], shuffled[cut:]
        if a and self.rng.random() < 0.5:
            b.append(a[0])
        return a, b

    def outgoing(self, msg: Vote | Proposal, peers: list[int]) -> Sends:
        if self.kind == "equivocate" and isinstance(msg, Proposal):
            a, b = self._halves(peers)
            other = self.new_block(msg.height, msg.round, True)
            twin = Proposal(msg.height, msg.round, msg.pol_round, other, msg.timestamp,
                            msg.validator)
            return [(msg, a), (sign_proposal(twin, self.key, self.chain_id, self.signatures), b)]
        if self.kind == "double_vote" and isinstance(msg, Vote):
            a, b = self._halves(peers)
            alt_id = (self.new_block(msg.height, msg.round, True) if msg.block_id is None
                      else None)
            alt = Vote(msg.type, msg.height, msg.round, alt_id, msg.timestamp, msg.validator)
            return [(msg, a), (sign_vote(alt, self.key, self.chain_id, self.signatures), b)]
        return [(msg, peers)]
