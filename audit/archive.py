"""Chain archives: every committed block with its commit certificate, in one file.

``mutual export`` writes one from a stopped node's database or from a node's API; ``mutual
audit --data FILE`` replays it. Nothing in an archive is trusted: the auditor checks it
exactly as it checks a node. Format (docs/audit.md):

    magic   b"MUTUAL-ARCHIVE\\n" (15 bytes), then version u32 big-endian (1)
    records length u32 big-endian ‖ canonical msgpack
            {"block": bin, "certificate": bin, "height": uint}
            heights 1, 2, 3, … with no gap; ``certificate`` is the one that committed the
            block (the last block's is the only proof of its finality)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from chain import encoding
from chain.block import MAX_BLOCK_SIZE
from chain.durable import atomic_write

MAGIC = b"MUTUAL-ARCHIVE\n"
VERSION = 1
_U32 = struct.Struct(">I")
MAX_RECORD = MAX_BLOCK_SIZE + 512 * 1024


class ArchiveError(ValueError):
    """The archive is not one, or is damaged; the message says where."""


def is_archive(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def write_archive(path: str | Path, blocks: Iterator[tuple[int, bytes, bytes]]) -> int:
    """Write ``(height, block bytes, certificate bytes)`` in height order; atomic (tmp +
    rename). Returns the number of blocks written."""
    count = 0

    def records() -> Iterator[bytes]:
        nonlocal count
        yield MAGIC + _U32.pack(VERSION)
        for height, block, cert in blocks:
            if height != count + 1:
                raise ArchiveError(f"block {height} does not follow {count}")
            rec = encoding.encode({"block": block, "certificate": cert, "height": height})
            yield _U32.pack(len(rec)) + rec
            count += 1

    atomic_write(path, records(), mode=0o644)
    return count


def read_archive(path: str | Path) -> list[tuple[int, bytes, bytes]]:
    """Every record, checked for framing, encoding and height order."""
    data = Path(path).read_bytes()
    head = len(MAGIC) + _U32.size
    if data[:len(MAGIC)] != MAGIC:
        raise ArchiveError(f"{path} is not a mutual-ledger archive")
    (version,) = _U32.unpack_from(data, len(MAGIC))
    if version != VERSION:
        raise ArchiveError(f"{path}: archive version {version}, this tool reads {VERSION}")
    out: list[tuple[int, bytes, bytes]] = []
    pos = head
    while pos < len(data):
        if pos + _U32.size > len(data):
            raise ArchiveError(f"{path}: truncated record length at byte {pos}")
        (n,) = _U32.unpack_from(data, pos)
        if n > MAX_RECORD or pos + _U32.size + n > len(data):
            raise ArchiveError(f"{path}: record at byte {pos} is truncated or oversize")
        try:
            rec = encoding.decode(data[pos + _U32.size:pos + _U32.size + n], max_size=MAX_RECORD)
        except encoding.EncodingError as exc:
            raise ArchiveError(f"{path}: record at byte {pos} does not decode: {exc}") from None
        if (not isinstance(rec, dict) or set(rec) != {"block", "certificate", "height"}
                or not isinstance(rec["block"], bytes)
                or not isinstance(rec["certificate"], bytes)):
            raise ArchiveError(f"{path}: record at byte {pos} is not a block record")
        if rec["height"] != len(out) + 1:
            raise ArchiveError(f"{path}: record at byte {pos} has height {rec['height']}, "
                               f"expected {len(out) + 1}")
        out.append((rec["height"], rec["block"], rec["certificate"]))
        pos += _U32.size + n
    return out


def from_store(store: Any) -> Iterator[tuple[int, bytes, bytes]]:
    """Blocks and certificates of a ``BlockStore``."""
    for height, block in store.iter_block_bytes():
        cert = store.certificate_bytes(height)
        if cert is None:
            raise ArchiveError(f"the database has no certificate for block {height}")
        yield height, block, cert


def from_client(client: Any, progress: Callable[[int, int], None] | None = None
                ) -> Iterator[tuple[int, bytes, bytes]]:
    """Blocks and certificates fetched from a node's API, up to its height at the start."""
    top = int(client.status()["height"])
    for height in range(1, top + 1):
        yield height, client.raw_block(height), client.raw_certificate(height)
        if progress is not None:
            progress(height, top)
