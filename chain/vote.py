"""Signed consensus messages: prevotes, precommits and proposals.

A vote's signed payload is the canonical encoding of

    {"block_id": bin(32) | nil, "height": uint, "round": uint, "timestamp": uint (ms),
     "type": 1 (prevote) | 2 (precommit), "validator": uint (index in the set)}

signed in domain ``prevote/v1`` or ``precommit/v1``. ``block_id`` nil is a vote for nil.
A proposal's payload is

    {"block_id": bin(32), "height": uint, "pol_round": int (-1 = none), "round": uint,
     "timestamp": uint (ms), "validator": uint}

signed in domain ``proposal/v1``. The wire form of each is the payload map plus
``"sig": bin(64)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from chain import encoding
from chain.crypto import SIGNATURE_SIZE, Domain, PrivateKey
from chain.hashing import HASH_SIZE
from chain.validators import ValidatorSet

MAX_HEIGHT = (1 << 63) - 1
MAX_ROUND = 1 << 20


class MessageError(ValueError):
    """A consensus message is malformed or wrongly signed."""


class VoteType(IntEnum):
    PREVOTE = 1
    PRECOMMIT = 2

    @property
    def domain(self) -> Domain:
        return Domain.PREVOTE if self is VoteType.PREVOTE else Domain.PRECOMMIT


def _uint(name: str, value: Any, upper: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= upper:
        raise MessageError(f"{name} must be an integer in 0..{upper}")


def _block_id(value: Any, nullable: bool) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MessageError("block_id must be 32 bytes" + (" or nil" if nullable else ""))


class _SignedMessage:
    """What votes and proposals share: the wire map is the payload plus ``sig``, signed in
    the message's domain by the validator at index ``validator``."""

    NAME = "message"
    PAYLOAD_KEYS: frozenset[str] = frozenset()
    validator: int
    sig: bytes

    @property
    def domain(self) -> Domain:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def payload_map(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def sign_payload(self) -> bytes:
        return encoding.encode(self.payload_map())

    def to_map(self) -> dict[str, Any]:
        return {**self.payload_map(), "sig": self.sig}

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    @classmethod
    def _check_wire(cls, m: Any) -> None:
        keys = cls.PAYLOAD_KEYS | {"sig"}
        if not isinstance(m, dict) or set(m) != keys:
            raise MessageError(f"{cls.NAME} must be a map with fields {sorted(keys)}")
        if not isinstance(m["sig"], bytes) or len(m["sig"]) != SIGNATURE_SIZE:
            raise MessageError("signature must be 64 bytes")

    @classmethod
    def from_map(cls, m: Any) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Any:
        try:
            return cls.from_map(encoding.decode(data, max_size=512))
        except encoding.EncodingError as exc:
            raise MessageError(str(exc)) from exc

    def signed(self, key: PrivateKey, chain_id: str) -> Any:
        return replace(self, sig=key.sign(self.domain, chain_id, self.sign_payload()))

    def verify(self, chain_id: str, validators: ValidatorSet) -> bool:
        """True if the validator index exists and ``sig`` is that validator's signature."""
        if not 0 <= self.validator < len(validators) or len(self.sig) != SIGNATURE_SIZE:
            return False
        return validators.public_key(self.validator).verify(
            self.domain, chain_id, self.sign_payload(), self.sig
        )


def _check_sig_field(sig: Any) -> None:
    if not isinstance(sig, bytes) or len(sig) not in (0, SIGNATURE_SIZE):
        raise MessageError("signature must be 64 bytes")


@dataclass(frozen=True)
class Vote(_SignedMessage):
    type: VoteType
    height: int
    round: int
    block_id: bytes | None
    timestamp: int
    validator: int
    sig: bytes = b""

    NAME = "vote"
    PAYLOAD_KEYS = frozenset({"block_id", "height", "round", "timestamp", "type", "validator"})

    def __post_init__(self) -> None:
        if self.type not in (VoteType.PREVOTE, VoteType.PRECOMMIT):
            raise MessageError("vote type must be 1 (prevote) or 2 (precommit)")
        object.__setattr__(self, "type", VoteType(self.type))
        _uint("height", self.height, MAX_HEIGHT)
        _uint("round", self.round, MAX_ROUND)
        _uint("timestamp", self.timestamp, (1 << 63) - 1)
        _uint("validator", self.validator, 1 << 16)
        _block_id(self.block_id, nullable=True)
        _check_sig_field(self.sig)

    @property
    def domain(self) -> Domain:
        return self.type.domain

    def payload_map(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "height": self.height,
            "round": self.round,
            "timestamp": self.timestamp,
            "type": int(self.type),
            "validator": self.validator,
        }

    @classmethod
    def from_map(cls, m: Any) -> Vote:
        cls._check_wire(m)
        if m["type"] not in (1, 2) or isinstance(m["type"], bool):
            raise MessageError("vote type must be 1 (prevote) or 2 (precommit)")
        return cls(VoteType(m["type"]), m["height"], m["round"], m["block_id"],
                   m["timestamp"], m["validator"], m["sig"])


@dataclass(frozen=True)
class Proposal(_SignedMessage):
    height: int
    round: int
    pol_round: int
    block_id: bytes
    timestamp: int
    validator: int
    sig: bytes = b""

    NAME = "proposal"
    PAYLOAD_KEYS = frozenset({"block_id", "height", "pol_round", "round", "timestamp",
                              "validator"})

    def __post_init__(self) -> None:
        _uint("height", self.height, MAX_HEIGHT)
        _uint("round", self.round, MAX_ROUND)
        if (not isinstance(self.pol_round, int) or isinstance(self.pol_round, bool)
                or not -1 <= self.pol_round < self.round and self.pol_round != -1):
            raise MessageError("pol_round must be -1 or a round below the proposal's round")
        _uint("timestamp", self.timestamp, (1 << 63) - 1)
        _uint("validator", self.validator, 1 << 16)
        _block_id(self.block_id, nullable=False)
        _check_sig_field(self.sig)

    @property
    def domain(self) -> Domain:
        return Domain.PROPOSAL

    def payload_map(self) -> dict[str, Any]:
        return {
            "block_id": self.block_id,
            "height": self.height,
            "pol_round": self.pol_round,
            "round": self.round,
            "timestamp": self.timestamp,
            "validator": self.validator,
        }

    @classmethod
    def from_map(cls, m: Any) -> Proposal:
        cls._check_wire(m)
        return cls(m["height"], m["round"], m["pol_round"], m["block_id"], m["timestamp"],
                   m["validator"], m["sig"])
