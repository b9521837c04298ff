"""The consensus write-ahead log: durable, checksummed records for the height in progress.

The consensus driver appends opaque records (canonical msgpack of consensus events and of
its own votes and proposals) and, after a block is committed, an end-of-height marker. On
restart it replays the records written since the last marker, so the validator carries on
exactly where it stopped. The byte format is specified in ``docs/wal.md``.

Robustness rules this module keeps:

* ``WAL.open`` validates the whole file and refuses a damaged one with ``WALCorruptError``
  (path, byte offset, record index, what is wrong, the recovery command). It never
  truncates or guesses; only the operator-run ``recover`` drops data, after copying it.
* One frame is one ``os.write`` under a lock, so appends never interleave in-process; a
  failed write is rolled back to the last good size or the WAL refuses further use.
* Creation, rotation and recovery write a new file, fsync it, rename it over the old one
  and fsync the directory, so a crash at any point leaves a WAL that opens and replays
  the same records.
* An exclusive ``flock`` stops two processes from writing one WAL.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from chain.durable import atomic_write, sync_data, sync_dir, tmp_path, write_all, write_new_file

MAGIC = b"\x89MLWAL\r\n"
VERSION = 1
HEADER = MAGIC + struct.pack(">I", VERSION)
HEADER_SIZE = len(HEADER)  # 12
# a rotated-in file stays open for the appends that follow
_NEW_FILE_FLAGS = os.O_RDWR | os.O_APPEND
FRAME_HEADER_SIZE = 8  # u32 length, u32 crc
MAX_RECORD_BYTES = 8 * 1024 * 1024
MAX_PAYLOAD_BYTES = MAX_RECORD_BYTES + 1  # one type byte precedes the record
MAX_HEIGHT = (1 << 64) - 1

TYPE_DATA = 0x01
TYPE_END_HEIGHT = 0x02

DEFAULT_RECOVERY_HINT = "mutual recover-wal --home <node home directory>"

_FRAME_HEADER = struct.Struct(">II")
_HEIGHT = struct.Struct(">Q")
_ZERO_SCAN_CHUNK = 1 << 16


class WALError(Exception):
    """The WAL cannot be used as asked (closed, locked, failed write, bad argument)."""


class WALLockedError(WALError):
    """Another open WAL (in this or another process) holds the file's lock."""


class WALCorruptError(WALError):
    """The WAL file is damaged; the node must stop until an operator runs the recovery."""

    def __init__(
        self,
        path: Path,
        offset: int,
        record_index: int | None,
        reason: str,
        recovery_hint: str,
        torn_tail: bool,
    ) -> None:
        self.path = path
        self.offset = offset
        # None when the damage is in the file header rather than in a record
        self.record_index = record_index
        self.reason = reason
        self.recovery_hint = recovery_hint
        # True when the damage looks like an interrupted final append (crash), False
        # when valid-looking data follows it or the bytes cannot come from a torn write
        self.torn_tail = torn_tail
        where = "file header" if record_index is None else f"record #{record_index}"
        kind = "torn tail (interrupted write)" if torn_tail else "corruption"
        super().__init__(
            f"consensus WAL {path} is damaged at byte offset {offset} ({where}, {kind}): "
            f"{reason}. The node will not start on a damaged WAL. To keep every valid "
            f"record before this point and move the damaged file aside, run: {recovery_hint}"
        )


@dataclass(frozen=True)
class RecoveryReport:
    """What ``recover`` did to a WAL file (plain JSON-friendly values for the CLI)."""

    path: str
    was_corrupt: bool
    records_kept: int  # frames kept, data records and height markers together
    bytes_kept: int  # size of the WAL after recovery
    bytes_dropped: int
    backup_path: str | None  # the untouched copy of the damaged file
    first_bad_offset: int | None
    first_bad_record: int | None
    reason: str | None
    torn_tail: bool
    last_committed_height: int | None

    def summary(self) -> str:
        if not self.was_corrupt:
            return f"WAL {self.path} is intact ({self.records_kept} records); nothing to do"
        return (
            f"WAL {self.path} recovered: kept {self.records_kept} records "
            f"({self.bytes_kept} bytes), dropped {self.bytes_dropped} bytes from offset "
            f"{self.first_bad_offset} ({self.reason}); damaged file saved as {self.backup_path}"
        )


@dataclass(frozen=True)
class _Frame:
    index: int
    offset: int
    kind: int
    body: bytes


@dataclass(frozen=True)
class _Damage:
    offset: int
    record_index: int | None
    reason: str
    torn_tail: bool


class _ScanResult:
    """Everything a validating pass over a WAL file learned."""

    def __init__(self) -> None:
        self.valid_size = 0  # bytes of header + valid frames
        self.frames = 0
        self.last_height: int | None = None
        self.pending: list[bytes] = []  # data records since the last height marker
        self.damage: _Damage | None = None


# --- low-level helpers ---------------------------------------------------------------


def _frame(kind: int, body: bytes) -> bytes:
    payload = bytes((kind,)) + body
    return _FRAME_HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        raise WALLockedError(
            f"WAL {path} is locked by another open WAL (is a node running on this home?)"
        ) from exc


def _open_locked(path: Path) -> int:
    """Open ``path`` read/append and lock it, making sure the lock is on the live file.

    A concurrent rotation can rename a new file over ``path`` between our open and our
    lock; then we hold a lock on an orphan inode and must retry on the new one.
    """
    for _ in range(5):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        try:
            _lock(fd, path)
            st = os.fstat(fd)
            current = os.stat(path)
        except BaseException:
            os.close(fd)
            raise
        if (st.st_dev, st.st_ino) == (current.st_dev, current.st_ino):
            return fd
        os.close(fd)
    raise WALLockedError(f"{path} keeps being replaced while opening it")


def _rest_is_zero(reader: BinaryIO) -> bool:
    while chunk := reader.read(_ZERO_SCAN_CHUNK):
        if chunk.count(0) != len(chunk):
            return False
    return True


def _scan(reader: BinaryIO, file_size: int) -> _ScanResult:
    """Validate a WAL read from offset 0, stopping at the first damage."""
    result = _ScanResult()
    header = reader.read(HEADER_SIZE)
    if len(header) < HEADER_SIZE:
        # our own creation is atomic, so a short header means outside damage
        result.damage = _Damage(
            0, None, f"file is {len(header)} bytes, shorter than the {HEADER_SIZE}-byte header",
            torn_tail=HEADER.startswith(header),
        )
        return result
    if header[: len(MAGIC)] != MAGIC:
        result.damage = _Damage(0, None, "bad magic: not a mutual-ledger WAL file", False)
        return result
    (version,) = struct.unpack(">I", header[len(MAGIC):])
    if version != VERSION:
        result.damage = _Damage(
            len(MAGIC), None, f"unsupported WAL version {version} (this node reads {VERSION})",
            False,
        )
        return result
    result.valid_size = HEADER_SIZE
    for outcome in _frames(reader, HEADER_SIZE, file_size):
        if isinstance(outcome, _Frame):
            outcome = _apply_frame(result, outcome)
        if isinstance(outcome, _Damage):
            result.damage = outcome
            break
    return result


def _apply_frame(result: _ScanResult, frame: _Frame) -> _Damage | None:
    """Fold one checksummed frame into ``result``, or say why its content is invalid."""
    if frame.kind == TYPE_DATA:
        result.pending.append(frame.body)
    elif frame.kind == TYPE_END_HEIGHT:
        if len(frame.body) != _HEIGHT.size:
            return _Damage(
                frame.offset, frame.index,
                f"height marker body is {len(frame.body)} bytes, expected {_HEIGHT.size}",
                False,
            )
        (height,) = _HEIGHT.unpack(frame.body)
        if result.last_height is not None and height <= result.last_height:
            return _Damage(
                frame.offset, frame.index,
                f"height marker {height} does not follow marker {result.last_height}",
                False,
            )
        result.last_height = height
        result.pending = []
    else:
        return _Damage(frame.offset, frame.index, f"unknown record type 0x{frame.kind:02x}", False)
    result.frames = frame.index + 1
    result.valid_size = frame.offset + FRAME_HEADER_SIZE + 1 + len(frame.body)
    return None


def _frames(reader: BinaryIO, offset: int, file_size: int) -> Iterator[_Frame | _Damage]:
    """Yield the checksummed frames from ``offset``; the first problem is yielded last."""
    index = 0
    while True:
        head = reader.read(FRAME_HEADER_SIZE)
        if not head:
            return
        if len(head) < FRAME_HEADER_SIZE:
            yield _Damage(
                offset, index,
                f"file ends {len(head)} bytes into the {FRAME_HEADER_SIZE}-byte frame header",
                True,
            )
            return
        length, crc = _FRAME_HEADER.unpack(head)
        remaining = file_size - offset - FRAME_HEADER_SIZE
        if length == 0 or length > MAX_PAYLOAD_BYTES:
            problem = (
                "frame length is 0 (a frame holds at least its type byte)"
                if length == 0
                else f"frame length {length} exceeds the maximum {MAX_PAYLOAD_BYTES}"
            )
            # a filesystem that crashed after growing the file but before writing it
            # leaves zeros: that is a torn tail, not corruption of written data
            torn = head == bytes(FRAME_HEADER_SIZE) and _rest_is_zero(reader)
            yield _Damage(offset, index, problem, torn)
            return
        if length > remaining:
            yield _Damage(
                offset, index,
                f"frame declares {length} payload bytes but the file ends after "
                f"{remaining} (truncated payload, or a corrupt length)",
                True,
            )
            return
        payload = reader.read(length)
        if zlib.crc32(payload) != crc:
            at_end = offset + FRAME_HEADER_SIZE + length == file_size
            zeros = payload.count(0) == len(payload)
            yield _Damage(
                offset, index,
                f"checksum mismatch (stored 0x{crc:08x}, computed 0x{zlib.crc32(payload):08x})",
                at_end or (zeros and _rest_is_zero(reader)),
            )
            return
        yield _Frame(index, offset, payload[0], payload[1:])
        offset += FRAME_HEADER_SIZE + length
        index += 1


def _scan_fd(fd: int) -> _ScanResult:
    size = os.fstat(fd).st_size
    with open(os.dup(fd), "rb", buffering=io.DEFAULT_BUFFER_SIZE * 16) as reader:
        reader.seek(0)
        return _scan(reader, size)





def backup_path(path: Path | str) -> Path:
    """Where rotation keeps the previous WAL file (``<path>.1``)."""
    path = Path(path)
    return path.with_name(path.name + ".1")


# --- the WAL -------------------------------------------------------------------------


class WAL:
    """An open, validated, exclusively locked consensus WAL. Create it with ``WAL.open``."""

    def __init__(self, path: Path, fd: int, scan: _ScanResult, created: bool) -> None:
        self._path = path
        self._fd: int | None = fd
        self._size = scan.valid_size
        self._last_height = scan.last_height
        self._pending = scan.pending
        self._dirty = False  # appended without sync since the last fsync
        self._broken: str | None = None
        self._mutex = threading.Lock()
        self.created = created

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        create: bool = True,
        recovery_hint: str = DEFAULT_RECOVERY_HINT,
    ) -> WAL:
        """Open (or with ``create`` atomically create) the WAL and validate all of it.

        Raises ``WALCorruptError`` on any damage, ``WALLockedError`` if another WAL object
        holds the file, ``FileNotFoundError`` if it is missing and ``create`` is False.
        """
        path = Path(path)
        created = False
        if not path.exists():
            if not create:
                raise FileNotFoundError(errno.ENOENT, "consensus WAL does not exist", str(path))
            _create(path)
            created = True
        fd = _open_locked(path)
        try:
            scan = _scan_fd(fd)
        except BaseException:
            os.close(fd)
            raise
        if scan.damage is not None:
            os.close(fd)
            d = scan.damage
            raise WALCorruptError(path, d.offset, d.record_index, d.reason, recovery_hint,
                                  d.torn_tail)
        return cls(path, fd, scan, created)

    # -- properties --

    @property
    def path(self) -> Path:
        return self._path

    @property
    def closed(self) -> bool:
        return self._fd is None

    @property
    def size(self) -> int:
        """Bytes in the current file (header and frames)."""
        return self._size

    @property
    def last_committed_height(self) -> int | None:
        """The height of the last end-of-height marker, None if the WAL has none."""
        return self._last_height

    # -- writing --

    def append(self, record: bytes, *, sync: bool) -> None:
        """Append one opaque record; with ``sync`` it is on disk when this returns.

        Records appended with ``sync=False`` survive a process crash (they are in the
        kernel) and become durable with the next synced append, marker or ``close``.
        """
        if not isinstance(record, bytes | bytearray | memoryview):
            raise TypeError(f"a WAL record is bytes, not {type(record).__name__}")
        record = bytes(record)
        if len(record) > MAX_RECORD_BYTES:
            raise WALError(
                f"record of {len(record)} bytes exceeds the maximum {MAX_RECORD_BYTES}"
            )
        with self._mutex:
            self._write(_frame(TYPE_DATA, record), sync)
            self._pending.append(record)

    def end_height(self, height: int) -> None:
        """Mark ``height`` committed (fsynced). Write it after the block is in the store."""
        if isinstance(height, bool) or not isinstance(height, int):
            raise TypeError("height must be an int")
        if not 0 <= height <= MAX_HEIGHT:
            raise WALError(f"height {height} out of range")
        with self._mutex:
            if self._last_height is not None and height <= self._last_height:
                raise WALError(
                    f"height marker {height} must be above the last marker {self._last_height}"
                )
            self._write(_frame(TYPE_END_HEIGHT, _HEIGHT.pack(height)), True)
            self._last_height = height
            self._pending = []

    # the driver's brief names the marker both ways
    append_height_marker = end_height

    def rotate(self) -> None:
        """Start a fresh file holding only what replay needs; keep the old one as ``.1``.

        The new file is written and fsynced before it is renamed over the WAL, and the old
        file is hard-linked to ``<path>.1`` first, so a crash at any step leaves either the
        old or the new file at ``path``; both replay the same records.
        """
        with self._mutex:
            self._check_usable()
            chunks = [HEADER]
            if self._last_height is not None:
                chunks.append(_frame(TYPE_END_HEIGHT, _HEIGHT.pack(self._last_height)))
            chunks.extend(_frame(TYPE_DATA, r) for r in self._pending)
            tmp = tmp_path(self._path)
            new_fd = write_new_file(tmp, chunks, flags=_NEW_FILE_FLAGS)
            try:
                _lock(new_fd, self._path)
                self._link_backup()
                os.replace(tmp, self._path)
            except BaseException:
                os.close(new_fd)
                raise
            # from here on ``path`` is the new file: our appends must go there
            assert self._fd is not None
            old_fd, self._fd = self._fd, new_fd
            os.close(old_fd)
            self._size = sum(len(c) for c in chunks)
            self._dirty = False
            try:
                sync_dir(self._path.parent)
            except OSError as exc:
                self._broken = f"fsync of the WAL directory failed: {exc}"
                raise WALError(f"WAL rotation could not fsync the directory: {exc}") from exc

    def _link_backup(self) -> None:
        backup = backup_path(self._path)
        staging = backup.with_name(backup.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)  # left by a crash during an earlier rotation
        os.link(self._path, staging)
        os.replace(staging, backup)

    def _write(self, frame: bytes, sync: bool) -> None:
        self._check_usable()
        assert self._fd is not None
        try:
            write_all(self._fd, frame)
        except OSError as exc:  # e.g. the disk is full
            self._roll_back(exc)
            raise WALError(f"WAL write failed: {exc}") from exc
        except BaseException as exc:
            self._roll_back(exc)
            raise
        self._size += len(frame)
        self._dirty = True
        if sync:
            try:
                sync_data(self._fd)
            except OSError as exc:
                # after a failed fsync the page cache state is unknowable (the "fsyncgate"
                # lesson): never retry, refuse further use so the node stops
                self._broken = f"fsync failed: {exc}"
                raise WALError(f"WAL fsync failed, the WAL is unusable: {exc}") from exc
            self._dirty = False

    def _roll_back(self, exc: BaseException) -> None:
        # a partial frame must not stay behind valid ones: cut back to the last good size
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as trunc_exc:
            self._broken = f"write failed ({exc}) and truncating it failed ({trunc_exc})"

    def _check_usable(self) -> None:
        if self._fd is None:
            raise WALError("the WAL is closed")
        if self._broken is not None:
            raise WALError(f"the WAL is unusable after an I/O error: {self._broken}")

    # -- reading --

    def records_since_last_marker(self) -> list[bytes]:
        """The data records after the last end-of-height marker, in append order."""
        with self._mutex:
            return list(self._pending)

    def replay(self, height: int) -> list[bytes]:
        """The records to replay when resuming consensus at ``height``.

        * last marker is ``height - 1`` (or there is no marker): the records since it;
        * last marker below ``height - 1``: the records belong to a height the store has
          already committed (crash between commit and marker, or block sync): none;
        * last marker at or above ``height``: the WAL is ahead of the block store, which
          must not happen; raises ``WALError`` rather than guess.
        """
        if isinstance(height, bool) or not isinstance(height, int):
            raise TypeError("height must be an int")
        with self._mutex:
            last = self._last_height
            if last is not None and last >= height:
                raise WALError(
                    f"WAL {self._path} has the end marker of height {last} but consensus "
                    f"resumes at height {height}: the block store is behind the WAL (if "
                    f"the database was lost, move {self._path.name} aside, keep "
                    f"signer_state.json, and start again: the node re-syncs the blocks)"
                )
            if last is None or last == height - 1:
                return list(self._pending)
            return []

    # -- closing --

    def close(self) -> None:
        """Fsync anything appended without sync, release the lock, close. Idempotent."""
        with self._mutex:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                if self._dirty and self._broken is None:
                    sync_data(fd)
            finally:
                os.close(fd)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self._size} bytes"
        return f"WAL({str(self._path)!r}, {state}, last_committed_height={self._last_height})"


def _create(path: Path) -> None:
    """Atomically create an empty WAL: a torn header is then impossible."""
    tmp = tmp_path(path)
    fd = write_new_file(tmp, [HEADER], flags=_NEW_FILE_FLAGS)
    os.close(fd)
    try:
        # link, not rename: never clobber a WAL another process created meanwhile
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    sync_dir(path.parent)


# --- recovery --------------------------------------------------------------------------


def recover(path: Path | str) -> RecoveryReport:
    """Keep the valid prefix of a damaged WAL; the damaged file is copied aside first.

    The function behind ``mutual recover-wal``. It never deletes data: the original file
    is copied to ``<path>.corrupt-<n>`` (n = 1, 2, ... the first unused) and fsynced before
    the WAL is atomically replaced by exactly the bytes before the first bad record. An
    intact WAL is left untouched. Refuses files that are not a WAL of a version this node
    reads, and a WAL that is open (locked) elsewhere.
    """
    path = Path(path)
    fd = _open_locked(path)
    try:
        scan = _scan_fd(fd)
        damage = scan.damage
        if damage is None:
            return RecoveryReport(
                str(path), False, scan.frames, scan.valid_size, 0, None, None, None, None, False,
                scan.last_height,
            )
        if damage.record_index is None and not damage.torn_tail:
            raise WALError(
                f"refusing to recover {path}: {damage.reason}; the file was left untouched"
            )
        total = os.fstat(fd).st_size
        backup = _copy_aside(fd, path)
        # a damaged header (only a torn one gets this far) keeps nothing but a fresh header
        kept = scan.valid_size
        atomic_write(path, _read_range(fd, 0, kept) if kept else [HEADER])
        return RecoveryReport(
            str(path), True, scan.frames, max(kept, HEADER_SIZE), total - kept, str(backup),
            damage.offset,
            damage.record_index, damage.reason, damage.torn_tail, scan.last_height,
        )
    finally:
        os.close(fd)


def _read_range(fd: int, start: int, end: int) -> Iterator[bytes]:
    position = start
    while position < end:
        chunk = os.pread(fd, min(1 << 20, end - position), position)
        if not chunk:
            raise WALError("the WAL shrank while it was being recovered")
        position += len(chunk)
        yield chunk


def _copy_aside(fd: int, path: Path) -> Path:
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.name}.corrupt-{n}")
        try:
            out = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        try:
            for chunk in _read_range(fd, 0, os.fstat(fd).st_size):
                write_all(out, chunk)
            sync_data(out)
        finally:
            os.close(out)
        sync_dir(path.parent)
        return candidate
    raise WALError(f"too many {path.name}.corrupt-<n> copies next to the WAL; clean some up")
