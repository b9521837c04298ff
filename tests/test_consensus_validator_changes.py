"""The state machine under a changing validator set: each height is judged against its own
set, removed validators and rotated-away keys count nothing, the proposer schedule follows
the set, ``use_signer`` switches keys only between heights, and conflicting proposals
become evidence."""

from __future__ import annotations

import pytest

from chain.crypto import PrivateKey
from chain.evidence import DuplicateProposalEvidence, DuplicateVoteEvidence
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote, VoteType
from consensus.certificate import verify
from consensus.events import (
    BlockValidated,
    BroadcastVote,
    Commit,
    EmitEvidence,
    ProposalReceived,
    Rejected,
    RejectKind,
    VoteReceived,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.proposer import proposer
from consensus.signer import MemorySignerBackend, Signer

CHAIN = "changes-test"
K = [PrivateKey(sha256(b"vc-%d" % i)) for i in range(6)]
A, B, C = sha256(b"A"), sha256(b"B"), sha256(b"C")


def vs(*members: int, powers: tuple[int, ...] | None = None) -> ValidatorSet:
    powers = powers or (1,) * len(members)
    return ValidatorSet(Validator(K[m].public_key.raw, p) for m, p in zip(
        members, powers, strict=True))


S1 = vs(0, 1, 2, 3)
REMOVED = vs(0, 2, 3)  # member 1 removed: member 2 moves to index 1, member 3 to index 2
ROTATED = vs(0, 4, 2, 3)  # member 1's key rotated from K[1] to K[4], same index
ADDED = vs(0, 1, 2, 3, 5)  # member 5 added at index 4


def signer(m: int) -> Signer:
    return Signer(K[m], MemorySignerBackend())


def machine(me: int | None, height: int, vset: ValidatorSet,
            nxt: ValidatorSet | None = None) -> ConsensusMachine:
    m = ConsensusMachine(CHAIN, None if me is None else signer(me),
                         TimeoutConfig(1000, 500, 500, 250))
    m.start_height(height, vset, 1000, next_validators=nxt)
    return m


def vote(t: VoteType, key: int, index: int, block: bytes | None, h: int, r: int = 0) -> Vote:
    """A vote signed by member ``key``'s key, claiming validator index ``index``."""
    return Vote(t, h, r, block, 2000, index).signed(K[key], CHAIN)


def kinds(actions: list) -> list:
    return [a.kind if isinstance(a, Rejected) else type(a).__name__ for a in actions]


def decide(m: ConsensusMachine, h: int, voters: list[tuple[int, int]], block: bytes = A
           ) -> list:
    """Feed the verdict and precommits (member, index) for ``block``; return all actions."""
    out = m.handle(BlockValidated(h, block, True, 0), 1100)
    for key, index in voters:
        out += m.handle(VoteReceived(vote(VoteType.PRECOMMIT, key, index, block, h)), 1200)
    return out


# ----------------------------------------------------------------- removed validators


def test_a_removed_validators_votes_no_longer_count() -> None:
    m = machine(None, 2, REMOVED)
    # member 1 still signs as index 1 (now member 2's index): refused, not counted
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, 1, A, 2)), 1100)
    assert kinds(out) == [RejectKind.BAD_SIGNATURE]
    # ... or as an index past the end of the new set
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, 3, A, 2)), 1100)
    assert kinds(out) == [RejectKind.UNKNOWN_VALIDATOR]
    assert m.votes.prevotes(0) is None
    # three of the old set's four precommits, one of them by the removed member: no
    # commit, since only two of the new set's three validators signed
    out = decide(m, 2, [(0, 0), (2, 1), (1, 2)])
    assert "Commit" not in kinds(out) and m.decision is None
    assert m.votes.precommits(0).votes_for(A) == [
        vote(VoteType.PRECOMMIT, 0, 0, A, 2), vote(VoteType.PRECOMMIT, 2, 1, A, 2)]
    # the third member of the new set completes the quorum; the certificate is the new set's
    out = m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 3, 2, A, 2)), 1300)
    commit = next(a for a in out if isinstance(a, Commit))
    assert sorted(s.validator for s in commit.certificate.sigs) == [0, 1, 2]
    assert verify(commit.certificate, A, REMOVED, CHAIN, 2) == (True, "ok")
    assert not verify(commit.certificate, A, S1, CHAIN, 2)[0]


def test_without_signature_checks_a_removed_index_is_still_unknown() -> None:
    m = ConsensusMachine(CHAIN, None, verify_signatures=False)
    m.start_height(2, REMOVED, 0)
    assert kinds(m.handle(VoteReceived(Vote(VoteType.PREVOTE, 2, 0, A, 5, 3)), 10)) == [
        RejectKind.UNKNOWN_VALIDATOR]


# ----------------------------------------------------------------- key rotation


def test_rotated_keys_old_votes_are_refused_and_the_new_keys_count() -> None:
    before = machine(None, 4, S1)  # the height before the switch: the old key is valid
    assert before.handle(VoteReceived(vote(VoteType.PREVOTE, 1, 1, A, 4)), 1100) == []
    m = machine(None, 5, ROTATED)  # the switch height
    for h_vote in (vote(VoteType.PREVOTE, 1, 1, A, 5), vote(VoteType.PRECOMMIT, 1, 1, A, 5)):
        assert kinds(m.handle(VoteReceived(h_vote), 1100)) == [RejectKind.BAD_SIGNATURE]
    assert m.votes.prevotes(0) is None and m.votes.precommits(0) is None
    new = vote(VoteType.PREVOTE, 4, 1, A, 5)
    assert m.handle(VoteReceived(new), 1100) == []
    assert m.votes.prevotes(0).get(1) == new
    # an old-key proposal for the switch height is refused too
    p = proposer(ROTATED, 5, 0)
    old_p = Proposal(5, 0, -1, A, 2000, p).signed(K[[0, 1, 2, 3][p]], CHAIN)
    new_p = Proposal(5, 0, -1, A, 2000, p).signed(K[[0, 4, 2, 3][p]], CHAIN)
    if p == 1:
        assert kinds(m.handle(ProposalReceived(old_p), 1100)) == [RejectKind.BAD_SIGNATURE]
    assert kinds(m.handle(ProposalReceived(new_p), 1100)) == []


def test_use_signer_switches_keys_between_heights_only() -> None:
    m = machine(1, 1, S1)
    with pytest.raises(ValueError, match="middle of height 1"):
        m.use_signer(signer(4))
    with pytest.raises(ValueError, match="middle of height 1"):
        m.use_signer(signer(4), committed=0)
    with pytest.raises(ValueError):
        m.use_signer("not a signer")  # type: ignore[arg-type]
    assert m.signer.public_key == K[1].public_key.raw
    out = decide(m, 1, [(0, 0), (2, 2), (3, 3)])
    assert any(isinstance(a, Commit) for a in out)
    m.use_signer(signer(4))  # height 1 is decided
    out = m.start_height(2, ROTATED, 3000)
    assert m.validator_index == 1
    # its messages of height 2 are the new key's: they verify against the set of 2
    m.handle(BlockValidated(2, B, True, 0), 3100)
    out += m.handle(ProposalReceived(
        Proposal(2, 0, -1, B, 2000, proposer(ROTATED, 2, 0)).signed(
            K[[0, 4, 2, 3][proposer(ROTATED, 2, 0)]], CHAIN), True, 0), 3100)
    sent = [a.vote for a in out if isinstance(a, BroadcastVote)]
    assert sent and all(v.height == 2 and v.validator == 1 for v in sent)
    assert all(v.verify(CHAIN, ROTATED) and not v.verify(CHAIN, S1) for v in sent)


def test_use_signer_after_a_height_committed_by_block_sync() -> None:
    m = machine(1, 1, S1)  # undecided: the node committed height 1 from a peer instead
    m.use_signer(signer(4), committed=1)
    m.start_height(2, ROTATED, 3000)
    assert m.validator_index == 1 and m.signer.public_key == K[4].public_key.raw
    # becoming an observer (removed at the next height)
    decide(m, 2, [(0, 0), (2, 2), (3, 3)])
    m.use_signer(None)
    m.start_height(3, REMOVED, 5000)
    assert m.validator_index is None


def test_a_fresh_machine_takes_a_signer_before_its_first_height() -> None:
    m = ConsensusMachine(CHAIN, signer(1))
    m.use_signer(signer(4))
    m.start_height(1, ROTATED, 0)
    assert m.validator_index == 1


# ----------------------------------------------------------------- proposer schedule


def test_proposer_schedule_follows_the_set_of_each_height() -> None:
    heavy = vs(0, 2, 3, powers=(1, 3, 1))
    for h, vset in ((7, S1), (8, heavy), (9, REMOVED)):
        m = machine(None, h, vset)
        for r in range(6):
            assert m.proposer(h, r) == proposer(vset, h, r)
    m = machine(None, 8, heavy)
    shares = [m.proposer(8, r) for r in range(5)]
    assert shares.count(1) == 3  # member 2 (index 1) holds 3/5 of the power and slots
    # the old schedule's proposer of (8, 0) is refused when the new one differs
    old, new = proposer(S1, 8, 0), proposer(heavy, 8, 0)
    assert old != new
    p_old = Proposal(8, 0, -1, A, 2000, old).signed(K[[0, 2, 3][old]], CHAIN)
    assert kinds(m.handle(ProposalReceived(p_old), 1100)) == [RejectKind.NOT_PROPOSER]
    p_new = Proposal(8, 0, -1, A, 2000, new).signed(K[[0, 2, 3][new]], CHAIN)
    assert m.handle(ProposalReceived(p_new), 1100) == []


# ----------------------------------------------------------------- next and previous heights


def test_next_height_messages_are_checked_against_the_next_set() -> None:
    m = machine(None, 1, S1, nxt=ADDED)
    added = vote(VoteType.PREVOTE, 5, 4, A, 2)  # index 4 exists only in the next set
    assert m.handle(VoteReceived(added), 1100) == []
    blind = machine(None, 1, S1)  # without the next set it cannot tell
    assert kinds(blind.handle(VoteReceived(added), 1100)) == [RejectKind.UNKNOWN_VALIDATOR]
    rot = machine(None, 1, S1, nxt=ROTATED)
    assert kinds(rot.handle(VoteReceived(vote(VoteType.PREVOTE, 1, 1, A, 2)), 1100)) == [
        RejectKind.BAD_SIGNATURE]
    new = vote(VoteType.PREVOTE, 4, 1, A, 2)
    assert rot.handle(VoteReceived(new), 1100) == []
    decide(rot, 1, [(0, 0), (2, 2), (3, 3)])
    rot.start_height(2, ROTATED, 3000)  # an equal set object works too
    assert rot.votes.prevotes(0).get(1) == new
    decide(m, 1, [(0, 0), (2, 2), (3, 3)])
    m.start_height(2, ADDED, 3000)
    assert m.votes.prevotes(0).get(4) == added


def test_buffered_messages_are_checked_again_when_the_set_changed() -> None:
    m = machine(None, 1, S1)  # the driver did not say the set of 2
    kept = vote(VoteType.PREVOTE, 0, 0, A, 2)
    shifted = vote(VoteType.PREVOTE, 2, 2, A, 2)  # member 2 is index 1 at height 2
    assert m.handle(VoteReceived(kept), 1100) == []
    assert m.handle(VoteReceived(shifted), 1100) == []
    decide(m, 1, [(0, 0), (1, 1), (2, 2)])
    out = m.start_height(2, REMOVED, 3000)
    assert kinds(out).count(RejectKind.BAD_SIGNATURE) == 1
    assert m.votes.prevotes(0).get(0) == kept and m.votes.prevotes(0).get(2) is None


def test_late_equivocation_is_judged_against_the_set_of_its_height() -> None:
    m = machine(None, 1, S1)
    first = vote(VoteType.PRECOMMIT, 1, 1, B, 1)
    assert m.handle(VoteReceived(first), 1050) == []
    decide(m, 1, [(0, 0), (2, 2), (3, 3)])
    m.start_height(2, REMOVED, 3000)  # member 1 is gone at height 2
    out = m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 1, 1, C, 1)), 3100)
    ev = next(a.evidence for a in out if isinstance(a, EmitEvidence))
    assert isinstance(ev, DuplicateVoteEvidence) and (ev.height, ev.validator) == (1, 1)
    assert ev.verify(CHAIN, S1) == (True, "ok")
    assert not ev.verify(CHAIN, REMOVED)[0]


# ----------------------------------------------------------------- conflicting proposals


def _prop(h: int, r: int, block: bytes, pol: int = -1, ts: int = 2000) -> Proposal:
    p = proposer(S1, h, r)
    return Proposal(h, r, pol, block, ts, p).signed(K[p], CHAIN)


def test_conflicting_proposals_become_evidence_once_per_round() -> None:
    m = machine(None, 1, S1)
    assert m.handle(ProposalReceived(_prop(1, 0, A)), 1100) == []
    out = m.handle(ProposalReceived(_prop(1, 0, B)), 1100)
    assert kinds(out) == ["EmitEvidence", RejectKind.CONFLICTING_PROPOSAL]
    ev = out[0].evidence
    assert isinstance(ev, DuplicateProposalEvidence)
    assert (ev.height, ev.validator) == (1, proposer(S1, 1, 0))
    assert ev.verify(CHAIN, S1) == (True, "ok")
    assert ev == DuplicateProposalEvidence.create(_prop(1, 0, B), _prop(1, 0, A))
    assert m.proposal(0) == _prop(1, 0, A)  # the first proposal stays
    # a third value in the round: refused, no second evidence
    assert kinds(m.handle(ProposalReceived(_prop(1, 0, C)), 1100)) == [
        RejectKind.CONFLICTING_PROPOSAL]
    # only the timestamp differs: refused, but nothing was equivocated
    assert kinds(m.handle(ProposalReceived(_prop(1, 0, A, ts=2001)), 1100)) == [
        RejectKind.CONFLICTING_PROPOSAL]


def test_same_block_with_another_pol_round_is_evidence_even_after_the_decision() -> None:
    m = machine(None, 1, S1)
    m.handle(ProposalReceived(_prop(1, 1, A, pol=-1)), 1100)
    decide(m, 1, [(0, 0), (1, 1), (2, 2)])
    assert m.decision is not None
    out = m.handle(ProposalReceived(_prop(1, 1, A, pol=0)), 1300)
    assert kinds(out) == ["EmitEvidence", RejectKind.CONFLICTING_PROPOSAL]
    assert out[0].evidence.check_shape() == (True, "ok")


def test_conflicting_next_height_proposals_become_evidence_when_the_height_starts() -> None:
    m = machine(None, 1, S1)
    assert m.handle(ProposalReceived(_prop(2, 0, A)), 1100) == []
    assert m.handle(ProposalReceived(_prop(2, 0, B)), 1100) == []
    decide(m, 1, [(0, 0), (1, 1), (2, 2)])
    out = m.start_height(2, S1, 3000)
    evs = [a.evidence for a in out if isinstance(a, EmitEvidence)]
    assert len(evs) == 1 and evs[0].verify(CHAIN, S1) == (True, "ok")
