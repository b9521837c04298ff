"""The state tree's commit in pure Python: the reference that ``contracts/_treecore.c``
must match byte for byte (tests/test_tree_native.py compares the two stores), and the
fallback where the extension is not built or ``StateTree(..., native=False)`` asks for it.

``ReferenceCommit`` is a mixin of ``contracts.tree.StateTree``: the commit stages a leaf
record per written key, sorts the rows by key hash and rebuilds each touched path once,
staging the new group records into the commit's ops. A single row going down a group
rewrites the group's record in place; a subtree built or collapsing inside a group goes
through the decoded ``_Group`` (docs/state.md §5).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from hashlib import sha256
from itertools import islice
from operator import itemgetter

from contracts.proof import EMPTY
from contracts.treerecord import (
    _HEAD,
    _INNER,
    _POS_MASK,
    _STORED,
    EDGE,
    GROUP_LEVELS,
    POS_BYTES,
    SLOTS,
    _decode,
    _encode,
    _Group,
    _new_group,
    _pos,
)


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

_first = itemgetter(0)


class ReferenceCommit:
    """The commit's tree work in Python, as methods that ``StateTree`` inherits. The tree
    provides the state below and two record operations: ``_take`` (the record of a group
    this commit replaces, which leaves the caches) and ``_cache_record``."""

    _root: bytes
    _root_kh: bytes | None  # the root's key hash if it is a leaf
    _ops: dict[bytes, bytes | None]  # the commit's staged writes (absolute store keys)
    _node_prefix: bytes  # the absolute prefix of node records
    _replaced: list[bytes] | None  # the records the commit replaces (a pruning tree)
    _khs: list[bytes]  # during a commit: the sorted key hashes of the rows
    _rows: list[tuple[bytes, bytes | None]]  # ... and the rows (key hash, leaf hash or None)
    _take: Callable[[bytes, bytes, int], bytes]
    _cache_record: Callable[[bytes, bytes, int], None]

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
