"""The LevelDB (plyvel) backend of the ``contracts.kv.KV`` interface.

One database directory holds everything a node persists; components get prefixed views
(``db.prefixed(b"state/")``) and one ``Batch`` may span all of them, so a block, its commit
certificate, its state-tree nodes and its receipts are written in one atomic, synced
LevelDB write batch. Prefixing is done here rather than with plyvel's ``prefixed_db`` for
exactly that reason: a plyvel write batch belongs to one (prefixed) database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import plyvel

from contracts.kv import KV, KVError
from node.store import leveldb_env

DEFAULT_CACHE_BYTES = 32 << 20
DEFAULT_WRITE_BUFFER_BYTES = 16 << 20
# No block compression by default: on two cores the compaction thread competes with block
# execution, and snappy made it the busiest thread. Measured loading 1M members
# (devnet.bench_state, random keys): 19 s and 1.4 GB without, 34 s and 0.8 GB with snappy
# (state-tree groups are hashes end to end and do not shrink; records' field names do).
# Nodes choose with [storage] compression.
DEFAULT_COMPRESSION: str | None = None
# LevelDB's default. Tables are read with pread (node/store/leveldb_env.py), so open tables cost
# only their index and filter blocks (~30 KB each at 2 MB per table); where that switch
# could not be made, LevelDB mmaps the open tables and the pages reads touch count in the
# RSS, about (max_open_files - 10) x 2 MB at most: lower it there.
DEFAULT_MAX_OPEN_FILES = 1000


def _reason(exc: BaseException) -> str:
    """plyvel's message (it passes LevelDB's status as bytes)."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


class _LevelStore:
    __slots__ = ("db", "path", "raw_get")

    def __init__(self, db: plyvel.DB, path: str) -> None:
        self.db = db
        self.path = path
        self.raw_get = self._get

    def _get(self, key: bytes) -> bytes | None:
        try:
            return self.db.get(key)
        except (RuntimeError, plyvel.Error) as exc:  # closed database; corruption, I/O
            raise KVError(f"{self.path}: {_reason(exc)}") from exc

    def raw_iter(
        self, lower: bytes, upper: bytes | None, reverse: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        try:
            if reverse:
                # plyvel's reverse range iterator drops the first key of the database when
                # it is the only key in range; walk a raw iterator backwards instead
                return self._backwards(self.db.raw_iterator(), lower, upper)
            if upper is None:
                it = self.db.iterator(start=lower)
            else:
                it = self.db.iterator(start=lower, stop=upper)
        except RuntimeError as exc:
            raise KVError(f"{self.path}: {exc}") from exc
        return self._drain(it)

    @staticmethod
    def _drain(it: plyvel.Iterator) -> Iterator[tuple[bytes, bytes]]:
        # the plyvel iterator holds an implicit snapshot; close it as soon as we are done
        with it:
            yield from it

    @staticmethod
    def _backwards(
        it: plyvel.RawIterator, lower: bytes, upper: bytes | None
    ) -> Iterator[tuple[bytes, bytes]]:
        with it:
            if upper is None:
                it.seek_to_last()
            else:
                it.seek(upper)  # first key >= upper, which is out of range
                if it.valid():
                    it.prev()
                else:
                    it.seek_to_last()
            while it.valid():
                key = it.key()
                if key < lower:
                    break
                yield key, it.value()
                it.prev()

    def raw_write(self, ops: dict[bytes, bytes | None], sync: bool) -> None:
        try:
            wb = self.db.write_batch(sync=sync)
        except RuntimeError as exc:
            raise KVError(f"{self.path}: {exc}") from exc
        put = wb.put
        delete = wb.delete
        for k, v in ops.items():
            if v is None:
                delete(k)
            else:
                put(k, v)
        try:
            wb.write()
        except (RuntimeError, plyvel.Error) as exc:  # e.g. the disk is full
            raise KVError(f"{self.path}: write failed: {_reason(exc)}") from exc

    def close(self) -> None:
        self.db.close()


class LevelKV(KV):
    """A LevelDB database directory opened as a ``KV`` (the root view, prefix ``b""``)."""

    __slots__ = ()

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create_if_missing: bool = True,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        write_buffer_bytes: int = DEFAULT_WRITE_BUFFER_BYTES,
        compression: str | None = DEFAULT_COMPRESSION,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    ) -> None:
        path = os.fspath(path)
        if compression not in (None, "snappy"):
            raise KVError(f"unknown LevelDB compression {compression!r} (None or 'snappy')")
        leveldb_env.prepare()  # before the first open: tables are read with pread, not mmap
        try:
            db = plyvel.DB(
                path,
                create_if_missing=create_if_missing,
                lru_cache_size=cache_bytes,
                write_buffer_size=write_buffer_bytes,
                compression=compression,
                max_open_files=max_open_files,
                bloom_filter_bits=10,
            )
        except (plyvel.Error, OSError) as exc:
            raise KVError(f"cannot open LevelDB at {path}: {exc}") from exc
        super().__init__(_LevelStore(db, path), b"")

    @property
    def path(self) -> str:
        return self._store.path  # type: ignore[attr-defined]

    def compact(self) -> None:
        """Compact the whole database now (LevelDB otherwise does it in the background)."""
        db = self._store.db  # type: ignore[attr-defined]
        try:
            # plyvel passes empty slices, not NULL, for missing bounds, so a bare
            # compact_range() compacts the empty range and only flushes the memtable; the
            # stop bound is inclusive, so the last key covers the whole database
            with db.raw_iterator() as it:
                it.seek_to_last()
                last = it.key() if it.valid() else None
            if last is not None:
                db.compact_range(stop=last)
        except RuntimeError as exc:
            raise KVError(f"{self.path}: {exc}") from exc

    def compaction_pending(self) -> bool:
        """True while LevelDB has compaction debt: four or more level-0 tables, or a level
        over its size budget (10 MiB for level 1, ten times more per level), i.e. while its
        background thread still has merging to do (LevelDB's own compaction score >= 1)."""
        try:
            stats = self._store.db.get_property(b"leveldb.stats")  # type: ignore[attr-defined]
        except RuntimeError as exc:
            raise KVError(f"{self.path}: {exc}") from exc
        for line in (stats or b"").decode().splitlines():
            cols = line.split()
            if len(cols) < 3 or not cols[0].isdigit() or not cols[1].isdigit():
                continue
            level, files, size_mb = int(cols[0]), int(cols[1]), float(cols[2])
            if level == 0 and files >= 4:
                return True
            if level >= 1 and size_mb > 10 * 10 ** (level - 1):
                return True
        return False

    @property
    def closed(self) -> bool:
        return bool(self._store.db.closed)  # type: ignore[attr-defined]


def open_kv(path: str | os.PathLike[str], **options: int | bool | str | None) -> LevelKV:
    """Open (creating if missing) the LevelDB database at ``path``."""
    return LevelKV(path, **options)  # type: ignore[arg-type]
