"""SHA-256 helpers: one hash function for block ids, transaction ids and Merkle trees."""

from __future__ import annotations

import hashlib

HASH_SIZE = 32


def sha256(data: bytes) -> bytes:
    """SHA-256 digest of ``data``."""
    return hashlib.sha256(data).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """RFC 6962-style Merkle root over already-hashed leaves.

    Leaves are hashed as ``sha256(0x00 ‖ leaf)`` and inner nodes as
    ``sha256(0x01 ‖ left ‖ right)``; an odd node is promoted unchanged. The empty list has
    root ``sha256(b"")``. Used for the transaction and evidence lists in a block header.
    """
    if not leaves:
        return sha256(b"")
    level = [sha256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            nxt.append(sha256(b"\x01" + level[i] + level[i + 1]))
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
