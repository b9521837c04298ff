"""The authenticated state: a compressed binary sparse Merkle tree over all contract state.

Writes (``set``/``delete``) only go into an overlay dict; nothing is hashed until
``commit(batch)``, which sorts the dirty keys by key hash and rebuilds each touched path
once, so the top of the tree is hashed once per block rather than once per write. Commit
does not write by itself: it stages its writes into the caller's ``Batch`` so the node can
write block, certificate, state and receipts in one atomic synced batch. The commit's tree
work runs in C where the extension is built (``contracts/_treecore.c``); the Python here
is the reference it must match byte for byte, and the fallback.

The tree is binary (docs/state.md §1: hashes, proofs and roots are the binary ones) but it
is *stored* in groups of four levels: one record holds the 30 binary nodes below an inner
node at a depth that is a multiple of 4 (like Jellyfish's 16-ary nodes, except that the
hashes inside stay binary, so proofs stay binary and small). A changed key therefore
rewrites about log16(N) records instead of log2(N), and an update reads one record per
four levels. Storage layout under the tree's KV view (docs/state.md §3, byte for byte):

* ``b"n" + pos + hash`` -> a group (``0x02 ‖ masks ‖ slot hashes ‖ leaf key hashes``) or
  a leaf (``0x00 ‖ key_hash ‖ value_hash ‖ value``). Content-addressed and never deleted,
  so every committed root stays readable (no pruning yet).
* ``b"r" + root`` -> what kind of node a committed root is.
* ``b"v" + key`` -> value: a flat copy of the latest committed state for O(1) reads, valid
  for the root stored under ``b"m"``. A tree opened at any other root reads by walking
  the groups instead and leaves the flat copy alone.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from hashlib import sha256
from itertools import chain, islice
from operator import itemgetter
from struct import iter_unpack
from typing import Any

from contracts.kv import KV, Batch
from contracts.proof import EMPTY, Proof

try:  # the same commit in C (contracts/_treecore.c); optional, see setup.py
    from contracts import _treecore
except ImportError:  # pragma: no cover - only where the extension could not be built
    _treecore = None  # type: ignore[assignment]

NATIVE_AVAILABLE = _treecore is not None

NODE_PREFIX = b"n"
ROOT_PREFIX = b"r"
VALUE_PREFIX = b"v"
META_ROOT_KEY = b"m"
STALE_PREFIX = b"s"   # + u64be version -> the records that version made stale (pruning)
VERSION_KEY = b"p"    # u64be: the last version a pruning tree committed
POS_BYTES = 4
# _POS_MASK[d] keeps the top d bits of a 32-bit position
_POS_MASK = [(0xFFFFFFFF << (32 - d)) & 0xFFFFFFFF for d in range(33)]

# A group is the binary subtree of GROUP_LEVELS levels below an inner node whose depth is a
# multiple of GROUP_LEVELS, in heap order: slot 1 is that node, slot j has children 2j and
# 2j+1, slots EDGE..2*EDGE-1 are the group's bottom row (the roots of the next groups).
# Fixed at 4 (it is the storage format): a group spans one nibble of a key hash and its slot
# masks fit 32 bits.
GROUP_LEVELS = 4
EDGE = 1 << GROUP_LEVELS
SLOTS = 2 * EDGE
_STORED = ((1 << SLOTS) - 1) & ~0b11  # slots 2..31 are in the record (slot 1 is its address)
LEAF_TAG = 0x00
GROUP_TAG = 0x02
_GROUP_HEAD = bytes([GROUP_TAG])
_HEAD = 9  # tag, present mask (u32be), leaf mask (u32be)


def _ascent(j: int) -> tuple[tuple[int, int, int, bool], ...]:
    """From slot j up to the root: per level (sibling's bit, mask of the slots before the
    sibling, mask of the slots before the parent or 0 for the root, j is a right child)."""
    steps = []
    while j > 1:
        sib, parent = j ^ 1, j >> 1
        steps.append((1 << sib, (1 << sib) - 1, (1 << parent) - 1 if parent > 1 else 0,
                      bool(j & 1)))
        j = parent
    return tuple(steps)


_ASCENT = [_ascent(j) for j in range(SLOTS)]
# the same for a group whose 30 slots are all present: (sibling offset, parent offset or 0,
# j is a right child)
_FULL_ASCENT = [tuple((_HEAD + 32 * (sbelow.bit_count() - 2),
                       _HEAD + 32 * (pbelow.bit_count() - 2) if pbelow else 0, right)
                      for _, sbelow, pbelow, right in steps) for steps in _ASCENT]
# _PATH_MASK[nibble]: the slots at levels 1..4 on the path that the nibble's bits spell
_PATH_MASK = [sum(1 << ((1 << lv) | (nib >> (GROUP_LEVELS - lv))) for lv in range(1, 5))
              for nib in range(EDGE)]

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
_first = itemgetter(0)
_INNER = b"\x01"


# a group cache: hash -> record; _treecore.GroupCache or, without the extension, a dict
GroupCache = Any


class StateError(ValueError):
    """Bad argument or misuse of the state tree (wrong type, unknown root, too many
    unwritten commits), or a damaged store."""


class _Group:
    """A decoded group: ``s[j]`` is the hash at slot j (EMPTY if empty), ``k[j]`` the key
    hash if that slot is a leaf (else None); ``present``/``leaves`` are the masks of
    non-empty and leaf slots (bit j = slot j)."""

    __slots__ = ("s", "k", "present", "leaves")

    def __init__(self, s: list, k: list, present: int, leaves: int) -> None:
        self.s = s
        self.k = k
        self.present = present
        self.leaves = leaves

    def put(self, j: int, h: bytes, kh: bytes | None) -> None:
        self.s[j] = h
        self.k[j] = kh
        bit = 1 << j
        if h == EMPTY:
            self.present &= ~bit
        else:
            self.present |= bit
        if kh is None:
            self.leaves &= ~bit
        else:
            self.leaves |= bit


def _new_group() -> _Group:
    return _Group([EMPTY] * SLOTS, [None] * SLOTS, 0, 0)


_SLOT_LISTS: dict[int, tuple[int, ...]] = {}


def _slots_of(mask: int) -> tuple[int, ...]:
    """The slots whose bits are set in ``mask``, ascending (memoised: masks repeat)."""
    slots = _SLOT_LISTS.get(mask)
    if slots is None:
        slots = tuple(j for j in range(SLOTS) if mask >> j & 1)
        if len(_SLOT_LISTS) < 1 << 16:
            _SLOT_LISTS[mask] = slots
    return slots


def _decode(rec: bytes, h: bytes) -> _Group:
    """A group record (stored under ``h``) as a _Group; StateError if it is malformed."""
    present = int.from_bytes(rec[1:5], "big")
    leaves = int.from_bytes(rec[5:9], "big")
    ps = _slots_of(present)
    ls = _slots_of(leaves)
    if (rec[0] != GROUP_TAG or present & ~_STORED or leaves & ~present
            or len(rec) != _HEAD + 32 * (len(ps) + len(ls))):
        raise StateError(f"state group {h.hex()} is malformed (damaged store)")
    s = [EMPTY] * SLOTS
    k: list[bytes | None] = [None] * SLOTS
    s[1] = h
    o = _HEAD
    for j in ps:
        s[j] = rec[o : o + 32]
        o += 32
    for j in ls:
        k[j] = rec[o : o + 32]
        o += 32
    return _Group(s, k, present | 2, leaves)


def _encode(g: _Group) -> bytes:
    present = g.present & _STORED
    leaves = g.leaves & _STORED
    s, k = g.s, g.k
    return b"".join([
        _GROUP_HEAD, present.to_bytes(4, "big"), leaves.to_bytes(4, "big"),
        *[s[j] for j in _slots_of(present)], *[k[j] for j in _slots_of(leaves)],
    ])


def node_record_ok(address: bytes, rec: bytes) -> bool:
    """True iff ``rec`` is a well-formed node record whose hash is ``address`` (the last 32
    bytes of its key): a leaf whose value matches its value hash, or a group whose binary
    nodes hash to each other and to the address. For the auditor's integrity scan (in C
    where built; ``node_record_ok_reference`` is the Python it must match)."""
    if _treecore is not None and type(address) is bytes and type(rec) is bytes:
        return _treecore.record_ok(address, rec)
    return node_record_ok_reference(address, rec)


def node_record_ok_reference(address: bytes, rec: bytes) -> bool:
    """``node_record_ok`` in Python."""
    if not rec:
        return False
    if rec[0] == LEAF_TAG:
        return (len(rec) >= 65 and sha256(rec[:65]).digest() == address
                and sha256(rec[65:]).digest() == rec[33:65])
    try:
        g = _decode(rec, address)
    except StateError:
        return False
    s, k = g.s, g.k
    for j in range(SLOTS - 1, 1, -1):  # a non-empty slot must hang under an inner one
        if s[j] != EMPTY and (k[j >> 1] is not None or s[j >> 1] == EMPTY):
            return False
    for j in range(EDGE - 1, 0, -1):
        if k[j] is None and s[j] != EMPTY:
            left, right = s[2 * j], s[2 * j + 1]
            if sha256(_INNER + left + right).digest() != s[j]:
                return False
            # canonical shape: a lone leaf (or nothing) below an inner node sits higher up
            if (left == EMPTY and (right == EMPTY or k[2 * j + 1] is not None)) or (
                    right == EMPTY and k[2 * j] is not None):
                return False
    return True


class StateTree:
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

    def _commit_python(self, pending: dict, ops: dict, node_prefix: bytes
                       ) -> tuple[bytes, bytes | None]:
        """The commit's tree work in Python (the reference): stage a leaf record per set
        key, then rebuild each touched path once, in key-hash order."""
        rows = []
        append = rows.append
        for key, value in pending.items():
            kh = sha256(key).digest()
            if value is None:
                append((kh, None))
            else:
                head = b"\x00" + kh + sha256(value).digest()
                lh = sha256(head).digest()
                ops[node_prefix + kh[:POS_BYTES] + lh] = head + value
                append((kh, lh))
        rows.sort(key=_first)
        self._khs = [r[0] for r in rows]
        self._rows = rows
        try:
            root, root_kh = self._root, self._root_kh
            if root != EMPTY and root_kh is None:
                new_root, kh = self._update_group(root, 0, 0, len(rows))
            else:
                live = self._live(0, len(rows), root, root_kh)[0]
                if len(live) >= 2:
                    new_root, kh = self._build_group(0, live, 0, len(live)), None
                elif live:
                    kh, new_root = live[0]
                else:
                    new_root, kh = EMPTY, None
        finally:
            self._khs = self._rows = None  # type: ignore[assignment]

        return new_root, kh

    def _update_group(self, h: bytes, depth: int, lo: int, hi: int) -> tuple[bytes, bytes | None]:
        """New (hash, key hash if it is now a leaf) of the inner node ``h`` at ``depth`` (a
        group root) after applying rows[lo:hi]; stages the new group records."""
        if hi - lo == 1:
            return self._update_path(h, depth, lo)
        pos = _pos(self._khs[lo], depth)
        g = _decode(self._take(h, pos, depth), h)
        nh, nk = self._update(g, 1, depth, lo, hi)
        if nk is None and nh != EMPTY:
            self._store(g, nh, pos, depth)
        return nh, nk

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

    def _update_path(self, h: bytes, depth: int, i: int) -> tuple[bytes, bytes | None]:
        """``_update_group`` for the single row i: follow its path down the groups to where
        it ends, change that slot, then rewrite the groups on the way back up.

        Usually no slot but the one that changed changes kind (a value rewritten, a key
        added in an empty slot, a leaf at a group's edge pushed into a new group, or any
        change further down), so a group's new record is the old one with that slot's
        entries replaced, inserted or removed and the path's hashes replaced in place.
        Anything else (a subtree built or collapsing inside a group) goes through the
        decoded group."""
        kh, lh = self._rows[i]
        frames = []
        kpos = int.from_bytes(kh[:POS_BYTES], "big")
        while True:
            pos = kh[:POS_BYTES] if depth >= 32 else (kpos & _POS_MASK[depth]).to_bytes(
                POS_BYTES, "big")
            rec = self._take(h, pos, depth)
            present = int.from_bytes(rec[1:5], "big")
            leaves = int.from_bytes(rec[5:9], "big")
            # the group spans bits depth..depth+3 of the path: one nibble of the key hash;
            # the path ends at its shallowest slot that is empty or a leaf, else at the edge
            nib = kh[depth >> 3]
            nib = nib & 15 if depth & 4 else nib >> 4
            ends = (~present | leaves) & _PATH_MASK[nib]
            j = (ends & -ends).bit_length() - 1 if ends else EDGE | nib
            bit = 1 << j
            off = _HEAD + ((present & (bit - 1)).bit_count() << 5)
            frames.append((h, rec, pos, depth, present, leaves, j, off))
            if not present & bit:
                oh, ok = EMPTY, None
                break
            oh = rec[off : off + 32]
            if leaves & bit:
                ko = _HEAD + 32 * (present.bit_count() + (leaves & (bit - 1)).bit_count())
                ok = rec[ko : ko + 32]
                break
            h = oh  # an inner node at the group's edge: the next group
            depth += GROUP_LEVELS
        # where the path ends: an empty slot or a leaf
        if ok == kh:
            nh, nk = (EMPTY, None) if lh is None else (lh, kh)
            self._note_replaced(kh, oh)
        elif lh is None:  # deleting a key that is absent: nothing changes
            for h, rec, _, depth, *_ in frames:
                self._cache_record(h, rec, depth)
            if self._replaced is not None:  # the groups taken above stay as they are
                del self._replaced[len(self._replaced) - len(frames):]
            return frames[0][0], None
        elif ok is None:
            nh, nk = lh, kh
        else:  # another key's leaf: both go below it
            pair = [(ok, oh), (kh, lh)] if ok < kh else [(kh, lh), (ok, oh)]
            if j < EDGE:  # a subtree inside this group
                h, rec, pos, depth = frames.pop()[:4]
                g = _decode(rec, h)
                nh, nk = self._fill(g, j, depth + j.bit_length() - 1, pair, 0, 2)
                nh, nk = self._finish(g, j, nh, nk, pos, depth)
                if not frames:
                    return nh, nk
                oh, ok = h, None
            else:
                nh, nk = self._build_group(frames[-1][3] + GROUP_LEVELS, pair, 0, 2), None
        while frames:
            h, rec, pos, depth, present, leaves, j, off = frames.pop()
            nh, nk = self._rewrite(h, rec, pos, depth, present, leaves, j, off, oh, ok, nh, nk)
            oh, ok = h, None
        return nh, nk

    def _rewrite(self, h: bytes, rec: bytes, pos: bytes, depth: int, present: int,
                 leaves: int, j: int, off: int, oh: bytes, ok: bytes | None, nh: bytes,
                 nk: bytes | None) -> tuple[bytes, bytes | None]:
        """Group ``h`` (record ``rec``) with slot ``j`` (at byte ``off``) changed from
        (oh, ok) to (nh, nk): stage its new record; returns what its root became."""
        bit = 1 << j
        out = None
        if nk is None:
            if nh != EMPTY and (ok is None or j >= EDGE) and oh != EMPTY:
                # inner stays inner, or a leaf at the edge became a new group below
                out = bytearray(rec)
                out[off : off + 32] = nh
                if ok is not None:
                    ko = _HEAD + 32 * (present.bit_count() + (leaves & (bit - 1)).bit_count())
                    del out[ko : ko + 32]
                    leaves ^= bit
                    out[5:9] = leaves.to_bytes(4, "big")
        elif ok == nk and oh != EMPTY:  # a leaf rewritten
            out = bytearray(rec)
            out[off : off + 32] = nh
        elif oh == EMPTY:  # a new leaf in an empty slot (whose sibling is inner)
            out = bytearray(rec)
            out[off:off] = nh
            new_present = present | bit
            ko = _HEAD + 32 * (new_present.bit_count() + (leaves & (bit - 1)).bit_count())
            out[ko:ko] = nk
            leaves |= bit
            out[1:9] = new_present.to_bytes(4, "big") + leaves.to_bytes(4, "big")
            # siblings are read from the old record below, path slots written at new offsets
            old_present, present = present, new_present
        if out is None:  # the slot changes kind otherwise: rework the decoded group
            g = _decode(rec, h)
            g.put(j, nh, nk)
            return self._finish(g, j, nh, nk, pos, depth)
        if oh != EMPTY:
            old_present = present
        # rehash the path up to the group's root: the slots on it stay inner
        if old_present == present == _STORED:  # a full group: every offset is fixed
            for so, po, right in _FULL_ASCENT[j]:
                sh = rec[so : so + 32]
                nh = sha256(_INNER + sh + nh if right else _INNER + nh + sh).digest()
                if po:
                    out[po : po + 32] = nh
        else:
            for sbit, sbelow, pbelow, right in _ASCENT[j]:
                if old_present & sbit:
                    so = _HEAD + ((old_present & sbelow).bit_count() << 5)
                    sh = rec[so : so + 32]
                else:
                    sh = EMPTY
                nh = sha256(_INNER + sh + nh if right else _INNER + nh + sh).digest()
                if pbelow:
                    o = _HEAD + ((present & pbelow).bit_count() << 5)
                    out[o : o + 32] = nh
        rec = bytes(out)
        self._ops[self._node_prefix + pos + nh] = rec
        self._cache_record(nh, rec, depth)
        return nh, None

    def _finish(self, g: _Group, j: int, nh: bytes, nk: bytes | None, pos: bytes, depth: int
                ) -> tuple[bytes, bytes | None]:
        """Slot ``j`` of the decoded group ``g`` (at ``depth``) is now (nh, nk): rehash up
        to its root, store it if it is still inner, and return what the root became."""
        path = []
        p = j >> 1
        while p:
            path.append(p)
            p >>= 1
        nh, nk = self._rehash_up(g, j, path, nh, nk)
        if nk is None and nh != EMPTY:
            self._store(g, nh, pos, depth)
        return nh, nk

    def _update(self, g: _Group, j: int, depth: int, lo: int, hi: int) -> tuple[bytes, bytes | None]:
        """Apply rows[lo:hi] (which share the path to slot ``j`` of ``g``, at ``depth``) to
        that slot; returns its new (hash, leaf key hash or None)."""
        s, k = g.s, g.k
        h = s[j]
        if k[j] is not None or h == EMPTY:
            nh, nk = self._fill(g, j, depth, *self._live(lo, hi, h, k[j]))
            return nh, nk
        if j >= EDGE:
            nh, nk = self._update_group(h, depth, lo, hi)
            g.put(j, nh, nk)
            return nh, nk
        mid = self._split(depth, lo, hi)
        c = 2 * j
        d1 = depth + 1
        if mid - lo == 1:
            lh, lk = self._update_one(g, c, d1, lo)
        elif mid > lo:
            lh, lk = self._update(g, c, d1, lo, mid)
        else:
            lh, lk = s[c], k[c]
        if hi - mid == 1:
            rh, rk = self._update_one(g, c + 1, d1, mid)
        elif hi > mid:
            rh, rk = self._update(g, c + 1, d1, mid, hi)
        else:
            rh, rk = s[c + 1], k[c + 1]
        if lh == EMPTY:
            if rk is not None or rh == EMPTY:  # a lone leaf (or nothing) moves up
                if rh != EMPTY:
                    g.put(c + 1, EMPTY, None)
                g.put(j, rh, rk)
                return rh, rk
        elif rh == EMPTY and lk is not None:
            g.put(c, EMPTY, None)
            g.put(j, lh, lk)
            return lh, lk
        nh = s[j] = sha256(_INNER + lh + rh).digest()  # inner stays inner: same mask bits
        return nh, None

    def _update_one(self, g: _Group, j: int, depth: int, i: int) -> tuple[bytes, bytes | None]:
        """``_update`` for the single row i: walk down to where its path ends in this
        group, change it there, and rehash the path back up (no splitting)."""
        kh, lh = self._rows[i]
        s, k = g.s, g.k
        top = j
        path = []
        while True:
            h = s[j]
            lk = k[j]
            if lk is not None or h == EMPTY or j >= EDGE:
                break
            path.append(j)
            j = 2 * j + ((kh[depth >> 3] >> (7 - (depth & 7))) & 1)
            depth += 1
        if lk is None and h != EMPTY:  # an inner node at the group's edge
            nh, nk = self._update_path(h, depth, i)
        elif lk == kh:  # this key's own leaf
            nh, nk = (EMPTY, None) if lh is None else (lh, kh)
            self._note_replaced(kh, h)
        elif lh is None:  # deleting a key that is absent: nothing changes
            return s[top], k[top]
        elif h == EMPTY:
            nh, nk = lh, kh
        else:  # another key's leaf: both go below it
            pair = [(lk, h), (kh, lh)] if lk < kh else [(kh, lh), (lk, h)]
            nh, nk = self._fill(g, j, depth, pair, 0, 2)
        g.put(j, nh, nk)
        path.reverse()
        return self._rehash_up(g, j, path, nh, nk)

    @staticmethod
    def _rehash_up(g: _Group, j: int, path: list[int], nh: bytes, nk: bytes | None
                   ) -> tuple[bytes, bytes | None]:
        """Slot ``j`` of ``g`` changed to (nh, nk): rehash its ancestors ``path`` (inner
        slots, nearest first), moving a leaf up where it is left alone."""
        s, k = g.s, g.k
        for p in path:
            sib = j ^ 1
            sh = s[sib]
            sk = k[sib]
            if nh == EMPTY:
                if sk is not None or sh == EMPTY:  # a lone leaf (or nothing) moves up
                    if sh != EMPTY:
                        g.put(sib, EMPTY, None)
                    nh, nk = sh, sk
                    g.put(p, nh, nk)
                    j = p
                    continue
            elif nk is not None and sh == EMPTY:
                g.put(j, EMPTY, None)
                g.put(p, nh, nk)
                j = p
                continue
            nh = sha256(_INNER + sh + nh if j & 1 else _INNER + nh + sh).digest()
            nk = None
            s[p] = nh  # p was inner and stays inner: its mask bits do not change
            j = p
        return nh, nk

    def _live(self, lo: int, hi: int, h: bytes, kh: bytes | None) -> tuple[list, int, int]:
        """(rows, 0, n): the set rows of rows[lo:hi] plus the leaf (``h``, ``kh``) that was
        there (if any and if not rewritten), sorted by key hash."""
        live = [r for r in islice(self._rows, lo, hi) if r[1] is not None]
        if kh is not None:
            khs = self._khs
            i = bisect_left(khs, kh, lo, hi)
            if i == hi or khs[i] != kh:
                live.append((kh, h))
                live.sort(key=_first)
            else:
                self._note_replaced(kh, h)
        return live, 0, len(live)

    def _note_replaced(self, kh: bytes, lh: bytes) -> None:
        """The leaf record of key hash ``kh`` and leaf hash ``lh`` is rewritten or deleted
        by this commit (for pruning; the C core reports the same)."""
        if self._replaced is not None:
            self._replaced.append(self._node_prefix + kh[:POS_BYTES] + lh)

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

    def _fill(self, g: _Group, j: int, depth: int, live: list, lo: int, hi: int
              ) -> tuple[bytes, bytes | None]:
        """Build the subtree of the leaves live[lo:hi] (sorted (key hash, leaf hash) pairs
        sharing their first ``depth`` bits) at slot ``j`` of ``g``, whose slots below ``j``
        are empty; returns its (hash, leaf key hash or None)."""
        n = hi - lo
        if n >= 2:
            nh, nk = self._fill_inner(g, j, depth, live, lo, hi), None
        elif n == 1:
            nk, nh = live[lo]
        else:
            nh, nk = EMPTY, None
        g.put(j, nh, nk)
        return nh, nk

    def _fill_inner(self, g: _Group, j: int, depth: int, live: list, lo: int, hi: int
                    ) -> bytes:
        """``_fill`` for two or more leaves: fills the slots below ``j`` (or a new group
        if ``j`` is at the edge) and returns the hash of the inner node at ``j``; the
        caller sets slot ``j`` itself. The bulk of an import runs here."""
        if j >= EDGE:
            return self._build_group(depth, live, lo, hi)
        byte = depth >> 3
        mask = 0x80 >> (depth & 7)
        first = live[lo][0]
        if first[byte] & mask:
            mid = lo
        elif not live[hi - 1][0][byte] & mask:
            mid = hi
        else:
            threshold = first[:byte] + bytes(
                ((first[byte] & (0xFF00 >> (depth & 7)) & 0xFF) | mask,))
            mid = bisect_left(live, threshold, lo, hi, key=_first)
        s, k = g.s, g.k
        c = 2 * j
        n = mid - lo
        if n >= 2:
            left = s[c] = self._fill_inner(g, c, depth + 1, live, lo, mid)
            g.present |= 1 << c
        elif n:
            k[c], left = live[lo]
            s[c] = left
            g.present |= 1 << c
            g.leaves |= 1 << c
        else:
            left = EMPTY
        c += 1
        n = hi - mid
        if n >= 2:
            right = s[c] = self._fill_inner(g, c, depth + 1, live, mid, hi)
            g.present |= 1 << c
        elif n:
            k[c], right = live[mid]
            s[c] = right
            g.present |= 1 << c
            g.leaves |= 1 << c
        else:
            right = EMPTY
        return sha256(_INNER + left + right).digest()

    def _build_group(self, depth: int, live: list, lo: int, hi: int) -> bytes:
        """A new group at ``depth`` holding the (two or more) leaves live[lo:hi]; its hash."""
        g = _new_group()
        h = self._fill_inner(g, 1, depth, live, lo, hi)
        self._store(g, h, _pos(live[lo][0], depth), depth)
        return h

    def _store(self, g: _Group, h: bytes, pos: bytes, depth: int) -> None:
        g.s[1] = h
        rec = _encode(g)
        self._ops[self._node_prefix + pos + h] = rec
        self._cache_record(h, rec, depth)

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


def _pos(khash: bytes, depth: int) -> bytes:
    """Where a group at ``depth`` on ``khash``'s path is stored: the first ``depth`` bits of
    its path (at most 32), zero-padded to 4 bytes. A subtree's groups thus sit together in
    key order, so a bulk load writes nearly sorted keys and a path's lower groups share
    LevelDB blocks."""
    if depth >= 32:
        return khash[:POS_BYTES]
    return (int.from_bytes(khash[:POS_BYTES], "big") & _POS_MASK[depth]).to_bytes(POS_BYTES, "big")


def _pack_keys(keys: set[bytes], base: bytes) -> bytes:
    """A stale list's value (docs/state.md, "Pruning"): 0x01 and the old root, or 0x00; then
    the node records as sorted 36-byte entries (pos, hash). ``keys`` are store keys under
    the view ``base``: node keys, and at most one root descriptor key."""
    cut = len(base)
    ordered = sorted(keys)
    head = b"\x00"
    if ordered and ordered[-1][cut : cut + 1] == ROOT_PREFIX:  # "r" sorts after "n"
        head = b"\x01" + ordered.pop()[cut + 1 :]
    entries = iter_unpack(f"{cut + 1}x{POS_BYTES + 32}s", b"".join(ordered))
    return head + b"".join(chain.from_iterable(entries))


def _unpack_keys(data: bytes, base: bytes) -> list[bytes]:
    """The store keys a stale list's value names (``_pack_keys`` reversed)."""
    width = POS_BYTES + 32
    if not data or data[0] > 1 or (len(data) - 1 - 32 * data[0]) % width:
        raise StateError("a stale list is malformed (damaged store)")
    keys = []
    o = 1
    if data[0]:
        keys.append(base + ROOT_PREFIX + data[1:33])
        o = 33
    node = base + NODE_PREFIX
    keys.extend(node + data[i : i + width] for i in range(o, len(data), width))
    return keys


def _evict(cache: GroupCache) -> None:
    """Drop the oldest quarter of a cache (dicts keep insertion order): cheap FIFO."""
    if type(cache) is not dict:
        cache.evict(len(cache) // 4)
        return
    for key in list(islice(cache, len(cache) // 4)):
        del cache[key]
