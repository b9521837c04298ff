"""The encrypted, authenticated channel that follows a successful handshake.

Both sides derive two 32-byte keys from their ephemeral X25519 shared secret with
HKDF-SHA256 (salt = handshake transcript hash, info = ``KEY_INFO``): the first 32 bytes
encrypt dialer -> listener, the next 32 listener -> dialer. Every frame payload after the
handshake is ``ChaCha20-Poly1305(key, nonce, plaintext)`` (ciphertext ‖ 16-byte tag) with
a 12-byte nonce of 4 zero bytes and the 8-byte big-endian count of frames sent before it in
that direction. A replayed, reordered, dropped or altered frame therefore fails to open.

Why encrypt at all: a signature over the handshake alone does not stop someone on the path
from taking over the TCP stream after it; binding the signature to ephemeral keys and
sealing every frame does, and keeps the allow-list meaningful.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from p2p.errors import HandshakeRefused, SecureChannelError

KEY_INFO = b"mutual-ledger/p2p/v1/keys"
TAG_SIZE = 16
_MAX_COUNTER = (1 << 64) - 1


class CipherState:
    """One direction of the channel: a key and the count of frames sealed or opened."""

    __slots__ = ("_aead", "counter")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("channel key must be 32 bytes")
        self._aead = ChaCha20Poly1305(key)
        self.counter = 0

    def _nonce(self) -> bytes:
        if self.counter >= _MAX_COUNTER:
            raise SecureChannelError("frame counter exhausted; reconnect")
        return b"\x00\x00\x00\x00" + self.counter.to_bytes(8, "big")

    def seal(self, plaintext: bytes) -> bytes:
        out = self._aead.encrypt(self._nonce(), plaintext, None)
        self.counter += 1
        return out

    def open(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) <= TAG_SIZE:
            raise SecureChannelError("frame shorter than its authentication tag")
        try:
            out = self._aead.decrypt(self._nonce(), ciphertext, None)
        except InvalidTag:
            raise SecureChannelError("frame failed authentication") from None
        self.counter += 1
        return out


class Ephemeral:
    """A one-connection X25519 key pair (inject ``seed`` to make tests reproducible)."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._key = (X25519PrivateKey.generate() if seed is None
                     else X25519PrivateKey.from_private_bytes(seed))
        self.public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def shared_secret(self, peer_public: bytes) -> bytes:
        try:
            return self._key.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError as exc:  # wrong length or a low-order point (all-zero secret)
            raise HandshakeRefused("bad_hello", f"unusable ephemeral key: {exc}") from exc


def derive_ciphers(shared: bytes, transcript: bytes, dialer: bool) -> tuple[CipherState,
                                                                           CipherState]:
    """Return (send, receive) cipher states for the dialer or the listener side."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=transcript,
               info=KEY_INFO).derive(shared)
    to_listener, to_dialer = okm[:32], okm[32:]
    if dialer:
        return CipherState(to_listener), CipherState(to_dialer)
    return CipherState(to_dialer), CipherState(to_listener)
