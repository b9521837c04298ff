"""Tests for the consensus WAL: format, replay, locking, corruption detection, recovery,
failed writes, rotation and a model of all of them (crashes: tests/test_wal_crash.py)."""

from __future__ import annotations

import json
import os
import struct
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.store import wal as walmod
from node.store.wal import (
    FRAME_HEADER_SIZE,
    HEADER,
    HEADER_SIZE,
    MAX_RECORD_BYTES,
    WAL,
    WALCorruptError,
    WALError,
    WALLockedError,
    backup_path,
    recover,
)

HINT = "mutual recover-wal --home /srv/validator-1"


def frame_size(record: bytes) -> int:
    return FRAME_HEADER_SIZE + 1 + len(record)


def marker_size() -> int:
    return FRAME_HEADER_SIZE + 1 + 8


def write_records(path: Path, records: list[bytes]) -> list[int]:
    """Create a WAL holding ``records``; return the byte offset of each frame."""
    offsets = []
    with WAL.open(path) as w:
        for r in records:
            offsets.append(w.size)
            w.append(r, sync=False)
    return offsets


def open_corrupt(path: Path) -> WALCorruptError:
    with pytest.raises(WALCorruptError) as info:
        WAL.open(path, recovery_hint=HINT)
    return info.value


# --- format ----------------------------------------------------------------------------


def test_crc_is_crc32_iso_hdlc() -> None:
    # pins the checksum flavour docs/wal.md promises (the standard CRC-32 check value)
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_file_bytes_match_the_documented_format(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        assert w.created
        w.append(b"abc", sync=True)
        w.end_height(7)
    data = path.read_bytes()
    assert data[:12] == b"\x89MLWAL\r\n\x00\x00\x00\x01" == HEADER
    payload = b"\x01abc"
    assert data[12:20] == struct.pack(">II", 4, zlib.crc32(payload))
    assert data[20:24] == payload
    marker = b"\x02" + (7).to_bytes(8, "big")
    assert data[24:32] == struct.pack(">II", 9, zlib.crc32(marker))
    assert data[32:] == marker


def test_new_wal_is_created_atomically_with_only_a_header(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        assert w.size == HEADER_SIZE
        assert w.last_committed_height is None
    assert path.read_bytes() == HEADER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal"]


def test_open_without_create_requires_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WAL.open(tmp_path / "wal", create=False)
    assert not (tmp_path / "wal").exists()


# --- appending and replay ----------------------------------------------------------------


def test_round_trip_and_replay_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    records = [b"", b"x", bytes(range(256)) * 40, b"\x00" * 9]
    with WAL.open(path) as w:
        for i, r in enumerate(records):
            w.append(r, sync=i % 2 == 0)
        assert w.records_since_last_marker() == records
    with WAL.open(path, create=False) as w:
        assert not w.created
        assert w.records_since_last_marker() == records
        assert w.replay(1) == records
        assert w.size == HEADER_SIZE + sum(frame_size(r) for r in records)


def test_markers_split_heights(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(b"h1-a", sync=True)
        w.end_height(1)
        assert w.records_since_last_marker() == []
        w.append(b"h2-a", sync=True)
        w.append(b"h2-b", sync=False)
        w.append_height_marker(2)
        w.append(b"h3-a", sync=True)
    with WAL.open(path) as w:
        assert w.last_committed_height == 2
        assert w.records_since_last_marker() == [b"h3-a"]
        assert w.replay(3) == [b"h3-a"]
        # the store is ahead of the WAL (crash between commit and marker, or block sync):
        # the records belong to a committed height and must not be replayed
        assert w.replay(4) == []
        assert w.replay(10) == []
        # the WAL is ahead of the store: refuse rather than guess
        for h in (1, 2):
            with pytest.raises(WALError, match="behind the WAL"):
                w.replay(h)


def test_replay_without_any_marker_returns_everything(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    write_records(path, [b"a", b"b"])
    with WAL.open(path) as w:
        assert w.replay(1) == [b"a", b"b"]
        assert w.replay(5) == [b"a", b"b"]


def test_end_height_must_increase_and_bad_input_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.end_height(5)
        w.append(b"r", sync=True)
        size = w.size
        for bad in (5, 4):
            with pytest.raises(WALError, match="above the last marker"):
                w.end_height(bad)
        with pytest.raises(WALError, match="out of range"):
            w.end_height(1 << 64)
        with pytest.raises(TypeError):
            w.end_height(True)
        with pytest.raises(TypeError):
            w.end_height("6")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            w.append("text", sync=True)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            w.replay(None)  # type: ignore[arg-type]
        assert w.size == size
        assert w.last_committed_height == 5
        assert w.records_since_last_marker() == [b"r"]
    assert path.stat().st_size == size


def test_record_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    biggest = b"\xab" * MAX_RECORD_BYTES
    with WAL.open(path) as w:
        with pytest.raises(WALError, match="exceeds the maximum"):
            w.append(biggest + b"!", sync=True)
        assert w.size == HEADER_SIZE
        w.append(biggest, sync=True)
    with WAL.open(path) as w:
        assert w.records_since_last_marker() == [biggest]


def test_bytes_like_records_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(bytearray(b"ba"), sync=False)
        w.append(memoryview(b"mv"), sync=False)
        assert w.records_since_last_marker() == [b"ba", b"mv"]
        assert all(type(r) is bytes for r in w.records_since_last_marker())


def test_closed_wal_refuses_use_and_close_is_idempotent(tmp_path: Path) -> None:
    w = WAL.open(tmp_path / "wal")
    w.close()
    w.close()
    assert w.closed
    with pytest.raises(WALError, match="closed"):
        w.append(b"x", sync=True)
    with pytest.raises(WALError, match="closed"):
        w.end_height(1)
    with pytest.raises(WALError, match="closed"):
        w.rotate()


def test_unsynced_appends_are_synced_on_close(tmp_path: Path, monkeypatch) -> None:
    calls: list[int] = []
    real = walmod.sync_data
    monkeypatch.setattr(walmod, "sync_data", lambda fd: (calls.append(fd), real(fd)))
    w = WAL.open(tmp_path / "wal")
    calls.clear()
    w.append(b"lazy", sync=False)
    assert calls == []
    w.close()
    assert len(calls) == 1
    w2 = WAL.open(tmp_path / "wal")
    calls.clear()
    w2.append(b"eager", sync=True)
    assert len(calls) == 1
    w2.close()  # nothing unsynced: no second fsync
    assert len(calls) == 1


def test_concurrent_appends_from_threads_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:

        def writer(t: int) -> None:
            for i in range(150):
                w.append(f"t{t}-{i}-".encode() * (1 + i % 40), sync=i % 50 == 0)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
        assert not any(th.is_alive() for th in threads)
    with WAL.open(path) as w:
        records = w.records_since_last_marker()
    assert len(records) == 600
    for t in range(4):
        mine = [r for r in records if r.startswith(f"t{t}-".encode())]
        assert mine == [f"t{t}-{i}-".encode() * (1 + i % 40) for i in range(150)]


# --- locking -----------------------------------------------------------------------------


def test_a_wal_cannot_be_opened_twice(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path):
        with pytest.raises(WALLockedError, match=str(path)):
            WAL.open(path)
        with pytest.raises(WALLockedError):
            recover(path)
    with WAL.open(path):
        pass


def test_lock_follows_the_file_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.end_height(1)
        w.rotate()
        with pytest.raises(WALLockedError):
            WAL.open(path)


# --- corruption --------------------------------------------------------------------------

RECORDS = [b"first record", b"second", b"third record here", b"fourth"]


def _offsets(records: list[bytes]) -> list[int]:
    offsets, at = [], HEADER_SIZE
    for r in records:
        offsets.append(at)
        at += frame_size(r)
    return offsets


def flip(data: bytearray, at: int) -> None:
    data[at] ^= 0x5A


CORRUPTIONS = {
    # name: (mutate(bytearray, offsets) -> None, bad record index, torn tail?)
    "payload byte flipped": (lambda d, o: flip(d, o[1] + FRAME_HEADER_SIZE + 3), 1, False),
    "type byte flipped": (lambda d, o: flip(d, o[2] + FRAME_HEADER_SIZE), 2, False),
    "crc byte flipped": (lambda d, o: flip(d, o[2] + 5), 2, False),
    "length shrunk": (lambda d, o: d.__setitem__(slice(o[1], o[1] + 4), b"\x00\x00\x00\x03"), 1, False),
    # a length pointing past the end cannot be told apart from a torn final write
    "length byte flipped": (lambda d, o: flip(d, o[1] + 3), 1, True),
    "length grown past eof": (lambda d, o: d.__setitem__(slice(o[3], o[3] + 4), b"\x00\x01\x00\x00"), 3, True),
    "oversize length": (lambda d, o: d.__setitem__(slice(o[0], o[0] + 4), b"\xff\xff\xff\xff"), 0, False),
    "zero length mid-file": (lambda d, o: d.__setitem__(slice(o[1], o[1] + 4), bytes(4)), 1, False),
    "truncated inside length": (lambda d, o: d.__delitem__(slice(o[3] + 2, None)), 3, True),
    "truncated inside crc": (lambda d, o: d.__delitem__(slice(o[3] + 6, None)), 3, True),
    "truncated payload": (lambda d, o: d.__delitem__(slice(len(d) - 2, None)), 3, True),
    "last payload byte flipped": (lambda d, o: flip(d, len(d) - 1), 3, True),
    "garbage appended": (lambda d, o: d.extend(b"\xde\xad\xbe\xef" * 3), 4, False),
    "short garbage appended": (lambda d, o: d.extend(b"\x07\x07\x07"), 4, True),
    "zero-filled tail": (lambda d, o: d.extend(bytes(4096)), 4, True),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_is_reported_then_recovered(tmp_path: Path, name: str) -> None:
    mutate, bad_index, torn = CORRUPTIONS[name]
    path = tmp_path / "wal"
    write_records(path, RECORDS)
    offsets = _offsets(RECORDS)
    clean_size = path.stat().st_size
    data = bytearray(path.read_bytes())
    mutate(data, offsets)
    path.write_bytes(bytes(data))

    err = open_corrupt(path)
    bad_offset = offsets[bad_index] if bad_index < len(RECORDS) else clean_size
    assert err.path == path
    assert err.offset == bad_offset
    assert err.record_index == bad_index
    assert err.torn_tail is torn
    assert err.recovery_hint == HINT
    assert HINT in str(err) and str(path) in str(err) and f"offset {bad_offset}" in str(err)
    assert err.reason and err.reason in str(err)
    # a refused open never touches the file
    assert path.read_bytes() == bytes(data)

    report = recover(path)
    assert report.was_corrupt
    assert report.first_bad_offset == bad_offset
    assert report.first_bad_record == bad_index
    assert report.records_kept == bad_index
    assert report.bytes_kept == bad_offset
    assert report.bytes_dropped == len(data) - bad_offset
    assert report.torn_tail is torn
    assert report.backup_path == str(tmp_path / "wal.corrupt-1")
    assert Path(report.backup_path).read_bytes() == bytes(data)
    assert json.loads(json.dumps(report.__dict__))["records_kept"] == bad_index
    assert "recovered" in report.summary()
    with WAL.open(path, create=False) as w:
        assert w.records_since_last_marker() == RECORDS[:bad_index]
        w.append(b"after recovery", sync=True)
    with WAL.open(path) as w:
        assert w.records_since_last_marker() == RECORDS[:bad_index] + [b"after recovery"]


def _framed(kind: int, body: bytes) -> bytes:
    payload = bytes((kind,)) + body
    return struct.pack(">II", len(payload), zlib.crc32(payload)) + payload


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (_framed(0x07, b"future"), "unknown record type 0x07"),
        (_framed(0x02, b"\x00" * 4), "height marker body is 4 bytes"),
        (_framed(0x02, (3).to_bytes(8, "big")), "does not follow marker 3"),
        (_framed(0x02, (2).to_bytes(8, "big")), "does not follow marker 3"),
    ],
)
def test_well_checksummed_but_invalid_frames_are_corruption(
    tmp_path: Path, frame: bytes, reason: str
) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(b"a", sync=False)
        w.end_height(3)
        w.append(b"b", sync=False)
        bad_offset = w.size
    with path.open("ab") as f:
        f.write(frame + _framed(0x01, b"later"))
    err = open_corrupt(path)
    assert (err.offset, err.record_index, err.torn_tail) == (bad_offset, 3, False)
    assert reason in err.reason
    report = recover(path)
    assert report.last_committed_height == 3
    with WAL.open(path) as w:
        assert w.replay(4) == [b"b"]


@pytest.mark.parametrize(
    ("content", "reason", "recoverable"),
    [
        (b"", "shorter than the 12-byte header", True),
        (HEADER[:7], "shorter than the 12-byte header", True),
        (b"PK\x03\x04 not a wal at all", "bad magic", False),
        (HEADER[:8] + b"\x00\x00\x00\x02" + _framed(1, b"x"), "unsupported WAL version 2", False),
    ],
)
def test_damaged_header(tmp_path: Path, content: bytes, reason: str, recoverable: bool) -> None:
    path = tmp_path / "wal"
    path.write_bytes(content)
    err = open_corrupt(path)
    assert err.record_index is None
    assert reason in err.reason
    assert "file header" in str(err)
    if recoverable:
        report = recover(path)
        assert report.records_kept == 0 and report.bytes_dropped == len(content)
        assert report.backup_path is not None
        assert Path(report.backup_path).read_bytes() == content
        assert path.read_bytes() == HEADER
    else:
        # not a WAL this node understands: recovery must not overwrite it
        with pytest.raises(WALError, match="refusing to recover"):
            recover(path)
        assert path.read_bytes() == content
        assert list(tmp_path.iterdir()) == [path]


def test_recover_leaves_an_intact_wal_alone(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    write_records(path, RECORDS)
    before = path.read_bytes()
    inode = path.stat().st_ino
    report = recover(path)
    assert not report.was_corrupt
    assert report.records_kept == len(RECORDS) and report.bytes_dropped == 0
    assert report.backup_path is None
    assert "intact" in report.summary()
    assert path.read_bytes() == before and path.stat().st_ino == inode
    assert list(tmp_path.iterdir()) == [path]


def test_recover_never_overwrites_an_earlier_backup(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    write_records(path, RECORDS)
    with path.open("ab") as f:
        f.write(b"\x01")
    first = recover(path)
    with path.open("ab") as f:
        f.write(b"\x02\x02")
    second = recover(path)
    assert first.backup_path == str(tmp_path / "wal.corrupt-1")
    assert second.backup_path == str(tmp_path / "wal.corrupt-2")
    assert Path(first.backup_path).read_bytes().endswith(b"\x01")
    assert Path(second.backup_path).read_bytes().endswith(b"\x02\x02")


def test_recover_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        recover(tmp_path / "wal")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    position=st.integers(min_value=0),
    xor=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_is_detected(
    tmp_path_factory, records: list[bytes], position: int, xor: int
) -> None:
    path = tmp_path_factory.mktemp("flip") / "wal"
    write_records(path, records)
    data = bytearray(path.read_bytes())
    position %= len(data)
    data[position] ^= xor
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruptError) as info:
        WAL.open(path)
    err = info.value
    # the damage is reported at or before the changed byte, at a frame boundary
    assert err.offset <= position
    assert err.offset in [0, HEADER_SIZE - 4, *_offsets(records)]
    if err.record_index is not None:
        recover(path)
        with WAL.open(path) as w:
            assert w.records_since_last_marker() == records[: err.record_index]


# --- failed writes -----------------------------------------------------------------------


def test_failed_write_is_rolled_back(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "wal"
    w = WAL.open(path)
    w.append(b"good", sync=True)
    size = w.size
    real_write = os.write

    def half_then_enospc(fd: int, data) -> int:
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(WALError, match="WAL write failed: .*No space"):
        w.append(b"this frame is torn by a full disk", sync=True)
    monkeypatch.setattr(os, "write", real_write)
    assert path.stat().st_size == size == w.size
    assert w.records_since_last_marker() == [b"good"]
    w.append(b"later", sync=True)
    w.close()
    with WAL.open(path) as w2:
        assert w2.records_since_last_marker() == [b"good", b"later"]


def test_failed_fsync_makes_the_wal_unusable(tmp_path: Path, monkeypatch) -> None:
    w = WAL.open(tmp_path / "wal")

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(walmod, "sync_data", eio)
    with pytest.raises(WALError, match="fsync failed"):
        w.append(b"vote", sync=True)
    with pytest.raises(WALError, match="unusable"):
        w.append(b"next", sync=False)
    with pytest.raises(WALError, match="unusable"):
        w.end_height(1)
    w.close()


def test_short_writes_are_completed(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "wal"
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:3]))
    with WAL.open(path) as w:
        w.append(b"written three bytes at a time", sync=True)
    monkeypatch.setattr(os, "write", real_write)
    with WAL.open(path) as w:
        assert w.records_since_last_marker() == [b"written three bytes at a time"]


# --- rotation ----------------------------------------------------------------------------


def test_rotation_keeps_replay_and_a_backup(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        for h in range(1, 4):
            w.append(f"h{h}".encode() * 50, sync=True)
            w.end_height(h)
        w.append(b"in progress", sync=True)
        before = path.read_bytes()
        w.rotate()
        assert backup_path(path).read_bytes() == before
        assert w.size == HEADER_SIZE + marker_size() + frame_size(b"in progress")
        assert path.stat().st_size == w.size
        w.append(b"after", sync=True)
        assert w.replay(4) == [b"in progress", b"after"]
        w.end_height(4)
        second = path.read_bytes()
        w.rotate()
        assert backup_path(path).read_bytes() == second
    with WAL.open(path) as w:
        assert w.last_committed_height == 4
        assert w.replay(5) == []
        assert path.stat().st_size == HEADER_SIZE + marker_size()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal", "wal.1"]


def test_rotation_of_a_wal_without_markers(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(b"a", sync=True)
        w.rotate()
    with WAL.open(path) as w:
        assert w.last_committed_height is None
        assert w.replay(1) == [b"a"]


# --- a model-based check of appends, markers, rotation and reopen --------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=64), st.booleans()),
        st.tuples(st.just("end")),
        st.tuples(st.just("rotate")),
        st.tuples(st.just("reopen")),
    ),
    max_size=25,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_wal_matches_a_model(tmp_path_factory, ops) -> None:
    path = tmp_path_factory.mktemp("model") / "wal"
    height: int | None = None
    pending: list[bytes] = []
    w = WAL.open(path)
    try:
        for op in ops:
            if op[0] == "append":
                w.append(op[1], sync=op[2])
                pending.append(op[1])
            elif op[0] == "end":
                height = 1 if height is None else height + 1
                w.end_height(height)
                pending = []
            elif op[0] == "rotate":
                w.rotate()
            else:
                w.close()
                w = WAL.open(path, create=False)
            assert w.last_committed_height == height
            assert w.records_since_last_marker() == pending
            assert w.size == path.stat().st_size
    finally:
        w.close()
    with WAL.open(path) as w:
        assert w.replay(1 if height is None else height + 1) == pending
