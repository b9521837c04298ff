"""The small key-value interface everything persistent goes through, and its in-memory backend.

A ``KV`` is a *view* of one store under a byte prefix. ``kv.prefixed(p)`` returns another
view of the same store, so the node keeps state, blocks, the WAL and receipts in one
LevelDB under separate prefixes. Writes go through a ``Batch``: it records operations under
absolute store keys, so one batch may span every view of a store and is applied atomically
by ``kv.write(batch, sync=...)`` from any of those views. ``kv.within(batch)`` re-targets a
batch at a view, which is how ``StateTree.commit`` stages its node writes into the batch
the node also fills with the block, its certificate and its receipts.

The in-memory backend (``MemoryKV``) is pure: no files, no clocks. The LevelDB backend
lives in ``node/store/kvstore.py``; both pass ``tests/test_kv_conformance.py``.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Protocol


class KVError(Exception):
    """Misuse of a KV store: wrong key/value type, closed store, foreign batch."""


class Store(Protocol):
    """What a backend provides, in absolute keys. Views add the prefixing."""

    def raw_get(self, key: bytes) -> bytes | None: ...

    def raw_iter(
        self, lower: bytes, upper: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def raw_write(self, ops: dict[bytes, bytes | None], sync: bool) -> None: ...

    def close(self) -> None: ...


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: unbounded)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def _check_bytes(what: str, value: object) -> None:
    if type(value) is not bytes:
        raise KVError(f"{what} must be bytes, not {type(value).__name__}")


class Batch:
    """An ordered set of puts and deletes, applied atomically by ``KV.write``.

    Keys are kept absolute (store prefix included); a later operation on the same key
    replaces an earlier one, which is exactly what applying them in order would leave.
    ``prefixed`` returns a view of the *same* batch under a longer prefix.
    """

    __slots__ = ("_store", "_prefix", "_ops")

    def __init__(self, store: Store, prefix: bytes, ops: dict[bytes, bytes | None]) -> None:
        self._store = store
        self._prefix = prefix
        self._ops = ops

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            _check_bytes("key", key)
            _check_bytes("value", value)
        self._ops[self._prefix + key] = value

    def delete(self, key: bytes) -> None:
        _check_bytes("key", key)
        self._ops[self._prefix + key] = None

    def prefixed(self, prefix: bytes) -> Batch:
        """This batch, seen under ``prefix`` (operations are shared)."""
        _check_bytes("prefix", prefix)
        return Batch(self._store, self._prefix + prefix, self._ops)

    def staged(self, key: bytes) -> tuple[bool, bytes | None]:
        """(True, value-or-None-for-delete) if ``key`` has a pending operation, else (False, None)."""
        full = self._prefix + key
        if full in self._ops:
            return True, self._ops[full]
        return False, None

    def sink(self) -> tuple[dict[bytes, bytes | None], bytes]:
        """(operations dict, absolute prefix): for hot loops that stage many writes.
        ``ops[prefix + key] = value`` (or ``None`` to delete) is what ``put`` does."""
        return self._ops, self._prefix

    def clear(self) -> None:
        """Drop every operation (in every view of this batch)."""
        self._ops.clear()

    def __len__(self) -> int:
        return len(self._ops)


class KV:
    """A view of a store under ``prefix``. Keys and values are ``bytes``."""

    __slots__ = ("_store", "_prefix", "_raw_get")

    def __init__(self, store: Store, prefix: bytes = b"") -> None:
        _check_bytes("prefix", prefix)
        self._store = store
        self._prefix = prefix
        self._raw_get = store.raw_get

    @property
    def prefix(self) -> bytes:
        """The absolute prefix of this view in its store."""
        return self._prefix

    def get(self, key: bytes) -> bytes | None:
        if type(key) is not bytes:
            _check_bytes("key", key)
        return self._raw_get(self._prefix + key)

    def iterate(
        self,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Yield ``(key, value)`` in key order for keys that start with ``prefix`` and lie in
        ``[start, stop)``; keys are relative to this view. The iteration sees the store as
        it was when the iterator was created."""
        _check_bytes("prefix", prefix)
        lower = prefix
        upper = prefix_upper_bound(prefix)
        if start is not None:
            _check_bytes("start", start)
            lower = max(lower, start)
        if stop is not None:
            _check_bytes("stop", stop)
            upper = stop if upper is None else min(upper, stop)
        if upper is not None and lower >= upper:
            return iter(())
        vp = self._prefix
        abs_upper = vp + upper if upper is not None else prefix_upper_bound(vp)
        inner = self._store.raw_iter(vp + lower, abs_upper, reverse)
        if not vp:
            return inner
        cut = len(vp)
        return ((k[cut:], v) for k, v in inner)

    def batch(self) -> Batch:
        """A new, empty batch whose keys are relative to this view."""
        return Batch(self._store, self._prefix, {})

    def within(self, batch: Batch) -> Batch:
        """``batch`` (from any view of the same store) re-targeted at this view."""
        self._check_batch(batch)
        return Batch(self._store, self._prefix, batch._ops)

    def write(self, batch: Batch, sync: bool = False) -> None:
        """Apply every operation of ``batch`` atomically; ``sync`` waits for the disk."""
        self._check_batch(batch)
        self._store.raw_write(batch._ops, sync)

    def prefixed(self, prefix: bytes) -> KV:
        """A view of the same store under ``self.prefix + prefix``."""
        _check_bytes("prefix", prefix)
        return KV(self._store, self._prefix + prefix)

    def close(self) -> None:
        """Close the underlying store (every view of it)."""
        self._store.close()

    def _check_batch(self, batch: Batch) -> None:
        if not isinstance(batch, Batch):
            raise KVError("not a Batch")
        if batch._store is not self._store:
            raise KVError("batch belongs to another store")

    def __enter__(self) -> KV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _MemoryStore:
    """A dict plus a lazily maintained sorted key list for range iteration."""

    __slots__ = ("data", "_sorted", "closed")

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] | None = None
        self.closed = False

    def raw_get(self, key: bytes) -> bytes | None:
        if self.closed:
            raise KVError("store is closed")
        return self.data.get(key)

    def raw_iter(
        self, lower: bytes, upper: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        if self.closed:
            raise KVError("store is closed")
        if self._sorted is None:
            self._sorted = sorted(self.data)
        keys = self._sorted
        i = bisect_left(keys, lower)
        j = len(keys) if upper is None else bisect_left(keys, upper)
        data = self.data
        # a snapshot, like a LevelDB iterator: later writes are not seen
        items = [(k, data[k]) for k in keys[i:j]]
        if reverse:
            items.reverse()
        return iter(items)

    def raw_write(self, ops: dict[bytes, bytes | None], sync: bool) -> None:
        if self.closed:
            raise KVError("store is closed")
        data = self.data
        keys = self._sorted
        # keep the sorted list when a write touches few keys; rebuild lazily otherwise
        if keys is not None and len(ops) > 64:
            self._sorted = keys = None
        for k, v in ops.items():
            if v is None:
                if k in data:
                    del data[k]
                    if keys is not None:
                        del keys[bisect_left(keys, k)]
            else:
                if keys is not None and k not in data:
                    insort(keys, k)
                data[k] = v

    def close(self) -> None:
        self.closed = True


class MemoryKV(KV):
    """A KV held in a Python dict: for tests, tools and the auditor's scratch state."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_MemoryStore(), b"")

    def __len__(self) -> int:
        return len(self._store.data)  # type: ignore[attr-defined]
