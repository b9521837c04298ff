"""Duplicate-vote evidence: two signed votes by one validator for the same step.

Canonical form: ``{"vote_a": vote map, "vote_b": vote map}`` where the two votes share
height, round, type and validator, differ in block id, and ``vote_a``'s canonical
encoding sorts before ``vote_b``'s (so one equivocation has exactly one evidence hash).
Anyone can verify it from the two signatures and the validator set alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.hashing import sha256
from chain.validators import ValidatorSet
from chain.vote import MessageError, Vote


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
        if not isinstance(m, dict) or set(m) != {"vote_a", "vote_b"}:
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
        ok, why = self.check_shape()
        if not ok:
            return ok, why
        if not self.vote_a.verify(chain_id, validators) or not self.vote_b.verify(
                chain_id, validators):
            return False, "a vote signature is invalid"
        return True, "ok"
