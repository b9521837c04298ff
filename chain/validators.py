"""The validator set: public keys with voting power, in genesis order.

A validator is referred to by its index in this order (votes and certificates carry the
index, not the key). Voting power is a positive integer; a quorum is strictly more than
two thirds of the total power.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.crypto import PUBLIC_KEY_SIZE, PublicKey
from chain.hashing import sha256

MAX_VALIDATORS = 1000
MAX_POWER = 1 << 40
MAX_NAME_LEN = 64
_RECORD_KEYS = frozenset({"name", "node_key", "operator", "power", "pub_key"})


class ValidatorSetError(ValueError):
    """A validator set is malformed."""


@dataclass(frozen=True)
class Validator:
    pub_key: bytes
    power: int
    name: str = ""
    node_key: bytes | None = None
    # the operator account: signs this validator's governance transactions
    # (docs/governance.md); a key distinct from the consensus key
    operator: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pub_key, bytes) or len(self.pub_key) != PUBLIC_KEY_SIZE:
            raise ValidatorSetError("validator key must be 32 bytes")
        if (not isinstance(self.power, int) or isinstance(self.power, bool)
                or not 1 <= self.power <= MAX_POWER):
            raise ValidatorSetError(f"validator power must be 1..{MAX_POWER}")
        for what in ("node_key", "operator"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, bytes)
                                      or len(value) != PUBLIC_KEY_SIZE):
                raise ValidatorSetError(f"{what} must be 32 bytes")
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_LEN:
            raise ValidatorSetError(f"validator name must be text of at most "
                                    f"{MAX_NAME_LEN} characters")

    def to_map(self) -> dict[str, Any]:
        """The record form kept in the state and served by ``/validators``."""
        return {"name": self.name, "node_key": self.node_key, "operator": self.operator,
                "power": self.power, "pub_key": self.pub_key}

    @classmethod
    def from_map(cls, m: Any) -> Validator:
        if not isinstance(m, dict) or set(m) != _RECORD_KEYS:
            raise ValidatorSetError(f"validator record must have fields {sorted(_RECORD_KEYS)}")
        return cls(m["pub_key"], m["power"], m["name"], m["node_key"], m["operator"])

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
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = self._hash = sha256(encoding.encode(
                [[v.pub_key, v.power] for v in self.validators]))
        return cached

    def to_maps(self) -> list[dict[str, Any]]:
        return [v.to_map() for v in self.validators]

    @classmethod
    def from_maps(cls, maps: Any) -> ValidatorSet:
        if not isinstance(maps, list):
            raise ValidatorSetError("a validator set is a list of validator records")
        return cls(Validator.from_map(m) for m in maps)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValidatorSet) and self.validators == other.validators

    def __hash__(self) -> int:
        return hash(self.validators)


def power_shift(old: ValidatorSet, new: ValidatorSet) -> tuple[int, int]:
    """(leaving, arriving): the power of ``old`` that is not in ``new`` (validators removed
    or reduced, keys rotated away) and the power of ``new`` that was not in ``old``."""
    before = {v.pub_key: v.power for v in old.validators}
    after = {v.pub_key: v.power for v in new.validators}
    leaving = sum(max(0, p - after.get(k, 0)) for k, p in before.items())
    arriving = sum(max(0, p - before.get(k, 0)) for k, p in after.items())
    return leaving, arriving


def transition_error(old: ValidatorSet, new: ValidatorSet) -> str | None:
    """Why a light client could not skip from ``old`` to ``new`` (None if it can): the
    power leaving must be under a third of ``old``'s total and the power arriving under a
    third of ``new``'s, so that more than a third of each set's power signs for both
    (docs/governance.md, "The one-third bound")."""
    leaving, arriving = power_shift(old, new)
    if 3 * leaving >= old.total_power:
        return (f"the change removes {leaving} of {old.total_power} voting power "
                f"(a third or more)")
    if 3 * arriving >= new.total_power:
        return (f"the change adds {arriving} of {new.total_power} voting power "
                f"(a third or more)")
    return None
