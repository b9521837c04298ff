"""Commit certificates for the node's block sync and the auditor: build and verify.

A certificate is the +2/3 (by power) precommits for one block id at one (height, round);
its format and checks live in ``chain.certificate``. This module gives them the shape the
consensus side uses: ``verify(cert, block_id, validator_set, chain_id) -> (ok, reason)``.
"""

from __future__ import annotations

from chain.certificate import (
    CommitCertificate,
    CommitSig,
    verify_certificate,
    weighted_median_time,
)
from chain.validators import ValidatorSet
from chain.vote import Vote

__all__ = ["CommitCertificate", "CommitSig", "build", "verify", "block_time"]


def verify(cert: CommitCertificate, block_id: bytes, validator_set: ValidatorSet,
           chain_id: str, height: int | None = None) -> tuple[bool, str]:
    """True with "ok" if ``cert`` proves ``block_id`` final, else False with the reason.

    Checks: block id (and height, when given) match; every entry is a distinct validator
    of the set with a valid precommit signature for (height, round, block id, timestamp)
    on ``chain_id``; the signers hold strictly more than 2/3 of the total power.
    """
    if not isinstance(cert, CommitCertificate):
        return False, "not a commit certificate"
    if not isinstance(block_id, bytes) or len(block_id) != 32:
        return False, "block id must be 32 bytes"
    return verify_certificate(cert, chain_id, validator_set, height=height, block_id=block_id)


def build(precommits: list[Vote]) -> CommitCertificate:
    """A certificate from precommits for one (height, round, block); raises MessageError."""
    return CommitCertificate.from_votes(precommits)


def block_time(cert: CommitCertificate, validator_set: ValidatorSet) -> int:
    """The header time of the block *after* the one ``cert`` commits (BFT time)."""
    return weighted_median_time(cert, validator_set)
