"""Proposer selection: a smooth weighted round-robin, a pure function of (set, height, round).

The schedule is a cycle of slots computed once per validator set:

1. weights: each validator's power divided by the gcd of all powers. If the weights sum to
   more than ``MAX_CYCLE`` they are scaled to ``max(1, power * MAX_CYCLE // total)``, so
   the shares are exact up to a resolution of 1/``MAX_CYCLE`` of the total power.
2. smooth weighted round-robin (the nginx / CometBFT "proposer priority" rule without
   carried-over state): every validator starts with priority 0; each slot, every
   priority grows by its weight, the validator with the highest priority (ties: lowest
   index) takes the slot and its priority drops by the sum of the weights. After
   ``sum(weights)`` slots all priorities are 0 again, so this is the whole cycle, in which
   each validator holds exactly ``weight`` slots, spread out rather than bunched.
3. ``proposer(h, r) = cycle[(h + r) mod len(cycle)]``.

So the proposer of round r+1 is the next slot after round r's: a crashed proposer costs
one round, not a run of rounds, and successive heights rotate through the set. With equal
powers this is plain round-robin: ``proposer(h, r) = (h + r) mod n``.
"""

from __future__ import annotations

from functools import reduce
from math import gcd

from chain.validators import ValidatorSet

MAX_CYCLE = 4096

_cache: dict[tuple[int, ...], tuple[int, ...]] = {}


def weights(powers: tuple[int, ...]) -> tuple[int, ...]:
    """The slot counts of each validator in one cycle (step 1 above)."""
    g = reduce(gcd, powers)
    w = tuple(p // g for p in powers)
    total = sum(w)
    if total > MAX_CYCLE:
        w = tuple(max(1, p * MAX_CYCLE // total) for p in w)
    return w


def schedule(powers: tuple[int, ...]) -> tuple[int, ...]:
    """The cycle of proposer indices for validators with these powers (step 2 above)."""
    cached = _cache.get(powers)
    if cached is not None:
        return cached
    w = weights(powers)
    total = sum(w)
    n = len(w)
    priority = [0] * n
    cycle = []
    for _ in range(total):
        best = 0
        for i in range(n):
            priority[i] += w[i]
            if priority[i] > priority[best]:
                best = i
        priority[best] -= total
        cycle.append(best)
    result = tuple(cycle)
    if len(_cache) > 64:  # a node sees one set; tests and the simulator a handful
        _cache.clear()
    _cache[powers] = result
    return result


def proposer(validators: ValidatorSet, height: int, round: int) -> int:
    """Index of the validator that proposes at (height, round)."""
    cycle = schedule(tuple(v.power for v in validators.validators))
    return cycle[(height + round) % len(cycle)]


class ProposerSchedule:
    """``proposer`` with the cycle looked up once, for the hot path of one height."""

    __slots__ = ("_cycle",)

    def __init__(self, validators: ValidatorSet) -> None:
        self._cycle = schedule(tuple(v.power for v in validators.validators))

    def __call__(self, height: int, round: int) -> int:
        return self._cycle[(height + round) % len(self._cycle)]
