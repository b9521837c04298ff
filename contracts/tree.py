"""The authenticated state: a compressed binary sparse Merkle tree over all contract state.

Writes (``set``/``delete``) only go into a pending dict; nothing is hashed until
``commit(batch)``, which sorts the dirty keys by key hash and rebuilds each touched path
once, so the top of the tree is hashed once per block rather than once per write. Commit
does not write by itself: it stages its writes into the caller's ``Batch`` so the node can
write block, certificate, state and receipts in one atomic synced batch. The commit's tree
work runs in C where the extension is built (``contracts/_treecore.c``);
``contracts/treecommit.py`` is the pure-Python reference it must match byte for byte, and
the fallback. The record format is ``contracts/treerecord.py``; this module is the tree
itself: reads, the pending writes, commit, pruning and proofs.

The tree is binary (docs/state.md §1: hashes, proofs and roots are the binary ones) but it
is *stored* in groups of four levels: one record holds the 30 binary nodes below an inner
node at a depth that is a multiple of 4 (like Jellyfish's 16-ary nodes, except that the
hashes inside stay binary, so proofs stay binary and small). A changed key therefore
rewrites about log16(N) records instead of log2(N), and an update reads one record per
four levels. Storage layout under the tree's KV view (docs/state.md §3, byte for byte):

* ``b"n" + pos + hash`` -> a group (``0x02 ‖ masks ‖ slot hashes ‖ leaf key hashes``) or
  a leaf (``0x00 ‖ key_hash ‖ value_hash ‖ value``). Content-addressed. An archive tree
  (``keep=None``, the default: the auditor's replay, archive nodes) deletes none, so every
  committed root stays readable. A pruning tree (``keep=K``: the node, with ``[storage]
  state_history``) keeps the last K committed roots readable: in each commit's own batch
  it deletes the records that only older roots reference.
* ``b"r" + root`` -> what kind of node a committed root is (deleted when the root is pruned).
* ``b"v" + key`` -> value: a flat copy of the latest committed state for O(1) reads, valid
  for the root stored under ``b"m"``. A tree opened at any other root reads by walking
  the groups instead and leaves the flat copy alone.
* only in a pruning store: ``b"s" + version`` -> the records that commit made stale (its
  stale list), deleted together K - 1 commits later; ``b"p"`` -> the last version.
"""

from __future__ import annotations

from collections import deque
from hashlib import sha256
from itertools import islice
from typing import Any

from contracts.kv import KV, Batch
from contracts.proof import EMPTY, Proof
from contracts.treecommit import ReferenceCommit
from contracts.treerecord import (
    EDGE,
    GROUP_LEVELS,
    GROUP_TAG,
    LEAF_TAG,
    META_ROOT_KEY,
    NODE_PREFIX,
    POS_BYTES,
    ROOT_PREFIX,
    SLOTS,
    STALE_PREFIX,
    VALUE_PREFIX,
    VERSION_KEY,
    StateError,
    _decode,
    _pack_keys,
    _pos,
    _unpack_keys,
    node_record_ok_reference,
)

try:  # the same commit in C (contracts/_treecore.c); optional, see setup.py
    from contracts import _treecore
except ImportError:  # pragma: no cover - only where the extension could not be built
    _treecore = None  # type: ignore[assignment]

NATIVE_AVAILABLE = _treecore is not None

# the tree's names, and those of the record format that callers import from here
__all__ = [
    "DEFAULT_NODE_CACHE", "DEFAULT_VALUE_CACHE", "EDGE", "GROUP_LEVELS", "GROUP_TAG",
    "LEAF_TAG", "MAX_UNWRITTEN", "META_ROOT_KEY", "NATIVE_AVAILABLE", "NODE_PREFIX",
    "POS_BYTES", "ROOT_PREFIX", "SLOTS", "STALE_PREFIX", "TOP_DEPTH", "VALUE_PREFIX",
    "VERSION_KEY", "GroupCache", "StateError", "StateTree", "node_record_ok",
    "node_record_ok_reference",
]

# deep group records (depth >= TOP_DEPTH) are cached in FIFO order, ~290 bytes each in the
# C cache: a million members make ~730,000 of them (~200 MB), so the default holds them
# all and an update at that size reads no group from LevelDB (with 600,000, whose misses
# each cost a LevelDB read, deliver_tx ran ~35 % slower)
DEFAULT_NODE_CACHE = 1_000_000
# group records above TOP_DEPTH are cached without eviction: they are on every path (at
# most 1 + 16 + ... + 16**4 current ones, ~70 MB when all full), so an update reads at most
# the group or two below from LevelDB
TOP_DEPTH = 20
# values read through the flat copy, FIFO: the hot ones (counters, accounts, periods) are
# few, and at a million members 100,000 cost ~24 MB more for the same apply rate
DEFAULT_VALUE_CACHE = 20_000
MAX_UNWRITTEN = 2

_MISS = object()

# a group cache: hash -> record; _treecore.GroupCache or, without the extension, a dict
GroupCache = Any


def node_record_ok(address: bytes, rec: bytes) -> bool:
    """True iff ``rec`` is a well-formed node record whose hash is ``address`` (the last 32
    bytes of its key): a leaf whose value matches its value hash, or a group whose binary
    nodes hash to each other and to the address. For the auditor's integrity scan (in C
    where built; ``node_record_ok_reference`` is the Python it must match)."""
    if _treecore is not None and type(address) is bytes and type(rec) is bytes:
        return _treecore.record_ok(address, rec)
    return node_record_ok_reference(address, rec)


class StateTree(ReferenceCommit):
    """Authenticated key-value state over a ``KV`` view. Keys and values are ``bytes``."""

    def __init__(
        self,
        kv: KV,
        root: bytes | None = None,
        *,
        node_cache: int = DEFAULT_NODE_CACHE,
        value_cache: int = DEFAULT_VALUE_CACHE,
        native: bool | None = None,
        keep: int | None = None,
    ) -> None:
        """``native``: commit with the C core (None: where it is built; False: the pure-
        Python reference, e.g. to compare the two). Both give identical stores.

        ``keep``: None keeps every committed root readable (an archive). A positive int
        prunes: after each commit only the last ``keep`` roots stay readable, and records
        that only older roots reference are deleted in the commit's own batch. Give it
        only to the one tree that commits to a store; the store's pruning state lives in
        it (docs/state.md, "Pruning")."""
        if native and _treecore is None:
            raise StateError("the native state-tree core is not built (see setup.py)")
        if keep is not None and (type(keep) is not int or keep < 1):
            raise StateError("keep must be None or a positive int")
        self._native = _treecore if native is not False else None
        if root is None:
            root = EMPTY
        if type(root) is not bytes or len(root) != 32:
            raise StateError("root must be a 32-byte hash or None")
        self._kv = kv
        self._root = root
        self._pending: dict[bytes, bytes | None] = {}
        # batches staged by recent commits that may not be written yet: (batch, root)
        self._staged: list[tuple[Batch, bytes]] = []
        # group records above TOP_DEPTH, and deeper ones (FIFO): held in C where the
        # extension is built (~80 bytes less per record than a dict of bytes), else dicts
        self._top: GroupCache = self._native.GroupCache() if self._native else {}
        self._nodes: GroupCache = self._native.GroupCache() if self._native else {}
        self._values: dict[bytes, bytes | None] = {}
        self._node_cap = max(node_cache, 16)
        self._value_cap = max(value_cache, 16)
        # the flat value copy answers reads only if it reflects exactly this root
        self._flat = (kv.get(META_ROOT_KEY) or EMPTY) == root
        self._ops: dict[bytes, bytes | None] = {}
        self._node_prefix = NODE_PREFIX
        self._khs: list[bytes] = []
        self._rows: list[tuple[bytes, bytes | None]] = []
        self._root_kh: bytes | None = None   # the root's key hash if it is a leaf
        self._keep = keep
        self._replaced: list[bytes] | None = None  # filled by a pruning commit
        self._version = 0
        self._stale: dict[int, set[bytes]] = {}   # version -> store keys it made stale
        self._stale_at: dict[bytes, int] = {}     # store key -> the version above
        # an archive tree drops a pruning tree's pending stale lists at its first commit
        self._lists_checked = keep is not None
        if keep is not None:
            self._load_stale()
        if root != EMPTY:
            desc = kv.get(ROOT_PREFIX + root)
            if desc is None:
                raise StateError(f"unknown state root {root.hex()}")
            if desc[0] == 0:
                self._root_kh = desc[1:33]

    @staticmethod
    def stored_root(kv: KV) -> bytes | None:
        """The root of the last commit written to ``kv`` (None if there was none)."""
        return kv.get(META_ROOT_KEY)

    # -- reads and writes ----------------------------------------------------------------

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
        self._pending[key] = value

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        self._pending[key] = None

    def root(self) -> bytes:
        """The committed root (uncommitted writes are not in it)."""
        return self._root

    @property
    def dirty(self) -> int:
        """How many keys have uncommitted writes."""
        return len(self._pending)

    def discard(self) -> None:
        """Drop every uncommitted write."""
        self._pending = {}

    # -- commit --------------------------------------------------------------------------

    def commit(self, batch: Batch) -> bytes:
        """Hash the dirty paths, stage the new nodes (and the flat values) into ``batch``,
        and return the new root, which ``root()`` reports from now on.

        ``batch`` may come from any view of the tree's store. The caller writes the batches
        in commit order; until a batch is written the tree reads through it, and at most
        ``MAX_UNWRITTEN`` commits may be outstanding (so a writer thread can persist one
        block while the next is executed)."""
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

        old_root = self._root
        replaced = self._replaced = [] if self._keep is not None else None
        try:
            if self._native is not None:
                new_root, kh = self._commit_native(pending, ops, node_prefix)
            else:
                new_root, kh = self._commit_python(pending, ops, node_prefix)
        finally:
            self._replaced = None

        if self._flat:
            value_prefix = base + VALUE_PREFIX
            for key, value in pending.items():
                ops[value_prefix + key] = value
            ops[base + META_ROOT_KEY] = new_root
        if new_root != EMPTY:
            ops[base + ROOT_PREFIX + new_root] = b"\x01" if kh is None else b"\x00" + kh
        if replaced is not None:
            if old_root != EMPTY:
                replaced.append(base + ROOT_PREFIX + old_root)
            self._prune(ops, base, replaced)
        elif not self._lists_checked:
            # pruning was turned off: what the lists name is now kept like any old record
            # (it may even be live again: nothing tracked what this tree writes back)
            self._lists_checked = True
            for k, _ in self._kv.iterate(STALE_PREFIX):
                ops[base + k] = None
            if self._kv.get(VERSION_KEY) is not None:
                ops[base + VERSION_KEY] = None
        values = self._values
        values.update(pending)
        if len(values) > self._value_cap:
            _evict(values)
        self._pending = {}
        self._root, self._root_kh = new_root, kh
        self._staged.append((staged, new_root))
        return new_root

    # -- pruning -------------------------------------------------------------------------

    def _load_stale(self) -> None:
        """Read the pruning state (the pending stale lists and the version) from the store."""
        raw = self._kv.get(VERSION_KEY)
        self._version = int.from_bytes(raw, "big") if raw else 0
        base = self._kv.prefix
        for k, v in self._kv.iterate(STALE_PREFIX):
            if len(k) != 9:
                raise StateError(f"stale list key {k.hex()} is malformed (damaged store)")
            version = int.from_bytes(k[1:], "big")
            keys = set(_unpack_keys(v, base))
            self._stale[version] = keys
            for key in keys:
                self._stale_at[key] = version

    def _prune(self, ops: dict, base: bytes, replaced: list[bytes]) -> None:
        """Stage this commit's pruning into ``ops``: the records it replaced (and the old
        root's descriptor) wait in a stale list under its version; a record written again
        leaves the list it waited in (content-addressed keys come back when content
        does); lists old enough that no kept root needs them are deleted with their
        records."""
        version = self._version + 1
        stale, stale_at = self._stale, self._stale_at
        touched = set()
        if stale_at:
            for k in stale_at.keys() & ops.keys():  # rare: content that came back
                v = stale_at.pop(k)
                stale[v].discard(k)
                touched.add(v)
        new = set(replaced)
        new.difference_update(ops)
        if new:
            stale[version] = new
            stale_at.update(dict.fromkeys(new, version))
            touched.add(version)
        # records stale since version v were last needed by root v - 1
        limit = version - self._keep + 1  # type: ignore[operator]
        for v in [v for v in stale if v <= limit]:
            keys = stale.pop(v)
            ops.update(dict.fromkeys(keys))  # deletes
            deque(map(stale_at.pop, keys), maxlen=0)
            ops[base + STALE_PREFIX + v.to_bytes(8, "big")] = None
            touched.discard(v)
        for v in touched:
            keys = stale[v]
            list_key = base + STALE_PREFIX + v.to_bytes(8, "big")
            if keys:
                ops[list_key] = _pack_keys(keys, base)
            else:
                del stale[v]
                ops[list_key] = None
        ops[base + VERSION_KEY] = version.to_bytes(8, "big")
        self._version = version

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

    # -- the commit's tree work (Python: contracts/treecommit.py) ------------------------

    def _commit_native(self, pending: dict, ops: dict, node_prefix: bytes
                       ) -> tuple[bytes, bytes | None]:
        """The commit's tree work in C (contracts/_treecore.c): same records, same root."""
        try:
            new_root, kh = self._native.commit(
                pending, self._root, self._root_kh, self._fetch, ops, node_prefix,
                self._top, self._nodes, TOP_DEPTH, self._replaced)
        except StateError:
            raise
        except ValueError as e:  # a malformed record, reported by the C core
            raise StateError(str(e)) from None
        if len(self._nodes) > self._node_cap:
            _evict(self._nodes)
        return new_root, kh

    # -- group caches --------------------------------------------------------------------

    def _take(self, h: bytes, pos: bytes, depth: int) -> bytes:
        """The record of group ``h``, which this commit replaces: it leaves the cache, so
        the caches hold current groups only."""
        cache = self._top if depth < TOP_DEPTH else self._nodes
        rec = cache.pop(h, None)
        if rec is None:
            rec = self._fetch(pos + h)
        if self._replaced is not None:
            self._replaced.append(self._node_prefix + pos + h)
        return rec

    def _cache_record(self, h: bytes, rec: bytes, depth: int) -> None:
        if depth < TOP_DEPTH:
            self._top[h] = rec
        else:
            nodes = self._nodes
            nodes[h] = rec
            if len(nodes) > self._node_cap:
                _evict(nodes)

    # -- reading nodes -------------------------------------------------------------------

    def _fetch(self, key: bytes) -> bytes:
        """A node record (key relative to ``n``), read through unwritten batches."""
        key = NODE_PREFIX + key
        for batch, _ in reversed(self._staged):
            rec = batch.staged(key)[1]
            if rec is not None:
                return rec
        rec = self._kv.get(key)
        if rec is None:
            raise StateError(
                f"state node {key[-32:].hex()} is missing (unknown root or damaged store)")
        return rec

    def _record(self, h: bytes, pos: bytes, depth: int) -> bytes:
        """The record of the group whose root is ``h`` at ``depth`` and position ``pos``."""
        cache = self._top if depth < TOP_DEPTH else self._nodes
        rec = cache.get(h)
        if rec is None:
            rec = self._fetch(pos + h)
            self._cache_record(h, rec, depth)
        return rec

    def _walk(self, key: bytes) -> tuple[list[bytes], bytes | None]:
        """Siblings along ``key``'s path at the committed root, and the leaf record where
        the path ends (None if it ends at an empty subtree)."""
        kh = sha256(key).digest()
        siblings: list[bytes] = []
        h, lk = self._root, self._root_kh
        depth = 0
        j = EDGE  # the root starts a group
        g = None
        while lk is None and h != EMPTY:
            if j >= EDGE:
                g = _decode(self._record(h, _pos(kh, depth), depth), h)
                j = 1
            assert g is not None
            c = 2 * j + ((kh[depth >> 3] >> (7 - (depth & 7))) & 1)
            siblings.append(g.s[c ^ 1])
            h, lk = g.s[c], g.k[c]
            j = c
            depth += 1
        if lk is None:
            return siblings, None
        return siblings, self._fetch(lk[:POS_BYTES] + h)

    def _read_committed(self, key: bytes) -> bytes | None:
        vkey = VALUE_PREFIX + key
        for batch, _ in reversed(self._staged):
            found, value = batch.staged(vkey)
            if found:
                return value
        if self._flat:
            if self._native is not None and self._absent(key):
                return None
            return self._kv.get(VALUE_PREFIX + key)
        _, leaf = self._walk(key)
        if leaf is None or leaf[1:33] != sha256(key).digest():
            return None
        return leaf[65:]

    def _absent(self, key: bytes) -> bool:
        """True if the committed tree certainly lacks ``key``, found by walking its path
        through the group caches and fetching (and caching) the groups missing from them.
        A key that is read absent is mostly about to be created, and creating it needs
        those same groups at commit: fetching them now costs the read no more than the
        flat copy's miss would, and spares the commit a fetch. False means present (the
        caller reads the value from the flat copy) or not decidable here."""
        lookup = self._native.lookup  # type: ignore[union-attr]
        kh = None
        for _ in range(256 // GROUP_LEVELS):  # each pass caches one more group of the path
            found = lookup(key, self._root, self._root_kh, self._top, self._nodes, TOP_DEPTH)
            if type(found) is not tuple:
                return found == 0
            h, depth = found
            if kh is None:
                kh = sha256(key).digest()
            self._record(h, _pos(kh, depth), depth)
        return False

    def prove(self, key: bytes) -> Proof:
        """A proof of ``key``'s committed value (or of its absence) against ``root()``."""
        if type(key) is not bytes:
            raise StateError("key must be bytes")
        siblings, leaf = self._walk(key)
        return Proof(tuple(siblings), None if leaf is None else (leaf[1:33], leaf[33:65]))


def _evict(cache: GroupCache) -> None:
    """Drop the oldest quarter of a cache (dicts keep insertion order): cheap FIFO."""
    if type(cache) is not dict:
        cache.evict(len(cache) // 4)
        return
    for key in list(islice(cache, len(cache) // 4)):
        del cache[key]
