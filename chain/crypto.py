"""Ed25519 keys and domain-separated signatures.

Every signature in the system is over ``sign_bytes(domain, chain_id, payload)``:

    b"mutual-ledger/" ‖ domain tag (ASCII) ‖ 0x00 ‖ chain_id (ASCII) ‖ 0x00 ‖ payload

The domain tag names the role (transaction, proposal, prevote, precommit, peer handshake),
and the chain id names the network, so a signature made for one role or one chain never
verifies in another. Neither the tags nor a chain id may contain a NUL byte, which makes
the concatenation unambiguous.
"""

from __future__ import annotations

import re
from enum import StrEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32
SIGN_PREFIX = b"mutual-ledger/"
CHAIN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Domain(StrEnum):
    """Signature domains: one per role a signature can play."""

    TX = "tx/v1"
    PROPOSAL = "proposal/v1"
    PREVOTE = "prevote/v1"
    PRECOMMIT = "precommit/v1"
    HANDSHAKE = "handshake/v1"


class CryptoError(ValueError):
    """A key or signature is malformed."""


def check_chain_id(chain_id: str) -> str:
    """Return ``chain_id`` if it is valid (1-64 chars of ``[A-Za-z0-9._-]``), else raise."""
    if not isinstance(chain_id, str) or not CHAIN_ID_RE.match(chain_id):
        raise CryptoError(f"invalid chain id {chain_id!r}")
    return chain_id


def sign_bytes(domain: Domain, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes that are signed for ``payload`` in ``domain`` on ``chain_id``."""
    check_chain_id(chain_id)
    return SIGN_PREFIX + domain.value.encode() + b"\x00" + chain_id.encode() + b"\x00" + payload


class PublicKey:
    """An Ed25519 public key (32 raw bytes)."""

    __slots__ = ("raw", "_key")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != PUBLIC_KEY_SIZE:
            raise CryptoError("public key must be 32 bytes")
        self.raw = raw
        self._key: Ed25519PublicKey | None = None

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        try:
            return cls(bytes.fromhex(text))
        except (ValueError, TypeError) as exc:
            raise CryptoError(f"invalid public key hex {text!r}") from exc

    def hex(self) -> str:
        return self.raw.hex()

    def verify_raw(self, signature: bytes, message: bytes) -> bool:
        """True if ``signature`` is valid over the exact ``message`` bytes."""
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
            return False
        if self._key is None:
            try:
                self._key = Ed25519PublicKey.from_public_bytes(self.raw)
            except ValueError:
                return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify(self, domain: Domain, chain_id: str, payload: bytes, signature: bytes) -> bool:
        """True if ``signature`` is this key's signature of ``payload`` in ``domain``."""
        return self.verify_raw(signature, sign_bytes(domain, chain_id, payload))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"PublicKey({self.raw.hex()[:16]}…)"


class PrivateKey:
    """An Ed25519 private key, stored as its 32-byte seed."""

    __slots__ = ("_key", "seed", "public_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise CryptoError("private key seed must be 32 bytes")
        self.seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = PublicKey(raw)

    @classmethod
    def generate(cls) -> PrivateKey:
        key = Ed25519PrivateKey.generate()
        return cls(
            key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        )

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        try:
            return cls(bytes.fromhex(text))
        except (ValueError, TypeError) as exc:
            raise CryptoError("invalid private key hex") from exc

    def sign_raw(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def sign(self, domain: Domain, chain_id: str, payload: bytes) -> bytes:
        """Sign ``payload`` in ``domain`` on ``chain_id``."""
        return self.sign_raw(sign_bytes(domain, chain_id, payload))

    def __repr__(self) -> str:
        return f"PrivateKey(public={self.public_key.hex()[:16]}…)"
