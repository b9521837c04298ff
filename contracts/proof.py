"""State proofs: the hashing of the authenticated state tree, the proof type, its canonical
encoding, and the pure ``verify_proof`` a member's client or an auditor runs.

The tree (``contracts/tree.py``) is a binary sparse Merkle tree over ``key_hash =
sha256(key)``, read most-significant bit first, in which a subtree holding exactly one
leaf is replaced by that leaf (the leaf sits at the shortest prefix that is unique) and an
empty subtree is ``EMPTY`` (32 zero bytes)::

    leaf  = sha256(0x00 ‖ key_hash ‖ sha256(value))
    inner = sha256(0x01 ‖ left ‖ right)

A proof for a key lists the sibling hashes on the path from the root down to where that
key's path ends: at its own leaf (inclusion), at ``EMPTY``, or at another key's leaf
(non-inclusion). docs/state.md specifies all of this byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256

from chain import encoding

HASH_SIZE = 32
EMPTY = bytes(HASH_SIZE)
MAX_DEPTH = 256
# 256 siblings of 34 encoded bytes plus the leaf and the framing fit well under this
MAX_PROOF_SIZE = 10 * 1024
_LEAF = b"\x00"
_INNER = b"\x01"


class ProofError(ValueError):
    """A proof is malformed or not canonically encoded, or an argument has the wrong type."""


def key_hash(key: bytes) -> bytes:
    """Where ``key`` lives in the tree: ``sha256(key)``."""
    return sha256(key).digest()


def value_hash(value: bytes) -> bytes:
    return sha256(value).digest()


def leaf_hash(khash: bytes, vhash: bytes) -> bytes:
    return sha256(_LEAF + khash + vhash).digest()


def inner_hash(left: bytes, right: bytes) -> bytes:
    return sha256(_INNER + left + right).digest()


def bit(khash: bytes, depth: int) -> int:
    """Bit ``depth`` of a key hash, most significant bit of byte 0 first (0 = left)."""
    return (khash[depth >> 3] >> (7 - (depth & 7))) & 1


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


@dataclass(frozen=True)
class Proof:
    """The path of a key through the tree committed to by some root.

    ``siblings[i]`` is the hash of the sibling subtree at depth ``i`` (``EMPTY`` if it is
    empty), from the root (depth 0) downward; the path ends at depth ``len(siblings)``.
    ``leaf`` is ``(key_hash, value_hash)`` of the leaf where the path ends, or ``None`` if
    it ends at an empty subtree.
    """

    siblings: tuple[bytes, ...]
    leaf: tuple[bytes, bytes] | None

    def __post_init__(self) -> None:
        if not isinstance(self.siblings, tuple) or len(self.siblings) > MAX_DEPTH:
            raise ProofError(f"siblings must be a tuple of at most {MAX_DEPTH} hashes")
        if not all(_is_hash(s) for s in self.siblings):
            raise ProofError("every sibling must be a 32-byte hash")
        if self.leaf is not None and not (
            isinstance(self.leaf, tuple)
            and len(self.leaf) == 2
            and _is_hash(self.leaf[0])
            and _is_hash(self.leaf[1])
        ):
            raise ProofError("leaf must be None or (key_hash, value_hash), 32 bytes each")

    @property
    def depth(self) -> int:
        return len(self.siblings)

    def encode(self) -> bytes:
        """Canonical msgpack: ``{"bitmap", "depth", "leaf", "siblings"}`` (docs/state.md)."""
        depth = len(self.siblings)
        bitmap = bytearray((depth + 7) // 8)
        present = []
        for i, s in enumerate(self.siblings):
            if s != EMPTY:
                bitmap[i >> 3] |= 0x80 >> (i & 7)
                present.append(s)
        return encoding.encode({
            "bitmap": bytes(bitmap),
            "depth": depth,
            "leaf": None if self.leaf is None else [self.leaf[0], self.leaf[1]],
            "siblings": present,
        })

    @classmethod
    def decode(cls, data: bytes) -> Proof:
        """Parse canonical proof bytes; anything else raises ``ProofError``."""
        try:
            obj = encoding.decode(data, max_size=MAX_PROOF_SIZE)
        except encoding.EncodingError as exc:
            raise ProofError(f"proof is not canonical msgpack: {exc}") from exc
        if not isinstance(obj, dict) or set(obj) != {"bitmap", "depth", "leaf", "siblings"}:
            raise ProofError("proof must be a map with bitmap, depth, leaf, siblings")
        depth, bitmap, present, leaf = obj["depth"], obj["bitmap"], obj["siblings"], obj["leaf"]
        if type(depth) is not int or not 0 <= depth <= MAX_DEPTH:
            raise ProofError(f"depth must be an integer in [0, {MAX_DEPTH}]")
        if type(bitmap) is not bytes or len(bitmap) != (depth + 7) // 8:
            raise ProofError("bitmap must be ceil(depth / 8) bytes")
        if depth % 8 and bitmap[-1] & (0xFF >> (depth % 8)):
            raise ProofError("bitmap has bits set beyond depth")
        if depth and not bitmap[(depth - 1) >> 3] & (0x80 >> ((depth - 1) & 7)):
            raise ProofError("the deepest sibling of a proof is never empty")
        if not isinstance(present, list):
            raise ProofError("siblings must be an array")
        if sum(b.bit_count() for b in bitmap) != len(present):
            raise ProofError("bitmap and siblings disagree")
        if any(not _is_hash(s) or s == EMPTY for s in present):
            raise ProofError("a listed sibling must be a 32-byte non-empty hash")
        siblings = []
        it = iter(present)
        for i in range(depth):
            siblings.append(next(it) if bitmap[i >> 3] & (0x80 >> (i & 7)) else EMPTY)
        if leaf is not None:
            if not isinstance(leaf, list) or len(leaf) != 2:
                raise ProofError("leaf must be nil or [key_hash, value_hash]")
            leaf = (leaf[0], leaf[1])
        return cls(tuple(siblings), leaf)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> bool:
    """True iff ``proof`` shows that under ``root`` the key ``key`` holds ``value``
    (``value is None``: the key is absent). Pure; never raises on a bad proof or root."""
    if type(key) is not bytes:
        raise ProofError("key must be bytes")
    if value is not None and type(value) is not bytes:
        raise ProofError("value must be bytes or None")
    if not isinstance(proof, Proof) or not _is_hash(root):
        return False
    khash = key_hash(key)
    siblings = proof.siblings
    depth = len(siblings)
    # a leaf or an empty subtree below the root always has a non-empty sibling: otherwise
    # the tree would have placed it one level higher (canonical shape)
    if depth and siblings[-1] == EMPTY:
        return False
    if proof.leaf is None:
        if value is not None:
            return False
        node = EMPTY
    else:
        lkey, lval = proof.leaf
        if value is not None:
            if lkey != khash or lval != value_hash(value):
                return False
        else:
            # another key's leaf ends our path: it must share our first `depth` bits
            if lkey == khash:
                return False
            if any(bit(lkey, i) != bit(khash, i) for i in range(depth)):
                return False
        node = leaf_hash(lkey, lval)
    for i in range(depth - 1, -1, -1):
        if bit(khash, i):
            node = inner_hash(siblings[i], node)
        else:
            node = inner_hash(node, siblings[i])
    return node == root
