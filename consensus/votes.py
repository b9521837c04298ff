"""Vote bookkeeping for one height: who voted what, and which thresholds are reached.

Kept apart from the round logic (``consensus.machine``): this module only counts. It does
not check signatures (the machine does, before calling ``add``) and it has no notion of a
current round or step.

Per (round, type) a ``RoundVotes`` keeps the first vote of each validator and the voting
power behind each value (a block id, or ``None`` for nil). A validator's second vote for the
same (round, type) with a *different* block id is an equivocation: it is not counted, and
``add`` returns verifiable ``DuplicateVoteEvidence`` built from the two signed votes (once
per validator, round and type). Thresholds are by power, with the validator set's rules:
a quorum is strictly more than 2/3 of the total power, "f+1" strictly more than 1/3.
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.evidence import DuplicateVoteEvidence
from chain.validators import ValidatorSet
from chain.vote import Vote, VoteType

# ``RoundVotes.quorum_value`` before any value has a quorum (``None`` means nil).
NO_QUORUM = b"<no quorum>"


class RoundVotes:
    """Votes of one type in one round of one height."""

    __slots__ = ("validators", "votes", "power_by_value", "total_power", "quorum_value",
                 "any_quorum")

    def __init__(self, validators: ValidatorSet) -> None:
        self.validators = validators
        self.votes: dict[int, Vote] = {}
        self.power_by_value: dict[bytes | None, int] = {}
        self.total_power = 0
        # the one value with +2/3 (two can never both have it: each validator counts once)
        self.quorum_value: bytes | None = NO_QUORUM
        self.any_quorum = False

    def get(self, validator: int) -> Vote | None:
        return self.votes.get(validator)

    def _add(self, vote: Vote) -> None:
        power = self.validators.validators[vote.validator].power
        self.votes[vote.validator] = vote
        value_power = self.power_by_value.get(vote.block_id, 0) + power
        self.power_by_value[vote.block_id] = value_power
        self.total_power += power
        if not self.any_quorum and self.validators.has_quorum(self.total_power):
            self.any_quorum = True
        if self.quorum_value is NO_QUORUM and self.validators.has_quorum(value_power):
            self.quorum_value = vote.block_id

    def has_quorum_for(self, block_id: bytes | None) -> bool:
        """+2/3 of the power voted exactly ``block_id`` (``None``: nil)."""
        return self.quorum_value is not NO_QUORUM and self.quorum_value == block_id

    def votes_for(self, block_id: bytes | None) -> list[Vote]:
        return [v for v in self.votes.values() if v.block_id == block_id]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What ``HeightVotes.add`` did with a vote."""

    added: bool
    duplicate: bool = False
    evidence: DuplicateVoteEvidence | None = None
    # set when this vote made its round reach f+1 senders (a round-skip candidate)
    round_reached_one_third: bool = False


_ADDED = AddResult(True)
_DUPLICATE = AddResult(False, duplicate=True)
_CONFLICT_SEEN = AddResult(False)


class HeightVotes:
    """All votes of one height, indexed by round and type."""

    def __init__(self, height: int, validators: ValidatorSet) -> None:
        self.height = height
        self.validators = validators
        self._rounds: dict[tuple[int, VoteType], RoundVotes] = {}
        # distinct senders of any message per round, for the f+1 round skip (line 55)
        self._senders: dict[int, set[int]] = {}
        self._sender_power: dict[int, int] = {}
        self.one_third_rounds: set[int] = set()
        self.max_one_third_round = -1
        # rounds each validator has sent votes in, to bound what it can make us store
        self._rounds_of: dict[int, set[int]] = {}
        self._equivocated: set[tuple[int, int, VoteType]] = set()
        # (round, block id) pairs with +2/3 precommits, in the order they were reached
        self.precommit_quorums: list[tuple[int, bytes]] = []

    def round_votes(self, round: int, type: VoteType) -> RoundVotes | None:
        return self._rounds.get((round, type))

    def prevotes(self, round: int) -> RoundVotes | None:
        return self._rounds.get((round, VoteType.PREVOTE))

    def precommits(self, round: int) -> RoundVotes | None:
        return self._rounds.get((round, VoteType.PRECOMMIT))

    def rounds_of(self, validator: int) -> set[int]:
        """The rounds in which ``validator`` has a counted vote."""
        return self._rounds_of.get(validator, set())

    def existing(self, vote: Vote) -> Vote | None:
        """The counted vote of ``vote``'s validator for the same round and type."""
        rv = self._rounds.get((vote.round, vote.type))
        return rv.votes.get(vote.validator) if rv is not None else None

    def is_duplicate(self, vote: Vote) -> bool:
        """True if the same validator's vote for the same value is already counted."""
        prior = self.existing(vote)
        return prior is not None and prior.block_id == vote.block_id

    def add(self, vote: Vote) -> AddResult:
        """Count ``vote`` (already signature-checked by the caller).

        The vote must be for this height and from a validator in the set (``ValueError``
        otherwise: a caller bug, not a network input).
        """
        if vote.height != self.height:
            raise ValueError(f"vote for height {vote.height} added to height {self.height}")
        if not 0 <= vote.validator < len(self.validators):
            raise ValueError(f"validator index {vote.validator} is not in the set")
        key = (vote.round, vote.type)
        rv = self._rounds.get(key)
        if rv is None:
            rv = self._rounds[key] = RoundVotes(self.validators)
        prior = rv.votes.get(vote.validator)
        if prior is not None:
            if prior.block_id == vote.block_id:
                return _DUPLICATE
            tag = (vote.validator, vote.round, vote.type)
            if tag in self._equivocated:
                return _CONFLICT_SEEN
            self._equivocated.add(tag)
            return AddResult(False, evidence=DuplicateVoteEvidence.create(prior, vote))
        had_quorum_value = rv.quorum_value
        rv._add(vote)
        if (vote.type == VoteType.PRECOMMIT and had_quorum_value is NO_QUORUM
                and rv.quorum_value is not NO_QUORUM and rv.quorum_value is not None):
            self.precommit_quorums.append((vote.round, rv.quorum_value))
        self._rounds_of.setdefault(vote.validator, set()).add(vote.round)
        if self.note_sender(vote.round, vote.validator):
            return AddResult(True, round_reached_one_third=True)
        return _ADDED

    def note_sender(self, round: int, validator: int) -> bool:
        """Record a message (vote or proposal) from ``validator`` in ``round``.

        Returns True when this makes the round's distinct senders exceed 1/3 of the power.
        """
        senders = self._senders.get(round)
        if senders is None:
            senders = self._senders[round] = set()
        if validator in senders:
            return False
        senders.add(validator)
        power = self._sender_power.get(round, 0) + self.validators.validators[validator].power
        self._sender_power[round] = power
        if round not in self.one_third_rounds and self.validators.exceeds_one_third(power):
            self.one_third_rounds.add(round)
            if round > self.max_one_third_round:
                self.max_one_third_round = round
            return True
        return False

    def sender_power(self, round: int) -> int:
        return self._sender_power.get(round, 0)
