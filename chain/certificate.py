"""Commit certificates: the +2/3 precommits that make a block final.

Canonical form:

    {"block_id": bin(32), "height": uint, "round": uint,
     "sigs": [[validator index, timestamp ms, bin(64) signature], ...]}

``sigs`` is sorted by validator index, strictly ascending (one entry per validator). Entry
``[i, t, s]`` is validator i's precommit ``Vote(PRECOMMIT, height, round, block_id, t, i)``
with signature ``s``. ``verify_certificate`` needs nothing but the validator set, so anyone
can check finality without trusting a node.

Block time (BFT time): the time of block h+1 is the power-weighted median of the
timestamps in the certificate of block h, so no single validator controls the clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.crypto import SIGNATURE_SIZE
from chain.hashing import sha256
from chain.validators import ValidatorSet
from chain.vote import MessageError, Vote, VoteType


@dataclass(frozen=True)
class CommitSig:
    validator: int
    timestamp: int
    sig: bytes


@dataclass(frozen=True)
class CommitCertificate:
    height: int
    round: int
    block_id: bytes
    sigs: tuple[CommitSig, ...]

    def to_map(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "height": self.height,
            "round": self.round,
            "sigs": [[s.validator, s.timestamp, s.sig] for s in self.sigs],
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    def hash(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_map(cls, m: Any) -> CommitCertificate:
        if not isinstance(m, dict) or set(m) != {"block_id", "height", "round", "sigs"}:
            raise MessageError("certificate must be a map with block_id, height, round, sigs")
        sigs_raw = m["sigs"]
        if not isinstance(sigs_raw, list) or not sigs_raw:
            raise MessageError("certificate sigs must be a non-empty list")
        sigs = []
        for entry in sigs_raw:
            if (not isinstance(entry, list) or len(entry) != 3
                    or not isinstance(entry[0], int) or not isinstance(entry[1], int)
                    or not isinstance(entry[2], bytes) or len(entry[2]) != SIGNATURE_SIZE):
                raise MessageError("certificate entry must be [index, timestamp, sig(64)]")
            sigs.append(CommitSig(entry[0], entry[1], entry[2]))
        for a, b in zip(sigs, sigs[1:], strict=False):
            if b.validator <= a.validator:
                raise MessageError("certificate sigs must be sorted by validator, no repeats")
        cert = cls(m["height"], m["round"], m["block_id"], tuple(sigs))
        cert.votes()  # Vote's constructor checks every field's range
        return cert

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        try:
            return cls.from_map(encoding.decode(data, max_size=256 * 1024))
        except encoding.EncodingError as exc:
            raise MessageError(str(exc)) from exc

    def votes(self) -> list[Vote]:
        """The precommit votes this certificate is made of."""
        return [
            Vote(VoteType.PRECOMMIT, self.height, self.round, self.block_id, s.timestamp,
                 s.validator, s.sig)
            for s in self.sigs
        ]

    @classmethod
    def from_votes(cls, votes: list[Vote]) -> CommitCertificate:
        """Build a certificate from precommits for one (height, round, block)."""
        if not votes:
            raise MessageError("no votes")
        first = votes[0]
        by_index: dict[int, Vote] = {}
        for v in votes:
            if (v.type != VoteType.PRECOMMIT or v.height != first.height
                    or v.round != first.round or v.block_id != first.block_id
                    or v.block_id is None):
                raise MessageError("votes are not precommits for one block")
            by_index.setdefault(v.validator, v)
        sigs = tuple(
            CommitSig(i, by_index[i].timestamp, by_index[i].sig) for i in sorted(by_index)
        )
        return cls(first.height, first.round, first.block_id, sigs)


def verify_certificate(
    cert: CommitCertificate,
    chain_id: str,
    validators: ValidatorSet,
    height: int | None = None,
    block_id: bytes | None = None,
) -> tuple[bool, str]:
    """Check a certificate; return ``(True, "ok")`` or ``(False, reason)``."""
    if height is not None and cert.height != height:
        return False, f"certificate is for height {cert.height}, expected {height}"
    if block_id is not None and cert.block_id != block_id:
        return False, "certificate is for a different block id"
    power = 0
    seen: set[int] = set()
    try:
        votes = cert.votes()
    except MessageError as exc:
        return False, f"malformed certificate: {exc}"
    for vote in votes:
        if vote.validator in seen:
            return False, f"validator {vote.validator} signs twice"
        seen.add(vote.validator)
        if not 0 <= vote.validator < len(validators):
            return False, f"validator index {vote.validator} is not in the set"
        if not vote.verify(chain_id, validators):
            return False, f"bad signature from validator {vote.validator}"
        power += validators[vote.validator].power
    if not validators.has_quorum(power):
        return False, f"signed power {power} of {validators.total_power} is not more than 2/3"
    return True, "ok"


def weighted_median_time(cert: CommitCertificate, validators: ValidatorSet) -> int:
    """The power-weighted median of the certificate's timestamps (BFT time).

    Entries are sorted by (timestamp, validator index); the median is the timestamp of the
    first entry at which the running power times two reaches the signed total.
    """
    entries = sorted(
        (s.timestamp, s.validator, validators[s.validator].power) for s in cert.sigs
    )
    total = sum(p for _, _, p in entries)
    running = 0
    for ts, _, p in entries:
        running += p
        if 2 * running >= total:
            return ts
    raise MessageError("empty certificate")  # pragma: no cover - from_map refuses empty
