"""The state tree's stored records (docs/state.md §3, byte for byte): store key prefixes,
the group geometry, group and leaf records (``_Group``, ``_decode``/``_encode``), the check
of a record against its address (``node_record_ok_reference``; ``contracts.tree``'s
``node_record_ok`` runs the same check in C where built), where a group is stored
(``_pos``) and the stale lists of a pruning tree (``_pack_keys``/``_unpack_keys``).

Everything here is the storage format: the C core (``contracts/_treecore.c``) writes and
reads the same bytes, and changing any of it changes every state root's records.
"""

from __future__ import annotations

from hashlib import sha256
from itertools import chain
from struct import iter_unpack

from contracts.proof import EMPTY

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
_INNER = b"\x01"  # an inner node's hash: H(0x01 ‖ left ‖ right)


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


def node_record_ok_reference(address: bytes, rec: bytes) -> bool:
    """``contracts.tree.node_record_ok`` in Python: the reference that the C
    ``record_ok`` (``contracts/_treecore.c``) must match."""
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
