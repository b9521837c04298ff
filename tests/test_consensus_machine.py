"""State machine unit tests beyond the golden scripts: rejections, buffers, weights, restarts."""

from __future__ import annotations

import pytest

from chain.crypto import PrivateKey
from chain.evidence import DuplicateVoteEvidence
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import MessageError, Proposal, Vote, VoteType
from consensus.certificate import verify
from consensus.events import (
    MISBEHAVIOUR,
    BlockValidated,
    BroadcastVote,
    Commit,
    EmitEvidence,
    ProposalReceived,
    Rejected,
    RejectKind,
    ScheduleTimeout,
    SignerRefused,
    Step,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from consensus.machine import (
    MAX_BUFFERED_PER_VALIDATOR,
    MAX_FUTURE_PROPOSAL_ROUNDS,
    MAX_FUTURE_ROUNDS_PER_VALIDATOR,
    ConsensusMachine,
    RoundState,
    TimeoutConfig,
)
from consensus.signer import MemorySignerBackend, Signer

CHAIN = "machine-test"
KEYS = [PrivateKey(sha256(b"m-%d" % i)) for i in range(4)]
A, B = sha256(b"A"), sha256(b"B")


def vset(powers: list[int] | None = None) -> ValidatorSet:
    powers = powers or [1] * len(KEYS)
    return ValidatorSet(Validator(k.public_key.raw, p) for k, p in zip(KEYS, powers, strict=True))


def machine(me: int | None = 0, powers: list[int] | None = None, verify_sigs: bool = True,
            backend: MemorySignerBackend | None = None) -> ConsensusMachine:
    signer = None if me is None else Signer(KEYS[me], backend or MemorySignerBackend())
    m = ConsensusMachine(CHAIN, signer, TimeoutConfig(1000, 500, 500, 250),
                         verify_signatures=verify_sigs)
    m.start_height(1, vset(powers), 1000)
    return m


def vote(t: VoteType, v: int, block: bytes | None, h: int = 1, r: int = 0) -> Vote:
    return Vote(t, h, r, block, 2000, v).signed(KEYS[v], CHAIN)


def proposal(h: int = 1, r: int = 0, block: bytes = A, pol: int = -1, sender: int | None = None
             ) -> Proposal:
    sender = (h + r) % 4 if sender is None else sender
    return Proposal(h, r, pol, block, 2000, sender).signed(KEYS[sender], CHAIN)


def snapshot(m: ConsensusMachine) -> tuple:
    votes = m.votes
    tallies = tuple(sorted(
        (k, rv.total_power, tuple(sorted(rv.votes))) for k, rv in votes._rounds.items()))
    return (m.round_state(), dict(m._proposals), dict(m._verdicts), tallies,
            tuple(m._buffer), m.decision)


def kinds(actions: list) -> list:
    return [a.kind if isinstance(a, Rejected) else type(a).__name__ for a in actions]


def test_handle_before_start_is_rejected() -> None:
    m = ConsensusMachine(CHAIN, None)
    assert kinds(m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), 0)) == [
        RejectKind.UNEXPECTED]


def test_bad_inputs_change_nothing() -> None:
    m = machine()
    m.handle(ProposalReceived(proposal()), 1500)  # stored, waiting for a verdict
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, B)), 1500)
    before = snapshot(m)
    forged = Vote(VoteType.PREVOTE, 1, 0, A, 5, 1, KEYS[2].sign_raw(b"x"))
    wrong_chain = Vote(VoteType.PREVOTE, 1, 0, A, 5, 1).signed(KEYS[1], "other-chain")
    bad_cases = [
        (VoteReceived(forged), RejectKind.BAD_SIGNATURE),
        (VoteReceived(wrong_chain), RejectKind.BAD_SIGNATURE),
        (VoteReceived(Vote(VoteType.PREVOTE, 1, 0, A, 5, 7).signed(KEYS[1], CHAIN)),
         RejectKind.UNKNOWN_VALIDATOR),
        (VoteReceived("not a vote"), RejectKind.MALFORMED),
        (VoteReceived(vote(VoteType.PREVOTE, 2, B)), RejectKind.DUPLICATE),
        (ProposalReceived(proposal(sender=3)), RejectKind.NOT_PROPOSER),
        # same block and POL round, another timestamp: refused, but no value equivocated
        (ProposalReceived(Proposal(1, 0, -1, A, 2001, 1).signed(KEYS[1], CHAIN)),
         RejectKind.CONFLICTING_PROPOSAL),
        (ProposalReceived(Proposal(1, 0, -1, B, 5, 1, KEYS[1].sign_raw(b"y"))),
         RejectKind.BAD_SIGNATURE),
        (ProposalReceived(proposal(), valid="yes"), RejectKind.MALFORMED),
        (ProposalReceived(proposal(h=7)), RejectKind.WRONG_HEIGHT),
        (ProposalReceived(proposal(r=MAX_FUTURE_PROPOSAL_ROUNDS + 3)), RejectKind.BUFFER_FULL),
        (BlockValidated(1, b"short", True), RejectKind.MALFORMED),
        (BlockValidated(1, A, True, -5), RejectKind.MALFORMED),
        (TimeoutFired(1, 0, 9), RejectKind.MALFORMED),
        (TimeoutFired(1, 3, Step.PROPOSE), RejectKind.STALE),
        (TimeoutFired(2, 0, Step.PROPOSE), RejectKind.STALE),
        (ValueReady(1, 0, A), RejectKind.STALE),  # not the proposer, nothing requested
        (object(), RejectKind.MALFORMED),
    ]
    for event, kind in bad_cases:
        out = m.handle(event, 1600)
        assert kinds(out) == [kind], (event, out)
        assert snapshot(m) == before, event
    assert kinds(m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), -1)) == [
        RejectKind.MALFORMED]
    assert snapshot(m) == before
    assert RejectKind.BAD_SIGNATURE in MISBEHAVIOUR and RejectKind.STALE not in MISBEHAVIOUR


def test_start_height_rejects_bad_arguments() -> None:
    m = ConsensusMachine(CHAIN, None)
    with pytest.raises(ValueError):
        m.start_height(-1, vset(), 0)
    with pytest.raises(ValueError):
        m.start_height(1, [1, 2], 0)


def test_signature_checks_can_be_switched_off() -> None:
    m = machine(verify_sigs=False)
    unsigned = Vote(VoteType.PREVOTE, 1, 0, A, 5, 1)
    assert m.handle(VoteReceived(unsigned), 1500) == []
    assert m.votes.prevotes(0).get(1) == unsigned
    strict = machine()
    assert kinds(strict.handle(VoteReceived(unsigned), 1500)) == [RejectKind.BAD_SIGNATURE]


def test_next_height_messages_are_buffered_and_replayed() -> None:
    m = machine()
    m.handle(ProposalReceived(proposal(), True, 10), 1100)
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), 1100)
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, A)), 1100)
    m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 1, A)), 1100)
    out = m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 2, A)), 1100)
    assert isinstance(out[-1], Commit)
    # height 2 arrives early: proposal (proposer (2+0)%4 = 2), then two prevotes
    early = [ProposalReceived(proposal(h=2, block=B), True, 20),
             VoteReceived(vote(VoteType.PREVOTE, 2, B, h=2)),
             VoteReceived(vote(VoteType.PREVOTE, 3, B, h=2))]
    for ev in early:
        assert m.handle(ev, 1200) == []
    out = m.start_height(2, vset(), 1300)
    votes = [a.vote for a in out if isinstance(a, BroadcastVote)]
    assert [(v.type, v.block_id) for v in votes] == [(VoteType.PREVOTE, B),
                                                    (VoteType.PRECOMMIT, B)]
    assert m.locked == (0, B)


def test_next_height_buffer_is_bounded_per_validator() -> None:
    m = machine()
    for r in range(MAX_BUFFERED_PER_VALIDATOR):
        assert m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A, h=2, r=r)), 1100) == []
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A, h=2, r=99)), 1100)
    assert kinds(out) == [RejectKind.BUFFER_FULL]
    # another validator still has room; forgeries are refused before they take any
    assert m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, A, h=2)), 1100) == []
    forged = Vote(VoteType.PREVOTE, 2, 1, A, 5, 3, KEYS[2].sign_raw(b"z"))
    assert kinds(m.handle(VoteReceived(forged), 1100)) == [RejectKind.BAD_SIGNATURE]


def test_future_rounds_are_bounded_per_validator() -> None:
    m = machine()
    for r in range(1, MAX_FUTURE_ROUNDS_PER_VALIDATOR + 1):
        assert m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, None, r=r * 10)), 1100) == []
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, None, r=500)), 1100)
    assert kinds(out) == [RejectKind.BUFFER_FULL]
    # a round it already has votes in is fine (its precommit there)
    assert m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 1, None, r=10)), 1100) == []
    assert m.round == 0


def test_weighted_thresholds_round_skip_and_quorum() -> None:
    # total 6: a quorum needs more than 4, "f+1" more than 2
    m = machine(me=1, powers=[3, 1, 1, 1])
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 0, None, r=4)), 1100)
    assert m.round == 4 and any(isinstance(a, ScheduleTimeout) for a in out)
    m2 = machine(me=1, powers=[3, 1, 1, 1])
    m2.handle(VoteReceived(vote(VoteType.PREVOTE, 2, None, r=4)), 1100)
    m2.handle(VoteReceived(vote(VoteType.PREVOTE, 3, None, r=4)), 1100)
    assert m2.round == 0  # power 2 of 6 is not more than a third
    m3 = machine(me=1, powers=[3, 1, 1, 1])
    for v in (0, 2):
        m3.handle(VoteReceived(vote(VoteType.PRECOMMIT, v, A)), 1100)
    out = m3.handle(BlockValidated(1, A, True, 5), 1100)
    assert m3.decision is None  # 4 of 6 is not more than 2/3
    out = m3.handle(VoteReceived(vote(VoteType.PRECOMMIT, 3, A)), 1100)
    commit = out[0]
    assert isinstance(commit, Commit) and m3.decision == (0, A)
    assert [s.validator for s in commit.certificate.sigs] == [0, 2, 3]
    assert verify(commit.certificate, A, vset([3, 1, 1, 1]), CHAIN) == (True, "ok")


def test_certificate_from_commit_verifies_and_rejects_tampering() -> None:
    m = machine()
    m.handle(ProposalReceived(proposal(), True, 10), 1100)
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), 1100)
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, A)), 1100)
    m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 1, A)), 1100)
    (commit,) = m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 2, A)), 1100)
    cert = commit.certificate
    assert verify(cert, A, vset(), CHAIN, height=1) == (True, "ok")
    assert verify(cert, B, vset(), CHAIN)[0] is False
    assert verify(cert, A, vset(), "other-chain")[0] is False
    assert verify(cert, A, vset(), CHAIN, height=2)[0] is False
    assert verify("junk", A, vset(), CHAIN) == (False, "not a commit certificate")
    from dataclasses import replace
    short = replace(cert, sigs=cert.sigs[:2])
    ok, why = verify(short, A, vset(), CHAIN)
    assert not ok and "2/3" in why


def test_evidence_is_verifiable() -> None:
    m = machine()
    m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 3, A)), 1100)
    (ev,) = m.handle(VoteReceived(vote(VoteType.PRECOMMIT, 3, B)), 1100)
    assert isinstance(ev, EmitEvidence)
    assert ev.evidence.verify(CHAIN, vset()) == (True, "ok")
    assert DuplicateVoteEvidence.from_map(ev.evidence.to_map()) == ev.evidence


def test_observer_follows_without_voting() -> None:
    m = machine(me=None)
    assert m.validator_index is None
    out = m.handle(ProposalReceived(proposal(), True, 10), 1100)
    out += m.handle(TimeoutFired(1, 0, Step.PROPOSE), 1100)
    for v in (1, 2, 3):
        out += m.handle(VoteReceived(vote(VoteType.PRECOMMIT, v, A)), 1100)
    assert not any(isinstance(a, BroadcastVote) for a in out)
    assert m.decision == (0, A)


def test_proposer_with_a_lagging_node_cannot_stall_itself() -> None:
    m = machine(me=1)  # proposer of (1, 0)
    out = m.handle(TimeoutFired(1, 0, Step.PROPOSE), 1100)
    assert [a.vote.block_id for a in out if isinstance(a, BroadcastVote)] == [None]
    assert kinds(m.handle(ValueReady(1, 0, A), 1200)) == [RejectKind.STALE]


def test_signer_ahead_of_the_machine_refuses_and_nothing_is_sent() -> None:
    backend = MemorySignerBackend()
    Signer(KEYS[0], backend).sign_vote(Vote(VoteType.PREVOTE, 5, 0, None, 1, 0), CHAIN)
    m = machine(backend=backend)
    out = m.handle(ProposalReceived(proposal(), True, 10), 1100)
    assert [type(a) for a in out] == [SignerRefused]
    assert out[0].step == Step.PREVOTE and m.step == Step.PREVOTE


def test_restart_mid_round_resends_and_keeps_lock() -> None:
    backend = MemorySignerBackend()
    m = machine(backend=backend)
    m.handle(ProposalReceived(proposal(), True, 10), 1100)
    m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), 1100)
    out = m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, A)), 1100)
    sent = out[0].vote
    m2 = ConsensusMachine(CHAIN, Signer(KEYS[0], backend), TimeoutConfig(1000, 500, 500, 250))
    out2 = m2.start_height(1, vset(), 99999)
    assert out2[0] == BroadcastVote(sent)  # the very same signed precommit
    assert m2.locked == (0, A) and m2.step == Step.PRECOMMIT


def test_round_state_round_trip_and_validation() -> None:
    s = RoundState(3, 2, Step.PREVOTE, 1, A, 2, B)
    assert RoundState.decode(s.encode()) == s
    bad = s.to_map()
    bad["locked_value"] = None
    with pytest.raises(MessageError):
        RoundState.from_map(bad)
    with pytest.raises(MessageError):
        RoundState.decode(b"\xc1")
    with pytest.raises(MessageError):
        RoundState.from_map({**s.to_map(), "step": 7})


def test_timeouts_grow_with_the_round() -> None:
    t = TimeoutConfig.from_params({"timeout_propose_ms": 3000, "timeout_delta_ms": 100})
    assert t.duration(Step.PROPOSE, 0) == 3000
    assert t.duration(Step.PROPOSE, 5) == 3500
    assert t.duration(Step.PRECOMMIT, 2) == t.precommit_ms + 200
    assert TimeoutConfig.from_params({}) == TimeoutConfig()


def test_rounds_stop_at_the_largest_round_a_vote_can_name() -> None:
    from chain.vote import MAX_ROUND
    m = machine(me=1)
    for v in (2, 3):
        m.handle(VoteReceived(vote(VoteType.PRECOMMIT, v, None, r=MAX_ROUND)), 1100)
    assert m.round == MAX_ROUND
    out = m.handle(TimeoutFired(1, MAX_ROUND, Step.PRECOMMIT), 1200)
    assert kinds(out) == [RejectKind.STALE] and m.round == MAX_ROUND


def test_no_decision_on_a_block_judged_invalid() -> None:
    m = machine()
    for v in (1, 2, 3):
        m.handle(VoteReceived(vote(VoteType.PRECOMMIT, v, B)), 1100)
    out = m.handle(BlockValidated(1, B, False, 5), 1100)
    assert not any(isinstance(a, Commit) for a in out) and m.decision is None


def test_votes_for_a_block_are_stamped_after_its_time() -> None:
    m = machine()
    # our clock (1100) is behind the block's header time (5000): votes for it say 5001
    out = m.handle(ProposalReceived(proposal(), True, 5000), 1100)
    out += m.handle(VoteReceived(vote(VoteType.PREVOTE, 1, A)), 1100)
    out += m.handle(VoteReceived(vote(VoteType.PREVOTE, 2, A)), 1100)
    stamps = [a.vote.timestamp for a in out if isinstance(a, BroadcastVote)]
    assert stamps == [5001, 5001]
    # nil votes carry our clock; a clock past the block time is used as it is
    m2 = machine()
    nil_vote = m2.handle(TimeoutFired(1, 0, Step.PROPOSE), 1234)[0].vote
    assert nil_vote.timestamp == 1234 and nil_vote.block_id is None
    m3 = machine()
    (prevote,) = m3.handle(ProposalReceived(proposal(), True, 10), 7777)
    assert prevote.vote.timestamp == 7777
