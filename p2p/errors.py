"""Typed errors of the peer layer, so callers can tell a bad peer from a bad connection."""

from __future__ import annotations


class P2PError(Exception):
    """Base class of every error raised by ``p2p``."""


class FrameError(P2PError):
    """The byte stream is not a valid sequence of frames (oversize, empty, or poisoned)."""


class SecureChannelError(P2PError):
    """A frame failed authenticated decryption (corrupted, injected or replayed bytes)."""


class MessageError(P2PError):
    """A decrypted frame is not a valid message envelope, or its type or size is wrong."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class HandshakeError(P2PError):
    """The handshake failed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class HandshakeRefused(HandshakeError):
    """We refuse the peer; ``reply`` is the reject message payload to send before closing."""

    @property
    def reply(self) -> bytes:
        from p2p.handshake import encode_reject

        return encode_reject(self.reason, self.message)


class PeerRefused(HandshakeError):
    """The peer refused us and told us why (a ``reject`` message)."""


class InvalidMessage(P2PError):
    """Raised by a message handler: the peer sent something invalid and is penalised.

    ``penalty`` points are subtracted from the peer's score; at the ban threshold
    (100 by default) the peer is disconnected and banned for a while.
    """

    def __init__(self, reason: str, penalty: int = 25) -> None:
        super().__init__(reason)
        if not isinstance(penalty, int) or penalty < 0:
            raise ValueError("penalty must be a non-negative integer")
        self.reason = reason
        self.penalty = penalty
