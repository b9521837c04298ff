"""Typed messages carried inside frames, and the registry of message types.

Every message (after the handshake, inside an encrypted frame) is the canonical msgpack
encoding (``chain.encoding``) of a two-element array ``[type, body]``: ``type`` is text,
``body`` is any canonical value. The p2p layer knows only a type's name, its maximum
encoded size, its send priority, whether it is gossip (de-duplicated by hash) and a cheap
shape check of the body; what a body means is the node's business (see docs/p2p.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from chain import encoding
from chain.block import MAX_BLOCK_SIZE
from chain.tx import MAX_TX_SIZE
from p2p.errors import MessageError

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_KIB = 1024


class Priority(IntEnum):
    """Send priority: lower value leaves first. Only GOSSIP may be dropped when full."""

    CONTROL = 0  # ping, pong, bye
    CONSENSUS = 1  # proposals, votes, evidence
    SYNC = 2  # status, block requests and responses
    GOSSIP = 3  # transactions: droppable under backpressure, the mempool re-gossips


BodyCheck = Callable[[Any], bool]


def _is(kind: type | tuple[type, ...]) -> BodyCheck:
    return lambda body: isinstance(body, kind) and not isinstance(body, bool)


def _uint(body: Any) -> bool:
    return isinstance(body, int) and not isinstance(body, bool) and 0 <= body < 1 << 64


def _bytes_list(body: Any) -> bool:
    return (isinstance(body, list) and 0 < len(body) <= 10_000
            and all(isinstance(b, bytes) for b in body))


def _bye(body: Any) -> bool:
    return (isinstance(body, dict) and set(body) == {"message", "reason"}
            and isinstance(body["reason"], str) and isinstance(body["message"], str))


@dataclass(frozen=True)
class MessageSpec:
    """What the p2p layer needs to know about one message type."""

    name: str
    max_size: int  # bytes of the encoded [type, body] envelope
    priority: Priority
    gossip: bool = False  # de-duplicate by sha256 of the envelope; broadcast marks it seen
    check: BodyCheck | None = None  # cheap shape check of the body; False = invalid

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TYPE_RE.match(self.name):
            raise ValueError(f"invalid message type name {self.name!r}")
        if not isinstance(self.max_size, int) or self.max_size < 8:
            raise ValueError("max_size must be an integer >= 8")
        object.__setattr__(self, "priority", Priority(self.priority))


PING = "ping"
PONG = "pong"
BYE = "bye"
# Types the p2p layer handles itself; the node cannot register handlers for them.
CONTROL_TYPES = frozenset({PING, PONG, BYE})

DEFAULT_SPECS: tuple[MessageSpec, ...] = (
    MessageSpec(PING, 32, Priority.CONTROL, check=_uint),
    MessageSpec(PONG, 32, Priority.CONTROL, check=_uint),
    MessageSpec(BYE, 1 * _KIB, Priority.CONTROL, check=_bye),
    MessageSpec("tx", MAX_TX_SIZE + 64, Priority.GOSSIP, gossip=True, check=_is(bytes)),
    MessageSpec("txs", 1024 * _KIB, Priority.GOSSIP, gossip=True, check=_bytes_list),
    MessageSpec("proposal", MAX_BLOCK_SIZE + 64 * _KIB, Priority.CONSENSUS, gossip=True,
                check=_is(dict)),
    MessageSpec("vote", 4 * _KIB, Priority.CONSENSUS, gossip=True, check=_is(dict)),
    MessageSpec("evidence", 8 * _KIB, Priority.CONSENSUS, gossip=True, check=_is(dict)),
    MessageSpec("status", 4 * _KIB, Priority.SYNC, check=_is(dict)),
    MessageSpec("block_request", 1 * _KIB, Priority.SYNC, check=_is(dict)),
    MessageSpec("block_response", MAX_BLOCK_SIZE + 512 * _KIB, Priority.SYNC,
                check=_is(dict)),
)


class MessageRegistry:
    """The message types a network speaks: name -> spec. Extensible by the node."""

    def __init__(self, specs: Iterable[MessageSpec] = DEFAULT_SPECS) -> None:
        self._specs: dict[str, MessageSpec] = {}
        for spec in specs:
            self.register(spec, replace=True)

    def register(self, spec: MessageSpec, replace: bool = False) -> None:
        """Add a type (or change a known one's limits when ``replace``)."""
        if spec.name in self._specs and not replace:
            raise ValueError(f"message type {spec.name!r} already registered")
        self._specs[spec.name] = spec

    def get(self, name: str) -> MessageSpec:
        try:
            return self._specs[name]
        except (KeyError, TypeError):
            raise MessageError("unknown_type", f"unknown message type {name!r}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    @property
    def max_size(self) -> int:
        return max(s.max_size for s in self._specs.values())

    def encode(self, name: str, body: Any) -> tuple[MessageSpec, bytes]:
        """Encode an outgoing message; refuse unknown types, bad bodies and oversize."""
        spec = self.get(name)
        if spec.check is not None and not spec.check(body):
            raise MessageError("bad_body", f"body of {name!r} has the wrong shape")
        try:
            payload = encoding.encode([name, body])
        except encoding.EncodingError as exc:
            raise MessageError("bad_body", f"body of {name!r} is not encodable: {exc}") from exc
        if len(payload) > spec.max_size:
            raise MessageError("too_large", f"{name!r} message of {len(payload)} bytes "
                                            f"exceeds limit of {spec.max_size}")
        return spec, payload

    def decode(self, payload: bytes) -> tuple[MessageSpec, Any]:
        """Decode an incoming envelope; every failure is a typed ``MessageError``."""
        try:
            value = encoding.decode(payload, max_size=self.max_size)
        except encoding.EncodingError as exc:
            raise MessageError("bad_encoding", f"message is not canonical msgpack: {exc}") \
                from exc
        if not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], str):
            raise MessageError("bad_envelope", "message must be a [type, body] array")
        name, body = value
        spec = self.get(name)
        if len(payload) > spec.max_size:
            raise MessageError("too_large", f"{name!r} message of {len(payload)} bytes "
                                            f"exceeds limit of {spec.max_size}")
        if spec.check is not None and not spec.check(body):
            raise MessageError("bad_body", f"body of {name!r} has the wrong shape")
        return spec, body
