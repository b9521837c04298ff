"""A dict-backed ``State`` for tests and tools, and the write overlay used per transaction.

``Overlay`` buffers writes over a base state so a transaction is all-or-nothing: the rules
write into the overlay, and the application either ``commit()``s it to the base (in sorted
key order, so every backend sees the same sequence) or drops it.
"""

from __future__ import annotations

from contracts.records import State

_DELETED = object()


class MemState:
    """The simplest State: a dict of bytes to bytes."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("keys and values must be bytes")
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def snapshot(self) -> bytes:
        """All state as one deterministic byte string (for determinism tests)."""
        out = bytearray()
        for k in sorted(self.data):
            v = self.data[k]
            out += len(k).to_bytes(4, "big") + k + len(v).to_bytes(4, "big") + v
        return bytes(out)


class Overlay:
    """Buffered writes over ``base``; reads see the buffer first."""

    def __init__(self, base: State) -> None:
        self.base = base
        self.writes: dict[bytes, object] = {}

    def get(self, key: bytes) -> bytes | None:
        v = self.writes.get(key)
        if v is None:
            return self.base.get(key)
        return None if v is _DELETED else v  # type: ignore[return-value]

    def set(self, key: bytes, value: bytes) -> None:
        self.writes[key] = value

    def delete(self, key: bytes) -> None:
        self.writes[key] = _DELETED

    def commit(self) -> None:
        for key in sorted(self.writes):
            v = self.writes[key]
            if v is _DELETED:
                self.base.delete(key)
            else:
                self.base.set(key, v)  # type: ignore[arg-type]
        self.writes.clear()
