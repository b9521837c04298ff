"""The signed transaction envelope.

A transaction is the canonical encoding of the map

    {"body": {...}, "chain_id": str, "nonce": uint, "sender": bin(32), "sig": bin(64),
     "type": str}

The signature covers ``sign_bytes(Domain.TX, chain_id, encode(map without "sig"))``. The
transaction id (hash) is ``sha256`` of the full signed encoding. What a body must contain
depends on the type and is checked by ``contracts``; the envelope only requires that it
is a map of canonical values. Nonces start at 1 and each sender's next transaction must
carry exactly the next nonce, so a transaction can never be replayed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from chain import encoding
from chain.crypto import (
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    CryptoError,
    Domain,
    PrivateKey,
    PublicKey,
    check_chain_id,
)
from chain.hashing import sha256

MAX_TX_SIZE = 32 * 1024
TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_NONCE = (1 << 64) - 1
_FIELDS = frozenset({"body", "chain_id", "nonce", "sender", "sig", "type"})


class TxError(ValueError):
    """A transaction is malformed (bad encoding, field, size or signature)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Transaction:
    """A decoded, structurally valid transaction. ``sig`` may be empty before signing."""

    chain_id: str
    type: str
    sender: bytes
    nonce: int
    body: dict[str, Any]
    sig: bytes = b""
    _encoded: bytes = field(default=b"", repr=False, compare=False)
    # set by ``decode``: the body came out of canonical bytes, so it is encodable
    _canonical_body: bool = field(default=False, repr=False, compare=False)
    _payload: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            check_chain_id(self.chain_id)
        except CryptoError as exc:
            raise TxError("bad_chain_id", str(exc)) from exc
        if not isinstance(self.type, str) or not TYPE_RE.match(self.type):
            raise TxError("bad_type", f"invalid transaction type {self.type!r}")
        if not isinstance(self.sender, bytes) or len(self.sender) != PUBLIC_KEY_SIZE:
            raise TxError("bad_sender", "sender must be a 32-byte public key")
        if (not isinstance(self.nonce, int) or isinstance(self.nonce, bool)
                or not 1 <= self.nonce <= MAX_NONCE):
            raise TxError("bad_nonce", "nonce must be an integer from 1 to 2**64-1")
        if not isinstance(self.body, dict):
            raise TxError("bad_body", "body must be a map")
        if not isinstance(self.sig, bytes) or len(self.sig) not in (0, SIGNATURE_SIZE):
            raise TxError("bad_signature", "signature must be 64 bytes")
        if not self._canonical_body:
            try:
                encoding.encode(self.body)
            except encoding.EncodingError as exc:
                raise TxError("bad_body", f"body is not canonically encodable: {exc}") from exc

    def unsigned_map(self) -> dict[str, Any]:
        return {
            "body": self.body,
            "chain_id": self.chain_id,
            "nonce": self.nonce,
            "sender": self.sender,
            "type": self.type,
        }

    def signing_payload(self) -> bytes:
        """The canonical bytes of the transaction without its signature."""
        if not self._payload:
            object.__setattr__(self, "_payload", encoding.encode(self.unsigned_map()))
        return self._payload

    def encode(self) -> bytes:
        """The canonical signed encoding (what goes on the wire and in blocks)."""
        if self._encoded:
            return self._encoded
        if not self.sig:
            raise TxError("bad_signature", "transaction is not signed")
        data = encoding.encode({**self.unsigned_map(), "sig": self.sig})
        object.__setattr__(self, "_encoded", data)
        return data

    @property
    def hash(self) -> bytes:
        """The transaction id: sha256 of the signed encoding."""
        return sha256(self.encode())

    def signed(self, key: PrivateKey) -> Transaction:
        """Return a copy signed by ``key`` (which must be the sender's)."""
        if key.public_key.raw != self.sender:
            raise TxError("bad_sender", "signing key is not the sender's key")
        sig = key.sign(Domain.TX, self.chain_id, self.signing_payload())
        return Transaction(self.chain_id, self.type, self.sender, self.nonce, self.body, sig)

    def verify_signature(self) -> bool:
        """True if ``sig`` is the sender's valid signature of this transaction."""
        if len(self.sig) != SIGNATURE_SIZE:
            return False
        return PublicKey(self.sender).verify(
            Domain.TX, self.chain_id, self.signing_payload(), self.sig
        )

    @classmethod
    def create(
        cls, key: PrivateKey, chain_id: str, type: str, nonce: int, body: dict[str, Any]
    ) -> Transaction:
        """Build and sign a transaction in one step."""
        return cls(chain_id, type, key.public_key.raw, nonce, body).signed(key)

    @classmethod
    def decode(cls, data: bytes, max_size: int = MAX_TX_SIZE) -> Transaction:
        """Decode canonical signed bytes. Does not verify the signature."""
        if len(data) > max_size:
            raise TxError("too_large", f"transaction of {len(data)} bytes exceeds {max_size}")
        try:
            value = encoding.decode(data, max_size=max_size)
        except encoding.EncodingError as exc:
            raise TxError("bad_encoding", str(exc)) from exc
        if not isinstance(value, dict) or set(value) != _FIELDS:
            raise TxError("bad_encoding", f"transaction must be a map with fields {sorted(_FIELDS)}")
        if not isinstance(value["sig"], bytes) or len(value["sig"]) != SIGNATURE_SIZE:
            raise TxError("bad_signature", "signature must be 64 bytes")
        if not isinstance(value["chain_id"], str) or not isinstance(value["type"], str):
            raise TxError("bad_encoding", "chain_id and type must be text")
        tx = cls(
            value["chain_id"], value["type"], value["sender"], value["nonce"], value["body"],
            value["sig"], _canonical_body=True,
        )
        object.__setattr__(tx, "_encoded", bytes(data))
        return tx

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly view (bytes as hex) for APIs and logs."""
        return {
            "hash": self.hash.hex(),
            "chain_id": self.chain_id,
            "type": self.type,
            "sender": self.sender.hex(),
            "nonce": self.nonce,
            "body": to_jsonable(self.body),
        }


def to_jsonable(value: Any) -> Any:
    """Recursively turn bytes into hex strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
