"""Evidence of equivocation: two signed messages by one validator for the same step.

Two kinds, each anyone can verify from the two signatures and the validator set of the
offending height alone:

* ``DuplicateVoteEvidence``, canonical map ``{"vote_a": vote map, "vote_b": vote map}``:
  two votes that share height, round, type and validator and differ in block id;
* ``DuplicateProposalEvidence``, canonical map ``{"proposal_a": proposal map,
  "proposal_b": proposal map}``: two proposals that share height, round and validator
  (the proposer) and differ in block id or POL round.

In both, the ``_a`` message's canonical encoding sorts before the ``_b`` one's, so one
equivocation has exactly one evidence hash. The two kinds are told apart by their key
sets alone (``evidence_from_map``); vote evidence keeps the bytes it always had.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.hashing import sha256
from chain.validators import ValidatorSet
from chain.vote import MessageError, Proposal, Vote

VOTE_EVIDENCE_KEYS = frozenset({"vote_a", "vote_b"})
PROPOSAL_EVIDENCE_KEYS = frozenset({"proposal_a", "proposal_b"})


class _SignedPair:
    """What both kinds share: two signed messages ``a`` and ``b`` of one validator, held
    in canonical order, encoded as ``{<kind>_a: map, <kind>_b: map}``. Subclasses name
    their two fields (``_names``) and the message class (``_item``)."""

    _names: tuple[str, str]
    _item: type[Vote] | type[Proposal]
    _what: str

    @property
    def _pair(self) -> tuple[Any, Any]:
        return getattr(self, self._names[0]), getattr(self, self._names[1])

    @classmethod
    def create(cls, a: Any, b: Any) -> Any:
        if a.encode() > b.encode():
            a, b = b, a
        return cls(a, b)

    def to_map(self) -> dict[str, Any]:
        a, b = self._pair
        return {self._names[0]: a.to_map(), self._names[1]: b.to_map()}

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @property
    def height(self) -> int:
        return self._pair[0].height

    @property
    def validator(self) -> int:
        return self._pair[0].validator

    @classmethod
    def from_map(cls, m: Any) -> Any:
        if not isinstance(m, dict) or set(m) != set(cls._names):
            raise MessageError(f"evidence must be a map with {cls._names[0]} and "
                               f"{cls._names[1]}")
        return cls(cls._item.from_map(m[cls._names[0]]), cls._item.from_map(m[cls._names[1]]))

    def _same_step(self) -> tuple[bool, str]:
        raise NotImplementedError

    def check_shape(self) -> tuple[bool, str]:
        """Everything but the signatures: one step, one validator, two values, in order."""
        ok, why = self._same_step()
        if not ok:
            return ok, why
        a, b = self._pair
        if a.encode() >= b.encode():
            return False, f"{self._what}s are not in canonical order"
        return True, "ok"

    def verify(self, chain_id: str, validators: ValidatorSet) -> tuple[bool, str]:
        """``check_shape`` and both signatures, against the set of the offending height."""
        ok, why = self.check_shape()
        if not ok:
            return ok, why
        a, b = self._pair
        if not a.verify(chain_id, validators) or not b.verify(chain_id, validators):
            return False, f"a {self._what} signature is invalid"
        return True, "ok"


@dataclass(frozen=True)
class DuplicateVoteEvidence(_SignedPair):
    """Two votes for one height, round, type and validator with different block ids."""

    vote_a: Vote
    vote_b: Vote
    _names = ("vote_a", "vote_b")
    _item = Vote
    _what = "vote"

    def _same_step(self) -> tuple[bool, str]:
        a, b = self.vote_a, self.vote_b
        if (a.height, a.round, a.type, a.validator) != (b.height, b.round, b.type, b.validator):
            return False, "votes are not for the same height, round, type and validator"
        if a.block_id == b.block_id:
            return False, "votes are for the same block"
        return True, "ok"


@dataclass(frozen=True)
class DuplicateProposalEvidence(_SignedPair):
    """Two signed proposals by the proposer of one (height, round) that propose different
    things: another block id, or the same block with another POL round. Two proposals
    that differ only in their timestamp are not evidence (no value was equivocated).

    Whether the signer really was the proposer of that round is not checked: any
    validator signing two proposals for one round equivocated, and the proposer schedule
    is the node's business, not the evidence's."""

    proposal_a: Proposal
    proposal_b: Proposal
    _names = ("proposal_a", "proposal_b")
    _item = Proposal
    _what = "proposal"

    def _same_step(self) -> tuple[bool, str]:
        a, b = self.proposal_a, self.proposal_b
        if (a.height, a.round, a.validator) != (b.height, b.round, b.validator):
            return False, "proposals are not for the same height, round and validator"
        if (a.block_id, a.pol_round) == (b.block_id, b.pol_round):
            return False, "proposals are for the same block and POL round"
        return True, "ok"


Evidence = DuplicateVoteEvidence | DuplicateProposalEvidence


def evidence_from_map(m: Any) -> Evidence:
    """Either kind of evidence from its canonical map, told apart by its keys."""
    if isinstance(m, dict):
        keys = set(m)
        if keys == VOTE_EVIDENCE_KEYS:
            return DuplicateVoteEvidence.from_map(m)
        if keys == PROPOSAL_EVIDENCE_KEYS:
            return DuplicateProposalEvidence.from_map(m)
    raise MessageError("evidence must be a map with vote_a and vote_b, or with "
                       "proposal_a and proposal_b")


def decode_evidence(data: bytes) -> Evidence:
    """``evidence_from_map`` of canonical bytes; ``MessageError`` on anything else."""
    try:
        return evidence_from_map(encoding.decode(data))
    except encoding.EncodingError as exc:
        raise MessageError(str(exc)) from exc
