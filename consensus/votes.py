"""Vote bookkeeping for one height: who voted what, and which thresholds are reached.

Kept apart from the round logic (``consensus.machine``): this module only counts. It does
not check signatures (the machine does, before calling ``add``) and it has no notion of a
current round or step.

Per (round, type) a ``RoundVotes`` keeps, for each value (a block id, or ``None`` for nil),
the validators that voted it and their power. Thresholds are by power, with the validator
set's rules: a quorum is strictly more than 2/3 of the total, "f+1" more than 1/3.

Equivocation: a validator's vote for a second value in the same (round, type) yields
verifiable ``DuplicateVoteEvidence`` (once per validator, round and type) **and is still
counted for that value**, as the paper counts "2f+1 messages for v" from distinct senders
per value. Counting only a validator's first vote would let different honest nodes count
different copies of an equivocator's votes, so one could lock on (or commit with) a quorum
the others can never complete — a liveness failure found by the simulator with Twins.
The "any value" tallies (2f+1 prevotes/precommits of any kind, f+1 senders) count each
validator once. To bound memory, at most ``MAX_VALUES_PER_STEP`` distinct values are
counted per validator and step; later ones are dropped (only a validator signing more
than that many conflicting votes is affected).
"""

from __future__ import annotations

from dataclasses import dataclass

from chain.evidence import DuplicateVoteEvidence
from chain.validators import ValidatorSet
from chain.vote import Vote, VoteType

# ``RoundVotes.quorum_value`` before any value has a quorum (``None`` means nil).
NO_QUORUM = b"<no quorum>"
MAX_VALUES_PER_STEP = 4


class RoundVotes:
    """Votes of one type in one round of one height."""

    __slots__ = ("validators", "votes", "by_value", "power_by_value", "total_power",
                 "quorum_value", "any_quorum")

    def __init__(self, validators: ValidatorSet) -> None:
        self.validators = validators
        # each validator's first vote (for duplicate and equivocation detection)
        self.votes: dict[int, Vote] = {}
        # value -> validator -> that validator's vote for the value
        self.by_value: dict[bytes | None, dict[int, Vote]] = {}
        self.power_by_value: dict[bytes | None, int] = {}
        # power of the distinct validators that voted anything
        self.total_power = 0
        # the first value to reach +2/3 (with at most f faulty, the only one that can)
        self.quorum_value: bytes | None = NO_QUORUM
        self.any_quorum = False

    def get(self, validator: int) -> Vote | None:
        """The validator's first vote in this round and type."""
        return self.votes.get(validator)

    def contains(self, vote: Vote) -> bool:
        """True if this validator's vote for this value is already counted."""
        voters = self.by_value.get(vote.block_id)
        return voters is not None and vote.validator in voters

    def _count(self, vote: Vote, power: int) -> bool:
        """Count ``vote`` for its value; True if that value just reached a quorum."""
        voters = self.by_value.get(vote.block_id)
        if voters is None:
            voters = self.by_value[vote.block_id] = {}
        voters[vote.validator] = vote
        value_power = self.power_by_value.get(vote.block_id, 0) + power
        self.power_by_value[vote.block_id] = value_power
        before = 3 * (value_power - power) > 2 * self.validators.total_power
        reached = not before and self.validators.has_quorum(value_power)
        if reached and self.quorum_value is NO_QUORUM:
            self.quorum_value = vote.block_id
        return reached

    def has_quorum_for(self, block_id: bytes | None) -> bool:
        """+2/3 of the power voted exactly ``block_id`` (``None``: nil)."""
        return self.validators.has_quorum(self.power_by_value.get(block_id, 0))

    def votes_for(self, block_id: bytes | None) -> list[Vote]:
        return list(self.by_value.get(block_id, {}).values())


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
        """The first counted vote of ``vote``'s validator for the same round and type."""
        rv = self._rounds.get((vote.round, vote.type))
        return rv.votes.get(vote.validator) if rv is not None else None

    def contains(self, vote: Vote) -> bool:
        """True if the same validator's vote for the same value is already counted."""
        rv = self._rounds.get((vote.round, vote.type))
        return rv is not None and rv.contains(vote)

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
        if rv.contains(vote):
            return _DUPLICATE
        power = self.validators.validators[vote.validator].power
        prior = rv.votes.get(vote.validator)
        evidence = None
        if prior is not None:
            tag = (vote.validator, vote.round, vote.type)
            if tag not in self._equivocated:
                self._equivocated.add(tag)
                evidence = DuplicateVoteEvidence.create(prior, vote)
            values = sum(1 for voters in rv.by_value.values() if vote.validator in voters)
            if values >= MAX_VALUES_PER_STEP:
                return AddResult(False, evidence=evidence)
        else:
            rv.votes[vote.validator] = vote
            rv.total_power += power
            if not rv.any_quorum and self.validators.has_quorum(rv.total_power):
                rv.any_quorum = True
        if rv._count(vote, power) and vote.type == VoteType.PRECOMMIT \
                and vote.block_id is not None:
            self.precommit_quorums.append((vote.round, vote.block_id))
        self._rounds_of.setdefault(vote.validator, set()).add(vote.round)
        if self.note_sender(vote.round, vote.validator):
            return AddResult(True, evidence=evidence, round_reached_one_third=True)
        return _ADDED if evidence is None else AddResult(True, evidence=evidence)

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
