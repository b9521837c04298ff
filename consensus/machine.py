"""The Tendermint consensus state machine, sans I/O: events in, actions out.

This is Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic,
2018, arXiv:1807.04938). Comments of the form ``[L22-27]`` cite the paper's line numbers
so the code can be read beside it. Differences from the paper, all liveness-neutral or
liveness-helping and none touching safety, are marked ``[deviation]``:

* getValue() (L18) is asynchronous: the core emits ``RequestValue`` and proposes when
  ``ValueReady`` comes back (only while still in the propose step of that round);
* the proposer also schedules timeoutPropose (L21 schedules it only for the others), so a
  node that never answers ``RequestValue`` cannot stall its own round;
* valid(v) is the driver's verdict, delivered by ``BlockValidated``/``ProposalReceived``;
  while it is unknown, rules that need it wait (timeoutPropose still bounds the wait);
* L49 (decide) needs the block and a positive verdict, not necessarily the proposal
  message: the proposal only serves to make v known, and a fetched block does the same;
* after a restart the current step's timeout is scheduled at once, since the messages that
  would have triggered it (L34, L47) may be gone.

The driver calls ``start_height``, then ``handle(event, now_ms)`` for every input, and
executes the returned actions in order (see ``consensus.events``). Invalid inputs yield a
``Rejected`` action and change nothing; nothing here raises into the driver for bad input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.certificate import CommitCertificate
from chain.evidence import DuplicateProposalEvidence
from chain.genesis import DEFAULT_CONSENSUS
from chain.validators import ValidatorSet
from chain.vote import MAX_ROUND, MessageError, Proposal, Vote, VoteType
from consensus.events import (
    Action,
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
    Commit,
    EmitEvidence,
    ProposalReceived,
    Rejected,
    RejectKind,
    RequestBlock,
    RequestValue,
    ScheduleTimeout,
    SignerRefused,
    Step,
    TimeoutFired,
    ValueReady,
    VoteReceived,
)
from consensus.proposer import ProposerSchedule
from consensus.signer import Signer, SignerError
from consensus.votes import HeightVotes

# A validator can make us hold its votes for at most this many rounds above ours, and at
# most this many messages for the next height: memory stays bounded whatever it sends.
MAX_FUTURE_ROUNDS_PER_VALIDATOR = 4
MAX_BUFFERED_PER_VALIDATOR = 16
# proposals are kept for rounds up to this far above ours (one per round, by its proposer)
MAX_FUTURE_PROPOSAL_ROUNDS = 64


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """timeout(step, round) = base(step) + delta * round, in milliseconds (paper §4)."""

    propose_ms: int = DEFAULT_CONSENSUS["timeout_propose_ms"]
    prevote_ms: int = DEFAULT_CONSENSUS["timeout_prevote_ms"]
    precommit_ms: int = DEFAULT_CONSENSUS["timeout_precommit_ms"]
    delta_ms: int = DEFAULT_CONSENSUS["timeout_delta_ms"]

    @classmethod
    def from_params(cls, params: Mapping[str, int]) -> TimeoutConfig:
        """From genesis consensus parameters (``Genesis.consensus``)."""
        p = {**DEFAULT_CONSENSUS, **params}
        return cls(p["timeout_propose_ms"], p["timeout_prevote_ms"],
                   p["timeout_precommit_ms"], p["timeout_delta_ms"])

    def duration(self, step: Step, round: int) -> int:
        base = (self.propose_ms if step == Step.PROPOSE
                else self.prevote_ms if step == Step.PREVOTE else self.precommit_ms)
        return base + self.delta_ms * round


@dataclass(frozen=True, slots=True)
class RoundState:
    """The part of the machine's state worth saving for a restart (e.g. in a WAL).

    Canonical map: ``{"height", "round", "step", "locked_round", "locked_value",
    "valid_round", "valid_value"}`` (rounds -1 = none, values bin(32) or nil).
    """

    height: int
    round: int
    step: Step
    locked_round: int = -1
    locked_value: bytes | None = None
    valid_round: int = -1
    valid_value: bytes | None = None

    def to_map(self) -> dict[str, Any]:
        return {"height": self.height, "round": self.round, "step": int(self.step),
                "locked_round": self.locked_round, "locked_value": self.locked_value,
                "valid_round": self.valid_round, "valid_value": self.valid_value}

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    @classmethod
    def from_map(cls, m: Any) -> RoundState:
        keys = {"height", "round", "step", "locked_round", "locked_value", "valid_round",
                "valid_value"}
        if not isinstance(m, dict) or set(m) != keys:
            raise MessageError(f"round state must be a map with fields {sorted(keys)}")
        for k in ("height", "round", "locked_round", "valid_round"):
            if not isinstance(m[k], int) or isinstance(m[k], bool) or m[k] < -1:
                raise MessageError(f"round state {k} must be an integer")
        for k in ("locked_value", "valid_value"):
            if m[k] is not None and (not isinstance(m[k], bytes) or len(m[k]) != 32):
                raise MessageError(f"round state {k} must be 32 bytes or nil")
        if m["step"] not in (1, 2, 3):
            raise MessageError("round state step must be 1, 2 or 3")
        if (m["locked_round"] == -1) != (m["locked_value"] is None) or (
                m["valid_round"] == -1) != (m["valid_value"] is None):
            raise MessageError("a round is -1 exactly when its value is nil")
        return cls(m["height"], m["round"], Step(m["step"]), m["locked_round"],
                   m["locked_value"], m["valid_round"], m["valid_value"])

    @classmethod
    def decode(cls, data: bytes) -> RoundState:
        try:
            return cls.from_map(encoding.decode(data, max_size=512))
        except encoding.EncodingError as exc:
            raise MessageError(str(exc)) from exc


def _reject(out: list[Action], kind: RejectKind, reason: str) -> None:
    out.append(Rejected(kind, reason))


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class ConsensusMachine:
    """One validator's (or observer's) Tendermint state machine."""

    def __init__(self, chain_id: str, signer: Signer | None,
                 timeouts: TimeoutConfig | None = None, *,
                 verify_signatures: bool = True) -> None:
        """``signer`` None makes an observer that follows consensus but never votes.

        ``verify_signatures`` False skips Ed25519 checks of incoming messages (the
        simulator measures the logic alone with it); structure checks still apply.
        """
        self.chain_id = chain_id
        self.signer = signer
        self.timeouts = timeouts or TimeoutConfig()
        self.verify_signatures = verify_signatures
        self._height = -1
        self._validators: ValidatorSet | None = None
        self._me: int | None = None
        self._votes: HeightVotes | None = None
        self._prev_votes: HeightVotes | None = None
        self._buffer: list[VoteReceived | ProposalReceived] = []
        self._buffer_counts: dict[int, int] = {}
        self._buffer_set: ValidatorSet | None = None
        self._next_validators: ValidatorSet | None = None
        self._now = 0
        self._reset_height_state()

    # ------------------------------------------------------------------ read-only views

    @property
    def height(self) -> int:
        return self._height

    @property
    def round(self) -> int:
        return self._round

    @property
    def step(self) -> Step:
        return self._step

    @property
    def validators(self) -> ValidatorSet | None:
        return self._validators

    @property
    def validator_index(self) -> int | None:
        """This node's index in the validator set, or None for an observer."""
        return self._me

    @property
    def decision(self) -> tuple[int, bytes] | None:
        """(round, block id) once this height is decided."""
        return self._decision

    @property
    def locked(self) -> tuple[int, bytes | None]:
        return self._locked_round, self._locked_value

    @property
    def valid(self) -> tuple[int, bytes | None]:
        return self._valid_round, self._valid_value

    @property
    def votes(self) -> HeightVotes | None:
        return self._votes

    def proposal(self, round: int) -> Proposal | None:
        return self._proposals.get(round)

    def proposer(self, height: int, round: int) -> int:
        return self._proposer(height, round)

    def use_signer(self, signer: Signer | None, committed: int | None = None) -> None:
        """Sign with ``signer`` from the next ``start_height`` on (a key rotation).

        A validator whose consensus key is rotated at height E (docs/governance.md) calls
        this after height E-1 is over and before ``start_height(E, ...)``, so that every
        message of E and later is signed by the new key and none by the old one. ``None``
        turns the machine into an observer (e.g. a validator removed at E).

        A height is over when this machine decided it or, for a height the driver
        committed by block sync without the machine's decision, when the driver says so
        with ``committed`` (the height it committed). Raises ``ValueError`` when a height
        is under way: the machine has taken its index and signing state from the old
        signer for that height, and a switch now would let one index sign steps of one
        height with two keys.
        """
        if signer is not None and not isinstance(signer, Signer):
            raise ValueError("signer must be a consensus.signer.Signer or None")
        if committed is not None and not _is_uint(committed):
            raise ValueError("committed must be a height")
        over = (self._validators is None or self._decision is not None
                or (committed is not None and committed >= self._height))
        if not over:
            raise ValueError(f"cannot change the signer in the middle of height "
                             f"{self._height}; do it between heights")
        self.signer = signer

    def round_state(self) -> RoundState:
        return RoundState(self._height, self._round, self._step, self._locked_round,
                          self._locked_value, self._valid_round, self._valid_value)

    # ------------------------------------------------------------------ lifecycle

    def _reset_height_state(self) -> None:
        # [L2-9] per-height state; [L53] reset on a new height
        self._round = 0
        self._step = Step.PROPOSE
        self._decision: tuple[int, bytes] | None = None
        self._locked_value: bytes | None = None
        self._locked_round = -1
        self._valid_value: bytes | None = None
        self._valid_round = -1
        self._proposals: dict[int, Proposal] = {}
        self._verdicts: dict[bytes, tuple[bool, int]] = {}
        self._block_requested: set[bytes] = set()
        self._value_requested: int | None = None
        self._prevote_timeout_rounds: set[int] = set()
        self._precommit_timeout_rounds: set[int] = set()
        self._polka_rounds: set[int] = set()
        self._proposal_evidence_rounds: set[int] = set()

    def start_height(self, height: int, validators: ValidatorSet, now_ms: int,
                     resume: RoundState | None = None,
                     next_validators: ValidatorSet | None = None) -> list[Action]:
        """Begin consensus on ``height`` ([L10] upon start, [L52-54] after a decision).

        ``validators`` is the set of ``height`` (the set changes between heights under
        governance: every vote, proposal and quorum of this height is judged against it
        alone). ``next_validators``, the set of ``height + 1`` if the driver knows it
        (header ``next_validators_hash`` commits to it), is used to check messages for
        the next height that arrive early; without it they are checked against
        ``validators`` and checked again at the next ``start_height`` if the set changed.

        Also the restart path: if the signer (or ``resume``, e.g. from a WAL) shows this
        node already acted at ``height``, the machine continues from the latest round it
        acted in, takes the lock back from the signer's lock record, re-broadcasts the
        last message it signed, and never signs a second value for a step.
        Raises ``ValueError`` on a bad argument (a driver bug, not a network input).
        """
        if not _is_uint(height) or not _is_uint(now_ms):
            raise ValueError("height and now_ms must be non-negative integers")
        if not isinstance(validators, ValidatorSet):
            raise ValueError("validators must be a ValidatorSet")
        if next_validators is not None and not isinstance(next_validators, ValidatorSet):
            raise ValueError("next_validators must be a ValidatorSet or None")
        self._prev_votes = (self._votes if self._votes is not None
                            and self._votes.height == height - 1 else None)
        self._height = height
        self._validators = validators
        self._proposer = ProposerSchedule(validators)
        self._me = (validators.index_of(self.signer.public_key)
                    if self.signer is not None else None)
        self._votes = HeightVotes(height, validators)
        self._next_validators = next_validators
        self._reset_height_state()
        self._now = now_ms
        # buffered messages were checked against the set we then expected for this height
        buffered, same_set = self._buffer, (self._buffer_set is validators
                                            or self._buffer_set == validators)
        self._buffer, self._buffer_counts, self._buffer_set = [], {}, None
        out: list[Action] = []

        round_ = 0
        if resume is not None and resume.height == height:
            round_ = resume.round
            self._locked_round, self._locked_value = resume.locked_round, resume.locked_value
            self._valid_round, self._valid_value = resume.valid_round, resume.valid_value
        last = self.signer.state.last if self.signer is not None else None
        if last is not None and last.height == height and last.round >= round_:
            round_ = last.round
        lock = self.signer.state.lock if self.signer is not None else None
        if lock is not None and lock.height == height and lock.round > self._locked_round:
            self._locked_round, self._locked_value = lock.round, lock.block_id
        if last is not None and last.height == height and last.round == round_:
            self._resume_round(round_, last, out)
        else:
            self._start_round(round_, out)
        for event in buffered:
            if event.__class__ is VoteReceived:
                self._on_vote(event.vote, out, verified=same_set)
            else:
                self._on_proposal(event, out, verified=same_set)
        self._run_rules(out)
        return out

    def _resume_round(self, round_: int, last: Any, out: list[Action]) -> None:
        """Continue a round in which this node already signed ``last`` before a restart."""
        self._round = round_
        try:
            msg = last.message()
        except ValueError:
            msg = None
        if isinstance(msg, Proposal):
            self._step = Step.PROPOSE
            self._proposals[round_] = msg
            self._votes.note_sender(round_, msg.validator)
            out.append(BroadcastProposal(msg))
        elif isinstance(msg, Vote):
            self._step = Step.PREVOTE if msg.type == VoteType.PREVOTE else Step.PRECOMMIT
            self._votes.add(msg)
            out.append(BroadcastVote(msg))
        else:  # unreadable record: do not sign this round's steps again, just move on
            self._step = Step.PRECOMMIT
        # [deviation] schedule the current step's timeout now (see module docstring)
        out.append(ScheduleTimeout(self._height, round_, self._step,
                                   self.timeouts.duration(self._step, round_)))
        if self._step == Step.PREVOTE:
            self._prevote_timeout_rounds.add(round_)
        elif self._step == Step.PRECOMMIT:
            self._precommit_timeout_rounds.add(round_)

    # ------------------------------------------------------------------ input dispatch

    def handle(self, event: Any, now_ms: int) -> list[Action]:
        """Process one input; return the actions to execute, in order."""
        out: list[Action] = []
        if not _is_uint(now_ms):
            _reject(out, RejectKind.MALFORMED, "now_ms must be a non-negative integer")
            return out
        if self._validators is None:
            _reject(out, RejectKind.UNEXPECTED, "no height started")
            return out
        self._now = now_ms
        cls = event.__class__
        if cls is VoteReceived:
            self._on_vote(event.vote, out)
        elif cls is ProposalReceived:
            self._on_proposal(event, out)
        elif cls is TimeoutFired:
            self._on_timeout(event, out)
        elif cls is BlockValidated:
            self._on_block_validated(event, out)
        elif cls is ValueReady:
            self._on_value_ready(event, out)
        else:
            _reject(out, RejectKind.MALFORMED, f"unknown event {cls.__name__}")
        return out

    def _verify(self, msg: Vote | Proposal, validators: ValidatorSet | None = None) -> bool:
        """The signature, checked against the set of the message's height (``validators``,
        default the current height's)."""
        if not self.verify_signatures:
            return True
        return msg.verify(self.chain_id, validators or self._validators)

    def _set_for(self, height: int) -> ValidatorSet | None:
        """The set messages of ``height`` are judged against, if this machine knows it."""
        if height == self._height:
            return self._validators
        if height == self._height + 1:
            return self._next_validators or self._validators
        if height == self._height - 1 and self._prev_votes is not None:
            return self._prev_votes.validators
        return None

    def _on_vote(self, vote: Any, out: list[Action], verified: bool = False) -> None:
        if vote.__class__ is not Vote:
            return _reject(out, RejectKind.MALFORMED, "not a Vote")
        # an index is only meaningful in the set of the vote's own height
        vset = self._set_for(vote.height) or self._validators
        if not vote.validator < len(vset):
            return _reject(out, RejectKind.UNKNOWN_VALIDATOR,
                           f"validator index {vote.validator} is not in the set of "
                           f"height {vote.height}")
        if vote.height != self._height:
            return self._other_height_vote(vote, out)
        votes = self._votes
        if votes.contains(vote):
            return _reject(out, RejectKind.DUPLICATE, "vote already counted")
        if vote.round > self._round and votes.existing(vote) is None:
            rounds = votes.rounds_of(vote.validator)
            if vote.round not in rounds and sum(
                    1 for r in rounds if r > self._round) >= MAX_FUTURE_ROUNDS_PER_VALIDATOR:
                return _reject(out, RejectKind.BUFFER_FULL,
                               f"validator {vote.validator} has votes in too many future rounds")
        if not verified and not self._verify(vote):
            return _reject(out, RejectKind.BAD_SIGNATURE,
                           f"bad signature on vote from validator {vote.validator}")
        res = votes.add(vote)
        if res.evidence is not None:
            out.append(EmitEvidence(res.evidence))
        if not res.added:
            if res.evidence is None:
                _reject(out, RejectKind.BUFFER_FULL,
                        f"validator {vote.validator} voted too many values in one step")
            return None
        # an equivocator's vote still counts for its value, as the paper counts messages
        self._run_rules(out)
        return None

    def _other_height_vote(self, vote: Vote, out: list[Action]) -> None:
        if vote.height == self._height + 1:
            return self._buffer_message(VoteReceived(vote), vote, out)
        prev = self._prev_votes
        if vote.height == self._height - 1 and prev is not None:
            # still worth checking for equivocation after we moved on (e.g. Twins)
            prior = prev.existing(vote)
            if prior is not None and not prev.contains(vote):
                if not self._verify(vote, prev.validators):
                    return _reject(out, RejectKind.BAD_SIGNATURE, "bad signature on vote")
                res = prev.add(vote)
                if res.evidence is not None:
                    out.append(EmitEvidence(res.evidence))
                    return None
        kind = RejectKind.STALE if vote.height < self._height else RejectKind.WRONG_HEIGHT
        return _reject(out, kind, f"vote for height {vote.height}, at {self._height}")

    def _buffer_message(self, event: VoteReceived | ProposalReceived, msg: Vote | Proposal,
                        out: list[Action]) -> None:
        count = self._buffer_counts.get(msg.validator, 0)
        if count >= MAX_BUFFERED_PER_VALIDATOR:
            return _reject(out, RejectKind.BUFFER_FULL,
                           f"too many next-height messages from validator {msg.validator}")
        # checked now so forgeries cannot crowd out a validator's real messages
        expected = self._next_validators or self._validators
        if not self._verify(msg, expected):
            return _reject(out, RejectKind.BAD_SIGNATURE, "bad signature on next-height message")
        self._buffer_counts[msg.validator] = count + 1
        self._buffer_set = expected
        self._buffer.append(event)
        return None

    def _on_proposal(self, event: Any, out: list[Action], verified: bool = False) -> None:
        p = event.proposal
        if (p.__class__ is not Proposal or event.valid not in (None, True, False)
                or not _is_uint(event.block_time_ms)):
            return _reject(out, RejectKind.MALFORMED, "malformed proposal event")
        vset = self._set_for(p.height) or self._validators
        if not p.validator < len(vset):
            return _reject(out, RejectKind.UNKNOWN_VALIDATOR,
                           f"validator index {p.validator} is not in the set of "
                           f"height {p.height}")
        if p.height != self._height:
            if p.height == self._height + 1:
                return self._buffer_message(event, p, out)
            kind = RejectKind.STALE if p.height < self._height else RejectKind.WRONG_HEIGHT
            return _reject(out, kind, f"proposal for height {p.height}, at {self._height}")
        if p.validator != self._proposer(p.height, p.round):
            return _reject(out, RejectKind.NOT_PROPOSER,
                           f"validator {p.validator} is not the proposer of round {p.round}")
        existing = self._proposals.get(p.round)
        if existing is not None:
            if existing.sign_payload() == p.sign_payload():
                if (self._decision is None and event.valid is not None
                        and p.block_id not in self._verdicts):
                    # a driver may deliver the verdict by re-sending the proposal
                    self._verdicts[p.block_id] = (event.valid, event.block_time_ms)
                    self._run_rules(out)
                    return None
                return _reject(out, RejectKind.DUPLICATE, "proposal already received")
            if not verified and not self._verify(p):
                return _reject(out, RejectKind.BAD_SIGNATURE, "bad signature on proposal")
            # checked even after the decision: equivocation is worth proving whenever seen
            if ((existing.block_id, existing.pol_round) != (p.block_id, p.pol_round)
                    and p.round not in self._proposal_evidence_rounds):
                self._proposal_evidence_rounds.add(p.round)
                out.append(EmitEvidence(DuplicateProposalEvidence.create(existing, p)))
            # the first proposal of the round stays the one this node acts on
            return _reject(out, RejectKind.CONFLICTING_PROPOSAL,
                           f"proposer {p.validator} sent two proposals for round {p.round}")
        if self._decision is not None:
            return _reject(out, RejectKind.STALE, "height already decided")
        if p.round > self._round + MAX_FUTURE_PROPOSAL_ROUNDS:
            return _reject(out, RejectKind.BUFFER_FULL, f"proposal round {p.round} too far ahead")
        if not verified and not self._verify(p):
            return _reject(out, RejectKind.BAD_SIGNATURE, "bad signature on proposal")
        self._proposals[p.round] = p
        self._votes.note_sender(p.round, p.validator)
        if event.valid is not None and p.block_id not in self._verdicts:
            self._verdicts[p.block_id] = (event.valid, event.block_time_ms)
        self._run_rules(out)
        return None

    def _on_block_validated(self, event: Any, out: list[Action]) -> None:
        if (event.valid not in (True, False) or not _is_uint(event.block_time_ms)
                or not isinstance(event.block_id, bytes) or len(event.block_id) != 32):
            return _reject(out, RejectKind.MALFORMED, "malformed BlockValidated")
        if event.height != self._height:
            return _reject(out, RejectKind.WRONG_HEIGHT,
                           f"verdict for height {event.height}, at {self._height}")
        if event.block_id in self._verdicts:
            return _reject(out, RejectKind.DUPLICATE, "block already judged")
        self._verdicts[event.block_id] = (event.valid, event.block_time_ms)
        self._run_rules(out)
        return None

    def _on_value_ready(self, event: Any, out: list[Action]) -> None:
        if (not isinstance(event.block_id, bytes) or len(event.block_id) != 32
                or not _is_uint(event.block_time_ms)):
            return _reject(out, RejectKind.MALFORMED, "malformed ValueReady")
        if (event.height != self._height or event.round != self._round
                or self._value_requested != event.round or self._step != Step.PROPOSE
                or self._decision is not None or event.round in self._proposals):
            return _reject(out, RejectKind.STALE, "no value is wanted for this round now")
        self._value_requested = None
        self._verdicts.setdefault(event.block_id, (True, event.block_time_ms))
        # [L19] validRound is -1 here: validValue was nil, or we would not have asked
        self._propose(event.block_id, -1, out)
        self._run_rules(out)
        return None

    def _on_timeout(self, event: Any, out: list[Action]) -> None:
        if event.step not in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
            return _reject(out, RejectKind.MALFORMED, "unknown timeout step")
        if (self._decision is not None or event.height != self._height
                or event.round != self._round):
            return _reject(out, RejectKind.STALE, "stale timeout")
        if event.step == Step.PROPOSE:
            # [L57-60] OnTimeoutPropose: still proposing → prevote nil
            if self._step != Step.PROPOSE:
                return _reject(out, RejectKind.STALE, "stale timeout")
            self._cast(VoteType.PREVOTE, None, out)
            self._step = Step.PREVOTE
        elif event.step == Step.PREVOTE:
            # [L61-64] OnTimeoutPrevote: no polka in time → precommit nil
            if self._step != Step.PREVOTE:
                return _reject(out, RejectKind.STALE, "stale timeout")
            self._cast(VoteType.PRECOMMIT, None, out)
            self._step = Step.PRECOMMIT
        else:
            # [L65-67] OnTimeoutPrecommit: next round, whatever our step
            if self._round >= MAX_ROUND:  # votes cannot name a later round
                return _reject(out, RejectKind.STALE, f"round limit {MAX_ROUND} reached")
            self._start_round(self._round + 1, out)
        self._run_rules(out)
        return None

    # ------------------------------------------------------------------ the rules

    def _start_round(self, round_: int, out: list[Action]) -> None:
        # [L11-21] StartRound(round)
        self._round = round_
        self._step = Step.PROPOSE
        self._value_requested = None
        h = self._height
        # [L21] timeoutPropose; [deviation] the proposer schedules it too
        out.append(ScheduleTimeout(h, round_, Step.PROPOSE,
                                   self.timeouts.duration(Step.PROPOSE, round_)))
        if self._me is not None and self._proposer(h, round_) == self._me:
            if self._valid_value is not None:
                # [L15-16] re-propose the value we saw a polka for
                self._propose(self._valid_value, self._valid_round, out)
            else:
                # [L18] getValue(), asynchronously [deviation]
                self._value_requested = round_
                out.append(RequestValue(h, round_))

    def _propose(self, block_id: bytes, pol_round: int, out: list[Action]) -> None:
        # [L19] broadcast ⟨PROPOSAL, h, round, proposal, validRound⟩
        r = self._round
        proposal = Proposal(self._height, r, pol_round, block_id, self._vote_time(block_id),
                            self._me)
        try:
            signed = self.signer.sign_proposal(proposal, self.chain_id)
        except SignerError as exc:
            out.append(SignerRefused(self._height, r, Step.PROPOSE, str(exc)))
            return
        self._proposals[r] = signed
        self._votes.note_sender(r, self._me)
        out.append(BroadcastProposal(signed))

    def _vote_time(self, block_id: bytes | None) -> int:
        # Votes for a block are stamped after its header time, so the next block's time
        # (the weighted median of these precommits) is strictly later than this block's.
        if block_id is None:
            return self._now
        verdict = self._verdicts.get(block_id)
        if verdict is None or verdict[1] < self._now:
            return self._now
        return verdict[1] + 1

    def _cast(self, type_: VoteType, block_id: bytes | None, out: list[Action]) -> None:
        """Sign, count and broadcast our vote (the paper's broadcast reaches us too)."""
        if self._me is None:
            return
        vote = Vote(type_, self._height, self._round, block_id, self._vote_time(block_id),
                    self._me)
        try:
            signed = self.signer.sign_vote(vote, self.chain_id)
        except SignerError as exc:
            step = Step.PREVOTE if type_ == VoteType.PREVOTE else Step.PRECOMMIT
            out.append(SignerRefused(self._height, self._round, step, str(exc)))
            return
        res = self._votes.add(signed)
        if res.evidence is not None:  # a twin with our key voted otherwise first
            out.append(EmitEvidence(res.evidence))
        out.append(BroadcastVote(signed))

    def _run_rules(self, out: list[Action]) -> None:
        """Fire enabled rules until none is: the paper's "upon" clauses."""
        votes = self._votes
        while self._decision is None:
            if votes.precommit_quorums and self._try_decide(out):
                return
            # [L55-56] f+1 messages of a higher round → StartRound(that round)
            if votes.max_one_third_round > self._round:
                self._start_round(votes.max_one_third_round, out)
                continue
            if not self._round_rules(out):
                return

    def _try_decide(self, out: list[Action]) -> bool:
        # [L49-54] 2f+1 ⟨PRECOMMIT, h, r, id(v)⟩ for any round r, v known and valid(v)
        for r, block_id in self._votes.precommit_quorums:
            verdict = self._verdicts.get(block_id)
            if verdict is None:
                if block_id not in self._block_requested:
                    self._block_requested.add(block_id)
                    out.append(RequestBlock(self._height, block_id))
                continue
            if verdict[0]:
                self._decision = (r, block_id)  # [L51]; [L52-54] is start_height(h+1)
                votes = self._votes.precommits(r).votes_for(block_id)
                cert = CommitCertificate.from_votes(votes)
                out.append(Commit(self._height, r, block_id, cert))
                return True
        return False

    def _round_rules(self, out: list[Action]) -> bool:
        """Rules about the current round. True if the step or round changed."""
        r = self._round
        step = self._step
        p = self._proposals.get(r)
        prevotes = self._votes.prevotes(r)
        if step == Step.PROPOSE:
            if p is not None:
                v = p.block_id
                verdict = self._verdicts.get(v)
                if p.pol_round == -1:
                    # [L22-27] fresh proposal: prevote it if valid and we are not locked
                    # on something else
                    if verdict is not None:
                        ok = verdict[0] and (self._locked_round == -1 or self._locked_value == v)
                        self._cast(VoteType.PREVOTE, v if ok else None, out)
                        self._step = Step.PREVOTE
                        return True
                else:
                    # [L28-33] re-proposal with a polka at vr < round: prevote it if valid
                    # and our lock is no newer than vr (or is on v)
                    vr = p.pol_round
                    pol = self._votes.prevotes(vr)
                    if (verdict is not None and pol is not None and vr < r
                            and pol.has_quorum_for(v)):
                        ok = verdict[0] and (self._locked_round <= vr or self._locked_value == v)
                        self._cast(VoteType.PREVOTE, v if ok else None, out)
                        self._step = Step.PREVOTE
                        return True
        elif prevotes is not None:
            if p is not None and r not in self._polka_rounds and prevotes.has_quorum_for(
                    p.block_id):
                verdict = self._verdicts.get(p.block_id)
                if verdict is not None and verdict[0]:
                    # [L36-43] polka for the proposal's valid value in this round
                    self._polka_rounds.add(r)
                    self._valid_value, self._valid_round = p.block_id, r  # [L42-43]
                    if step == Step.PREVOTE:
                        # [L38-41] lock and precommit it
                        self._locked_value, self._locked_round = p.block_id, r
                        self._cast(VoteType.PRECOMMIT, p.block_id, out)
                        self._step = Step.PRECOMMIT
                    return True
            if step == Step.PREVOTE:
                if prevotes.has_quorum_for(None):
                    # [L44-46] polka for nil → precommit nil
                    self._cast(VoteType.PRECOMMIT, None, out)
                    self._step = Step.PRECOMMIT
                    return True
                if prevotes.any_quorum and r not in self._prevote_timeout_rounds:
                    # [L34-35] 2f+1 prevotes for anything → timeoutPrevote
                    self._prevote_timeout_rounds.add(r)
                    out.append(ScheduleTimeout(self._height, r, Step.PREVOTE,
                                               self.timeouts.duration(Step.PREVOTE, r)))
        if r not in self._precommit_timeout_rounds:
            precommits = self._votes.precommits(r)
            if precommits is not None and precommits.any_quorum:
                # [L47-48] 2f+1 precommits for anything → timeoutPrecommit
                self._precommit_timeout_rounds.add(r)
                out.append(ScheduleTimeout(self._height, r, Step.PRECOMMIT,
                                           self.timeouts.duration(Step.PRECOMMIT, r)))
        return False

