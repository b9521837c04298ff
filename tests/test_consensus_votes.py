"""Vote bookkeeping: tallies by power, thresholds, duplicates and equivocation evidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Vote, VoteType
from consensus.votes import MAX_VALUES_PER_STEP, HeightVotes

CHAIN = "votes-test"
KEYS = [PrivateKey(sha256(b"v-%d" % i)) for i in range(5)]
VALUES = [None, sha256(b"A"), sha256(b"B"), sha256(b"C")]


def vset(powers: list[int]) -> ValidatorSet:
    return ValidatorSet(Validator(KEYS[i].public_key.raw, p) for i, p in enumerate(powers))


def test_thresholds_by_power() -> None:
    hv = HeightVotes(1, vset([4, 1, 1, 1]))  # total 7: quorum > 14/3 → 5, f+1 > 7/3 → 3
    assert hv.add(Vote(VoteType.PREVOTE, 1, 0, VALUES[1], 1, 1)).added
    assert hv.add(Vote(VoteType.PREVOTE, 1, 0, VALUES[1], 1, 2)).added
    rv = hv.prevotes(0)
    assert not rv.any_quorum and 0 not in hv.one_third_rounds
    res = hv.add(Vote(VoteType.PREVOTE, 1, 0, None, 1, 0))
    assert res.round_reached_one_third and 0 in hv.one_third_rounds
    assert rv.any_quorum and not rv.has_quorum_for(VALUES[1]) and not rv.has_quorum_for(None)
    assert rv.total_power == 6 and rv.power_by_value == {VALUES[1]: 2, None: 4}
    hv.add(Vote(VoteType.PREVOTE, 1, 0, VALUES[1], 1, 3))
    assert not rv.has_quorum_for(VALUES[1])  # 3 of 7
    hv2 = HeightVotes(1, vset([4, 1, 1, 1]))
    hv2.add(Vote(VoteType.PRECOMMIT, 1, 2, VALUES[2], 1, 0))
    hv2.add(Vote(VoteType.PRECOMMIT, 1, 2, VALUES[2], 1, 3))
    assert hv2.precommits(2).has_quorum_for(VALUES[2])
    assert hv2.precommit_quorums == [(2, VALUES[2])]


def test_duplicates_and_one_evidence_per_step_with_equivocations_counted() -> None:
    hv = HeightVotes(3, vset([1, 1, 1, 1]))
    a = Vote(VoteType.PRECOMMIT, 3, 1, VALUES[1], 10, 2).signed(KEYS[2], CHAIN)
    b = Vote(VoteType.PRECOMMIT, 3, 1, None, 11, 2).signed(KEYS[2], CHAIN)
    c = Vote(VoteType.PRECOMMIT, 3, 1, VALUES[2], 12, 2).signed(KEYS[2], CHAIN)
    assert hv.add(a).added
    again = hv.add(Vote(VoteType.PRECOMMIT, 3, 1, VALUES[1], 99, 2))
    assert again.duplicate and not again.added
    res = hv.add(b)
    assert res.added and res.evidence is not None
    assert res.evidence.verify(CHAIN, vset([1, 1, 1, 1])) == (True, "ok")
    assert {res.evidence.vote_a, res.evidence.vote_b} == {a, b}
    later = hv.add(c)
    assert later.added and later.evidence is None  # one evidence per validator and step
    rv = hv.precommits(1)
    # each value counts the equivocator; "any" counts it once
    assert rv.power_by_value == {VALUES[1]: 1, None: 1, VALUES[2]: 1}
    assert rv.total_power == 1 and rv.get(2) == a
    assert hv.add(Vote(VoteType.PRECOMMIT, 3, 1, VALUES[3], 12, 2)).added
    capped = hv.add(Vote(VoteType.PRECOMMIT, 3, 1, sha256(b"E"), 12, 2))
    assert not capped.added and not capped.duplicate and capped.evidence is None
    assert MAX_VALUES_PER_STEP == 4
    # the same validator may vote in another round or type
    assert hv.add(Vote(VoteType.PREVOTE, 3, 1, VALUES[2], 12, 2)).added
    assert hv.rounds_of(2) == {1}


def test_an_equivocators_other_vote_completes_a_quorum() -> None:
    # validator 3 precommits nil to us first, then B: the B precommit still counts, so we
    # can decide on the certificate the other nodes decided on
    hv = HeightVotes(1, vset([1, 1, 1, 1]))
    hv.add(Vote(VoteType.PRECOMMIT, 1, 0, None, 1, 3))
    hv.add(Vote(VoteType.PRECOMMIT, 1, 0, VALUES[2], 1, 0))
    hv.add(Vote(VoteType.PRECOMMIT, 1, 0, VALUES[2], 1, 1))
    assert not hv.precommits(0).has_quorum_for(VALUES[2])
    assert hv.add(Vote(VoteType.PRECOMMIT, 1, 0, VALUES[2], 1, 3)).evidence is not None
    assert hv.precommits(0).has_quorum_for(VALUES[2])
    assert hv.precommit_quorums == [(0, VALUES[2])]
    assert {v.validator for v in hv.precommits(0).votes_for(VALUES[2])} == {0, 1, 3}


def test_caller_bugs_raise() -> None:
    hv = HeightVotes(3, vset([1, 1]))
    with pytest.raises(ValueError):
        hv.add(Vote(VoteType.PREVOTE, 4, 0, None, 1, 0))
    with pytest.raises(ValueError):
        hv.add(Vote(VoteType.PREVOTE, 3, 0, None, 1, 2))


@settings(max_examples=150, deadline=None)
@given(powers=st.lists(st.integers(1, 20), min_size=1, max_size=5),
       votes=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.sampled_from(
           [VoteType.PREVOTE, VoteType.PRECOMMIT]), st.integers(0, 3)), max_size=60))
def test_tallies_match_a_recount(powers: list[int], votes: list) -> None:
    vs = vset(powers)
    hv = HeightVotes(1, vs)
    counted: dict[tuple, list] = {}  # (validator, round, type) -> values counted, in order
    for v, r, t, val in votes:
        if v >= len(powers):
            continue
        hv.add(Vote(t, 1, r, VALUES[val], 1, v))
        seen = counted.setdefault((v, r, t), [])
        if VALUES[val] not in seen and len(seen) < MAX_VALUES_PER_STEP:
            seen.append(VALUES[val])
    total = sum(powers)
    for (r, t), rv in hv._rounds.items():
        mine = {v: vals for (v, rr, tt), vals in counted.items() if (rr, tt) == (r, t)}
        assert {v: x.block_id for v, x in rv.votes.items()} == {v: x[0] for v, x in mine.items()}
        for value in VALUES:
            power = sum(powers[v] for v, vals in mine.items() if value in vals)
            assert rv.power_by_value.get(value, 0) == power
            assert rv.has_quorum_for(value) == (3 * power > 2 * total)
        assert rv.any_quorum == (3 * sum(powers[v] for v in mine) > 2 * total)
    for r in range(4):
        senders = {v for (v, rr, _t) in counted if rr == r}
        assert (r in hv.one_third_rounds) == (3 * sum(powers[v] for v in senders) > total)
