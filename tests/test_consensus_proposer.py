"""Proposer selection: smooth weighted round-robin, deterministic from (set, height, round)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from consensus.proposer import MAX_CYCLE, ProposerSchedule, proposer, schedule, weights


def vset(powers: list[int]) -> ValidatorSet:
    return ValidatorSet(
        Validator(PrivateKey(sha256(b"p-%d" % i)).public_key.raw, p) for i, p in enumerate(powers))


def test_equal_powers_are_plain_round_robin() -> None:
    vs = vset([7, 7, 7, 7])
    assert [proposer(vs, h, r) for h, r in [(1, 0), (1, 1), (2, 0), (4, 0), (4, 3)]] == [
        1, 2, 2, 0, 3]


def test_weighted_cycle_is_spread_and_exact() -> None:
    cycle = schedule((3, 1, 1))
    assert len(cycle) == 5 and Counter(cycle) == {0: 3, 1: 1, 2: 1}
    assert cycle == (0, 1, 0, 2, 0)  # the heavy validator is spread out, not bunched
    vs = vset([3, 1, 1])
    sched = ProposerSchedule(vs)
    assert all(sched(h, r) == proposer(vs, h, r) for h in range(1, 9) for r in range(6))


def test_large_powers_are_scaled_to_a_bounded_cycle() -> None:
    w = weights((10**12, 10**12 // 3, 1))
    assert sum(w) <= MAX_CYCLE + 3 and w[2] == 1 and w[0] > 2.9 * w[1]
    assert len(schedule((10**12, 10**12 // 3, 1))) == sum(w)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=12))
def test_every_validator_gets_its_share_spread_over_the_cycle(powers: list[int]) -> None:
    cycle = schedule(tuple(powers))
    w = weights(tuple(powers))
    assert Counter(cycle) == {i: x for i, x in enumerate(w)}
    # smoothness: in any window of the cycle a validator's count is within 2 of its share
    # (bunching would make a crashed heavy validator cost many rounds in a row)
    n = len(cycle)
    for i, wi in enumerate(w):
        for length in (1, max(1, n // 3), n // 2 or 1):
            for start in range(0, n, max(1, n // 7)):
                window = [cycle[(start + k) % n] for k in range(length)]
                assert abs(window.count(i) - wi * length / n) < 2
