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


@dataclass(frozen=True)
class DuplicateVoteEvidence:
    vote_a: Vote
    vote_b: Vote

    @classmethod
    def create(cls, a: Vote, b: Vote) -> DuplicateVoteEvidence:
        if a.encode() > b.encode():
            a, b = b, a
        return cls(a, b)

    def to_map(self) -> dict[str, Any]:
        return {"vote_a": self.vote_a.to_map(), "vote_b": self.vote_b.to_map()}

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @property
    def height(self) -> int:
        return self.vote_a.height

    @property
    def validator(self) -> int:
        return self.vote_a.validator

    @classmethod
    def from_map(cls, m: Any) -> DuplicateVoteEvidence:
        if not isinstance(m, dict) or set(m) != VOTE_EVIDENCE_KEYS:
            raise MessageError("evidence must be a map with vote_a and vote_b")
        return cls(Vote.from_map(m["vote_a"]), Vote.from_map(m["vote_b"]))

    def check_shape(self) -> tuple[bool, str]:
        """Everything but the signatures: one step, one validator, two blocks, in order."""
        a, b = self.vote_a, self.vote_b
        if (a.height, a.round, a.type, a.validator) != (b.height, b.round, b.type, b.validator):
            return False, "votes are not for the same height, round, type and validator"
        if a.block_id == b.block_id:
            return False, "votes are for the same block"
        if a.encode() >= b.encode():
            return False, "votes are not in canonical order"
        return True, "ok"

    def verify(self, chain_id: str, validators: ValidatorSet) -> tuple[bool, str]:
        """``check_shape`` and both signatures, against the set of the offending height."""
        ok, why = self.check_shape()
        if not ok:
            return ok, why
        if not self.vote_a.verify(chain_id, validators) or not self.vote_b.verify(
                chain_id, validators):
            return False, "a vote signature is invalid"
        return True, "ok"


@dataclass(frozen=True)
class DuplicateProposalEvidence:
    """Two signed proposals by the proposer of one (height, round) that propose different
    things: another block id, or the same block with another POL round. Two proposals
    that differ only in their timestamp are not evidence (no value was equivocated)."""

    proposal_a: Proposal
    proposal_b: Proposal

    @classmethod
    def create(cls, a: Proposal, b: Proposal) -> DuplicateProposalEvidence:
        if a.encode() > b.encode():
            a, b = b, a
        return cls(a, b)

    def to_map(self) -> dict[str, Any]:
        return {"proposal_a": self.proposal_a.to_map(), "proposal_b": self.proposal_b.to_map()}

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @property
    def height(self) -> int:
        return self.proposal_a.height

    @property
    def validator(self) -> int:
        return self.proposal_a.validator

    @classmethod
    def from_map(cls, m: Any) -> DuplicateProposalEvidence:
        if not isinstance(m, dict) or set(m) != PROPOSAL_EVIDENCE_KEYS:
            raise MessageError("evidence must be a map with proposal_a and proposal_b")
        return cls(Proposal.from_map(m["proposal_a"]), Proposal.from_map(m["proposal_b"]))

    def check_shape(self) -> tuple[bool, str]:
        """Everything but the signatures: one round, one proposer, two values, in order."""
        a, b = self.proposal_a, self.proposal_b
        if (a.height, a.round, a.validator) != (b.height, b.round, b.validator):
            return False, "proposals are not for the same height, round and validator"
        if (a.block_id, a.pol_round) == (b.block_id, b.pol_round):
            return False, "proposals are for the same block and POL round"
        if a.encode() >= b.encode():
            return False, "proposals are not in canonical order"
        return True, "ok"

    def verify(self, chain_id: str, validators: ValidatorSet) -> tuple[bool, str]:
        """``check_shape`` and both signatures, against the set of the offending height.

        Whether the signer really was the proposer of that round is not checked: any
        validator signing two proposals for one round equivocated, and the proposer
        schedule is the node's business, not the evidence's.
        """
        ok, why = self.check_shape()
        if not ok:
            return ok, why
        if not self.proposal_a.verify(chain_id, validators) or not self.proposal_b.verify(
                chain_id, validators):
            return False, "a proposal signature is invalid"
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
