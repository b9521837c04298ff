"""The validator set: public keys with voting power, in genesis order.

A validator is referred to by its index in this order (votes and certificates carry the
index, not the key). Voting power is a positive integer; a quorum is strictly more than
two thirds of the total power.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chain import encoding
from chain.crypto import PUBLIC_KEY_SIZE, PublicKey
from chain.hashing import sha256

MAX_VALIDATORS = 1000
MAX_POWER = 1 << 40


class ValidatorSetError(ValueError):
    """A validator set is malformed."""


@dataclass(frozen=True)
class Validator:
    pub_key: bytes
    power: int
    name: str = ""
    node_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pub_key, bytes) or len(self.pub_key) != PUBLIC_KEY_SIZE:
            raise ValidatorSetError("validator key must be 32 bytes")
        if (not isinstance(self.power, int) or isinstance(self.power, bool)
                or not 1 <= self.power <= MAX_POWER):
            raise ValidatorSetError(f"validator power must be 1..{MAX_POWER}")
        if self.node_key is not None and len(self.node_key) != PUBLIC_KEY_SIZE:
            raise ValidatorSetError("node key must be 32 bytes")

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(self.pub_key)


class ValidatorSet:
    """An ordered, immutable set of validators."""

    def __init__(self, validators: Iterable[Validator]) -> None:
        self.validators: tuple[Validator, ...] = tuple(validators)
        if not self.validators:
            raise ValidatorSetError("validator set is empty")
        if len(self.validators) > MAX_VALIDATORS:
            raise ValidatorSetError(f"more than {MAX_VALIDATORS} validators")
        self._index = {v.pub_key: i for i, v in enumerate(self.validators)}
        if len(self._index) != len(self.validators):
            raise ValidatorSetError("duplicate validator key")
        self.total_power = sum(v.power for v in self.validators)
        self._keys = [PublicKey(v.pub_key) for v in self.validators]

    def __len__(self) -> int:
        return len(self.validators)

    def __getitem__(self, index: int) -> Validator:
        return self.validators[index]

    def index_of(self, pub_key: bytes) -> int | None:
        return self._index.get(pub_key)

    def public_key(self, index: int) -> PublicKey:
        return self._keys[index]

    def has_quorum(self, power: int) -> bool:
        """True if ``power`` is strictly more than two thirds of the total."""
        return 3 * power > 2 * self.total_power

    def exceeds_one_third(self, power: int) -> bool:
        """True if ``power`` is strictly more than one third (f+1 by power)."""
        return 3 * power > self.total_power

    def power_of(self, indices: Sequence[int]) -> int:
        return sum(self.validators[i].power for i in set(indices))

    def hash(self) -> bytes:
        """sha256 of encode([[pub_key, power], ...]) in set order."""
        return sha256(encoding.encode([[v.pub_key, v.power] for v in self.validators]))
