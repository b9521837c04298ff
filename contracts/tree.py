"""The authenticated state: a compressed binary sparse Merkle tree over all contract state.

Writes (``set``/``delete``) only go into an overlay dict; nothing is hashed until
``commit(batch)``, which sorts the dirty keys by key hash and rebuilds each touched path
once, so the top of the tree is hashed once per block rather than once per write. Commit
does not write by itself: it stages its node writes into the caller's ``Batch`` so the
node can write block, certificate, state and receipts in one atomic synced batch.

Storage layout under the tree's KV view (docs/state.md has the byte-level description):

* ``b"n" + hash`` -> node. Inner: ``0x01 ‖ left ‖ right`` (65 bytes, exactly the hash
  preimage). Leaf: ``0x00 ‖ key_hash ‖ value_hash ‖ value`` (its hash covers the first 65
  bytes). Nodes are content-addressed and never deleted, so every committed root stays
  readable (no pruning yet).
* ``b"v" + key`` -> value: a flat copy of the latest committed state for O(1) reads, valid
  for the root stored under ``b"m"``. A tree opened at any other root reads by walking
  the nodes instead and leaves the flat copy alone.

Savepoints (``checkpoint``/``rollback``/``release``) are undo logs over the overlay, so
the rules can make each transaction all-or-nothing at the cost of one dict entry per
first write of a key inside the savepoint.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from hashlib import sha256
from itertools import islice
from operator import itemgetter

from contracts.kv import KV, Batch
from contracts.proof import EMPTY, Proof, bit

NODE_PREFIX = b"n"
ROOT_PREFIX = b"r"
POS_BYTES = 4
# _POS_MASK[d] keeps the top d bits of a 32-bit position
_POS_MASK = [(0xFFFFFFFF << (32 - d)) & 0xFFFFFFFF for d in range(33)]
VALUE_PREFIX = b"v"
META_ROOT_KEY = b"m"

DEFAULT_NODE_CACHE = 150_000
# inner nodes above this depth are cached without eviction: at most 2**TOP_DEPTH - 1 of
# them are current (~70 MB when full), and they are on every path, so an update only reads
# the few nodes below (which sit in one LevelDB block, see _pos)
TOP_DEPTH = 18
_TOP_CAP = 1 << (TOP_DEPTH + 1)
DEFAULT_VALUE_CACHE = 100_000
MAX_UNWRITTEN = 2

_MISS = object()
_EMPTY_KIND, _LEAF_KIND, _INNER_KIND, _UNKNOWN = 0, 1, 2, 3
_first = itemgetter(0)


class StateError(ValueError):
    """Bad argument or misuse of the state tree (wrong type, unknown root, bad savepoint)."""


class StateTree:
    """Authenticated key-value state over a ``KV`` view. Keys and values are ``bytes``."""

    def __init__(
        self,
        kv: KV,
        root: bytes | None = None,
        *,
        node_cache: int = DEFAULT_NODE_CACHE,
        value_cache: int = DEFAULT_VALUE_CACHE,
    ) -> None:
        if root is None:
            root = EMPTY
        if type(root) is not bytes or len(root) != 32:
            raise StateError("root must be a 32-byte hash or None")
        self._kv = kv
        self._root = root
        self._pending: dict[bytes, bytes | None] = {}
        self._undo: list[dict[bytes, object]] = []
        # batches staged by recent commits that may not be written yet: (batch, root)
        self._staged: list[tuple[Batch, bytes]] = []
        self._nodes: dict[bytes, bytes] = {}
        self._top: dict[bytes, bytes] = {}
        self._values: dict[bytes, bytes | None] = {}
        self._node_cap = max(node_cache, 16)
        self._value_cap = max(value_cache, 16)
        # the flat value copy answers reads only if it reflects exactly this root
        self._flat = (kv.get(META_ROOT_KEY) or EMPTY) == root
        self._ops: dict[bytes, bytes | None] = {}
        self._node_prefix = NODE_PREFIX
        self._khs: list[bytes] = []
        self._rows: list[tuple[bytes, bytes | None]] = []
        self._root_kind = _EMPTY_KIND
        self._root_kh: bytes | None = None
        if root != EMPTY:
            desc = kv.get(ROOT_PREFIX + root)
            if desc is None:
                raise StateError(f"unknown state root {root.hex()}")
            if desc[0] == 0:
                self._root_kind, self._root_kh = _LEAF_KIND, desc[1:33]
            else:
                self._root_kind = _INNER_KIND

    @staticmethod
    def stored_root(kv: KV) -> bytes | None:
        """The root of the last commit written to ``kv`` (None if there was none)."""
        return kv.get(META_ROOT_KEY)

    # -- reads and writes --------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value of ``key``, uncommitted writes included (None if absent)."""
        try:
            v = self._pending.get(key, _MISS)
        except TypeError:  # unhashable: certainly not bytes
            raise StateError("key must be bytes") from None
        if v is not _MISS:
            return v  # type: ignore[return-value]
        v = self._values.get(key, _MISS)
        if v is not _MISS:
            return v  # type: ignore[return-value]
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        value = self._read_committed(key)
        values = self._values
        values[key] = value
        if len(values) > self._value_cap:
            _evict(values)
        return value

    def get_committed(self, key: bytes) -> bytes | None:
        """The value of ``key`` at the committed root (ignores uncommitted writes)."""
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        v = self._values.get(key, _MISS)
        if v is not _MISS:
            return v  # type: ignore[return-value]
        return self._read_committed(key)

    def set(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise StateError("key and value must be bytes")
        if self._undo:
            log = self._undo[-1]
            if key not in log:
                log[key] = self._pending.get(key, _MISS)
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        if self._undo:
            log = self._undo[-1]
            if key not in log:
                log[key] = self._pending.get(key, _MISS)
        self._pending[key] = None

    def root(self) -> bytes:
        """The committed root (uncommitted writes are not in it)."""
        return self._root

    @property
    def dirty(self) -> int:
        """How many keys have uncommitted writes."""
        return len(self._pending)

    # -- savepoints ----------------------------------------------------------------------

    def checkpoint(self) -> int:
        """Open a savepoint; returns its token for ``rollback``/``release``."""
        self._undo.append({})
        return len(self._undo)

    def rollback(self, token: int) -> None:
        """Undo every write since savepoint ``token`` was opened, and close it (and any
        savepoint opened after it)."""
        self._check_token(token)
        pending = self._pending
        while len(self._undo) >= token:
            for key, old in self._undo.pop().items():
                if old is _MISS:
                    pending.pop(key, None)
                else:
                    pending[key] = old  # type: ignore[assignment]

    def release(self, token: int) -> None:
        """Keep the writes since savepoint ``token`` and close it (and any later one)."""
        self._check_token(token)
        closing = self._undo[token - 1 :]
        del self._undo[token - 1 :]
        if self._undo:
            parent = self._undo[-1]
            for log in closing:  # oldest first: the earliest saved value must win
                for key, old in log.items():
                    parent.setdefault(key, old)

    @contextmanager
    def savepoint(self) -> Iterator[int]:
        """``with tree.savepoint():`` keeps the writes if the block ends normally and rolls
        them back if it raises."""
        token = self.checkpoint()
        try:
            yield token
        except BaseException:
            self.rollback(token)
            raise
        self.release(token)

    def _check_token(self, token: int) -> None:
        if type(token) is not int or not 1 <= token <= len(self._undo):
            raise StateError(f"no open savepoint {token!r}")

    def discard(self) -> None:
        """Drop every uncommitted write and savepoint."""
        self._pending = {}
        self._undo.clear()

    # -- commit --------------------------------------------------------------------------

    def commit(self, batch: Batch) -> bytes:
        """Hash the dirty paths, stage the new nodes (and the flat values) into ``batch``,
        and return the new root, which ``root()`` reports from now on.

        ``batch`` may come from any view of the tree's store. The caller writes the batches
        in commit order; until a batch is written the tree reads through it, and at most
        ``MAX_UNWRITTEN`` commits may be outstanding (so a writer thread can persist one
        block while the next is executed)."""
        if self._undo:
            raise StateError("cannot commit with an open savepoint")
        staged = self._kv.within(batch)
        pending = self._pending
        if not pending:
            return self._root
        self._forget_written()
        if len(self._staged) >= MAX_UNWRITTEN:
            raise StateError(f"{len(self._staged)} committed batches are not written yet")
        ops, base = staged.sink()
        node_prefix = base + NODE_PREFIX
        self._ops = ops
        self._node_prefix = node_prefix

        rows = []
        for key, value in pending.items():
            kh = sha256(key).digest()
            if value is None:
                rows.append((kh, None))
            else:
                head = b"\x00" + kh + sha256(value).digest()
                lh = sha256(head).digest()
                ops[node_prefix + kh[:POS_BYTES] + lh] = head + value
                rows.append((kh, lh))
        rows.sort(key=_first)
        self._khs = [r[0] for r in rows]
        self._rows = rows
        try:
            new_root, kind, kh = self._update(
                self._root, self._root_kind, self._root_kh, 0, 0, len(rows)
            )
        finally:
            self._khs = self._rows = None  # type: ignore[assignment]

        if self._flat:
            value_prefix = base + VALUE_PREFIX
            for key, value in pending.items():
                ops[value_prefix + key] = value
            ops[base + META_ROOT_KEY] = new_root
        if new_root != EMPTY:
            ops[base + ROOT_PREFIX + new_root] = b"\x01" if kind == _INNER_KIND else b"\x00" + kh
        values = self._values
        values.update(pending)
        if len(values) > self._value_cap:
            _evict(values)
        if len(self._nodes) > self._node_cap:
            _evict(self._nodes)
        if len(self._top) > _TOP_CAP:
            _evict(self._top)
        self._pending = {}
        self._root, self._root_kind, self._root_kh = new_root, kind, kh
        self._staged.append((staged, new_root))
        return new_root

    def _forget_written(self) -> None:
        """Stop reading through batches that are on disk (batches are written in commit
        order, so once one is, every older one is too)."""
        staged = self._staged
        for i in range(len(staged) - 1, -1, -1):
            root = staged[i][1]
            if root == EMPTY:
                written = not self._flat or self._kv.get(META_ROOT_KEY) == EMPTY
            else:
                written = self._kv.get(ROOT_PREFIX + root) is not None
            if written:
                del staged[: i + 1]
                return

    def _update(
        self, h: bytes, kind: int, lkh: bytes | None, depth: int, lo: int, hi: int
    ) -> tuple[bytes, int, bytes | None]:
        """New (hash, kind, key hash if a leaf) of the subtree ``h`` (of ``kind``; ``lkh``
        is its key hash if it is a leaf) at ``depth`` after applying rows[lo:hi]."""
        if kind == _INNER_KIND:
            pos = _pos(self._khs[lo], depth)
            rec = self._load(h, pos, depth)
            flags = rec[65]
            left = rec[1:33]
            right = rec[33:65]
            lkind = _EMPTY_KIND if left == EMPTY else (_LEAF_KIND if flags & 1 else _INNER_KIND)
            rkind = _EMPTY_KIND if right == EMPTY else (_LEAF_KIND if flags & 2 else _INNER_KIND)
            at = 66
            left_kh = right_kh = None
            if flags & 1:
                left_kh = rec[66:98]
                at = 98
            if flags & 2:
                right_kh = rec[at : at + 32]
            mid = self._split(depth, lo, hi)
            if mid > lo:
                left, lkind, left_kh = self._update(left, lkind, left_kh, depth + 1, lo, mid)
            if hi > mid:
                right, rkind, right_kh = self._update(right, rkind, right_kh, depth + 1, mid, hi)
            # the old version of this node is replaced: keep the caches to current nodes
            (self._top if depth < TOP_DEPTH else self._nodes).pop(h, None)
            if lkind == _EMPTY_KIND:
                if rkind == _EMPTY_KIND:
                    return EMPTY, _EMPTY_KIND, None
                if rkind == _LEAF_KIND:
                    return right, _LEAF_KIND, right_kh  # a lone leaf moves up
            elif rkind == _EMPTY_KIND and lkind == _LEAF_KIND:
                return left, _LEAF_KIND, left_kh
            return self._inner(
                left, lkind, left_kh, right, rkind, right_kh, pos, depth
            ), _INNER_KIND, None
        if kind == _EMPTY_KIND:
            return self._build_live(depth, lo, hi, None)
        khs = self._khs
        i = bisect_left(khs, lkh, lo, hi)
        if i < hi and khs[i] == lkh:
            return self._build_live(depth, lo, hi, None)  # this leaf is rewritten
        return self._build_live(depth, lo, hi, (lkh, h))

    def _split(self, depth: int, lo: int, hi: int) -> int:
        """First index in rows[lo:hi] (which share their first ``depth`` bits) whose bit
        ``depth`` is 1."""
        khs = self._khs
        byte = depth >> 3
        mask = 0x80 >> (depth & 7)
        if khs[lo][byte] & mask:
            return lo
        if not khs[hi - 1][byte] & mask:
            return hi
        first = khs[lo]
        # the smallest key hash with this prefix and bit `depth` set, as a short bytes
        # prefix: every hash >= it has the bit set
        threshold = first[:byte] + bytes(((first[byte] & (0xFF00 >> (depth & 7)) & 0xFF) | mask,))
        return bisect_left(khs, threshold, lo, hi)

    def _build_live(
        self, depth: int, lo: int, hi: int, extra: tuple[bytes, bytes] | None
    ) -> tuple[bytes, int, bytes | None]:
        """Build a fresh subtree at ``depth`` from the set rows in [lo, hi) plus ``extra``."""
        rows = self._rows
        if hi - lo == 1 and extra is None:
            kh, lh = rows[lo]
            return (EMPTY, _EMPTY_KIND, None) if lh is None else (lh, _LEAF_KIND, kh)
        live = [r for r in islice(rows, lo, hi) if r[1] is not None]
        if extra is not None:
            live.append(extra)
            live.sort(key=_first)
        return self._build(depth, live, 0, len(live))

    def _build(self, depth: int, live: list, lo: int, hi: int) -> tuple[bytes, int, bytes | None]:
        n = hi - lo
        if n == 1:
            kh, lh = live[lo]
            return lh, _LEAF_KIND, kh
        if n == 0:
            return EMPTY, _EMPTY_KIND, None
        byte = depth >> 3
        mask = 0x80 >> (depth & 7)
        first = live[lo][0]
        if first[byte] & mask:
            mid = lo
        elif not live[hi - 1][0][byte] & mask:
            mid = hi
        else:
            threshold = first[:byte] + bytes(
                ((first[byte] & (0xFF00 >> (depth & 7)) & 0xFF) | mask,)
            )
            mid = bisect_left(live, threshold, lo, hi, key=_first)
        # one-leaf and empty halves are common at the bottom: no call for them
        n = mid - lo
        if n == 1:
            lkh, left = live[lo]
            lkind = _LEAF_KIND
        elif n == 0:
            left, lkind, lkh = EMPTY, _EMPTY_KIND, None
        else:
            left, lkind, lkh = self._build(depth + 1, live, lo, mid)
        n = hi - mid
        if n == 1:
            rkh, right = live[mid]
            rkind = _LEAF_KIND
        elif n == 0:
            right, rkind, rkh = EMPTY, _EMPTY_KIND, None
        else:
            right, rkind, rkh = self._build(depth + 1, live, mid, hi)
        return self._inner(
            left, lkind, lkh, right, rkind, rkh, _pos(first, depth), depth
        ), _INNER_KIND, None

    def _inner(
        self,
        left: bytes,
        lkind: int,
        lkh: bytes | None,
        right: bytes,
        rkind: int,
        rkh: bytes | None,
        pos: bytes,
        depth: int,
    ) -> bytes:
        content = b"\x01" + left + right
        h = sha256(content).digest()
        # the stored record also says which children are leaves and their key hashes, so
        # an update never reads a leaf just to learn where it sits
        if lkind == _LEAF_KIND:
            rec = content + (b"\x03" + lkh + rkh if rkind == _LEAF_KIND else b"\x01" + lkh)
        elif rkind == _LEAF_KIND:
            rec = content + b"\x02" + rkh
        else:
            rec = content + b"\x00"
        self._ops[self._node_prefix + pos + h] = rec
        if depth < TOP_DEPTH:
            self._top[h] = rec
        else:
            self._nodes[h] = rec
        return h

    # -- reading nodes -------------------------------------------------------------------

    def _load(self, h: bytes, pos: bytes, depth: int) -> bytes:
        """The stored record of node ``h`` at ``depth`` and position ``pos`` (inner record,
        or leaf record with its value)."""
        cache = self._top if depth < TOP_DEPTH else self._nodes
        rec = cache.get(h)
        if rec is not None:
            return rec
        key = NODE_PREFIX + pos + h
        for batch, _ in reversed(self._staged):
            rec = batch.staged(key)[1]
            if rec is not None:
                break
        else:
            rec = self._kv.get(key)
        if rec is None:
            raise StateError(f"state node {h.hex()} is missing (unknown root or damaged store)")
        if rec[0] == 1:  # leaf records carry values: read them through, do not cache
            cache[h] = rec
            if len(cache) > (_TOP_CAP if depth < TOP_DEPTH else self._node_cap):
                _evict(cache)
        return rec

    def _walk(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        """Siblings along ``key``'s path at the committed root, and the leaf record where
        the path ends (None if it ends at an empty subtree)."""
        kh = sha256(key).digest()
        siblings: list[bytes] = []
        h, kind, leaf_kh = self._root, self._root_kind, self._root_kh
        depth = 0
        while kind == _INNER_KIND:
            rec = self._load(h, _pos(kh, depth), depth)
            flags = rec[65]
            if bit(kh, depth):
                siblings.append(rec[1:33])
                h = rec[33:65]
                if flags & 2:
                    kind = _LEAF_KIND
                    leaf_kh = rec[98:130] if flags & 1 else rec[66:98]
            else:
                siblings.append(rec[33:65])
                h = rec[1:33]
                if flags & 1:
                    kind = _LEAF_KIND
                    leaf_kh = rec[66:98]
            if h == EMPTY:
                kind = _EMPTY_KIND
            depth += 1
        if kind == _EMPTY_KIND:
            return siblings, None
        assert leaf_kh is not None
        return siblings, self._load(h, leaf_kh[:POS_BYTES], depth)

    def _read_committed(self, key: bytes) -> bytes | None:
        vkey = VALUE_PREFIX + key
        for batch, _ in reversed(self._staged):
            found, value = batch.staged(vkey)
            if found:
                return value
        if self._flat:
            return self._kv.get(VALUE_PREFIX + key)
        _, leaf = self._walk(key)
        if leaf is None or leaf[1:33] != sha256(key).digest():
            return None
        return leaf[65:]

    def prove(self, key: bytes) -> Proof:
        """A proof of ``key``'s committed value (or of its absence) against ``root()``."""
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        siblings, leaf = self._walk(key)
        return Proof(tuple(siblings), None if leaf is None else (leaf[1:33], leaf[33:65]))


def _pos(khash: bytes, depth: int) -> bytes:
    """Where a node at ``depth`` on ``khash``'s path is stored: the first ``depth`` bits of
    its path (at most 32), zero-padded to 4 bytes. A subtree's nodes thus sit together in
    key order, so a bulk load writes nearly sorted keys and a path's lower nodes share
    LevelDB blocks."""
    if depth >= 32:
        return khash[:POS_BYTES]
    return (int.from_bytes(khash[:POS_BYTES], "big") & _POS_MASK[depth]).to_bytes(POS_BYTES, "big")


def _evict(cache: dict) -> None:
    """Drop the oldest quarter of a cache (dicts keep insertion order): cheap FIFO."""
    for key in list(islice(cache, len(cache) // 4)):
        del cache[key]
