"""The consensus WAL survives crashes: a crash at every step of a rotation or of the
creation of a WAL, stale partial files, and a real SIGKILL of a process appending with
fsync (no acknowledged record is lost; a torn write is recovered)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from chain import durable
from node.store import wal as walmod
from node.store.wal import (
    HEADER,
    HEADER_SIZE,
    WAL,
    WALCorruptError,
    backup_path,
    recover,
)
from tests.test_wal import HINT


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point of the rotation runs."""


def _crash_on_call(monkeypatch, target, name: str, n: int) -> None:
    real = getattr(target, name)
    count = {"calls": 0}

    def wrapper(*args, **kwargs):
        count["calls"] += 1
        if count["calls"] == n:
            raise SimulatedCrash(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


ROTATION_CRASH_POINTS = {
    "fsync of the new file": (durable, "sync_data", 1),
    "hard-linking the backup": (os, "link", 1),
    "renaming the backup into place": (os, "replace", 1),
    "renaming the new file over the WAL": (os, "replace", 2),
    "fsync of the directory": (walmod, "sync_dir", 1),
}


@pytest.mark.parametrize("point", sorted(ROTATION_CRASH_POINTS))
@pytest.mark.parametrize("pending", [[], [b"p1", b"p2"]])
def test_crash_during_rotation_leaves_a_wal_that_replays(
    tmp_path: Path, monkeypatch, point: str, pending: list[bytes]
) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(b"old height", sync=True)
        w.end_height(1)
        w.rotate()  # so that a previous backup exists too
        w.append(b"h2", sync=True)
        w.end_height(2)
    w = WAL.open(path)
    for r in pending:
        w.append(r, sync=True)
    target, name, n = ROTATION_CRASH_POINTS[point]
    _crash_on_call(monkeypatch, target, name, n)
    with pytest.raises(SimulatedCrash):
        w.rotate()
    monkeypatch.undo()
    w.close()  # the kernel would release the lock of a dead process

    for _ in range(2):  # reopen after the crash, then once more after a clean rotation
        with WAL.open(path, create=False) as again:
            assert again.last_committed_height == 2
            assert again.replay(3) == pending
            again.rotate()
    with WAL.open(path) as final:
        assert final.replay(3) == pending
        final.append(b"h3", sync=True)
        final.end_height(3)
    assert not _tmp_leftovers(tmp_path)


def _tmp_leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_stale_partial_files_from_a_crash_are_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    with WAL.open(path) as w:
        w.append(b"a", sync=True)
        w.end_height(1)
        w.append(b"b", sync=True)
    # a crash mid-rotation left a half-written new file and a stale backup link
    (tmp_path / "wal.tmp").write_bytes(HEADER[:5])
    (tmp_path / "wal.1.tmp").write_bytes(b"junk")
    with WAL.open(path) as w:
        assert w.replay(2) == [b"b"]
        w.rotate()
        assert backup_path(path).exists()
    assert not _tmp_leftovers(tmp_path)
    with WAL.open(path) as w:
        assert w.replay(2) == [b"b"]


def test_crash_during_creation_leaves_no_wal(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "wal"
    _crash_on_call(monkeypatch, os, "link", 1)
    with pytest.raises(SimulatedCrash):
        WAL.open(path)
    monkeypatch.undo()
    assert not path.exists()  # no torn header, just no file: the next open creates it
    with WAL.open(path) as w:
        assert w.created and w.size == HEADER_SIZE


# --- a real crash --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from node.store.wal import WAL

    def record(h, i):
        size = 50 + (h * 7919 + i * 104729) % 30000 + (1 << 20 if i % 5 == 4 else 0)
        return f"{h}:{i}:".encode() + bytes([(h * 31 + i) % 256]) * size

    tear_at = int(sys.argv[3])
    if tear_at:
        # die by SIGKILL in the middle of the tear_at-th write call, half of it written
        real_write, calls = os.write, [0]
        def tearing_write(fd, data):
            calls[0] += 1
            if calls[0] == tear_at:
                real_write(fd, bytes(data)[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(fd, data)
        os.write = tearing_write

    w = WAL.open(sys.argv[1])
    h = (w.last_committed_height or 0) + 1
    i = len(w.replay(h))
    for step in range(int(sys.argv[2])):
        if step % 17 == 16:
            w.end_height(h)
            print("E", h, flush=True)
            if h % 2 == 0:
                w.rotate()
            h, i = h + 1, 0
        else:
            w.append(record(h, i), sync=True)
            print("R", h, i, flush=True)
            i += 1
    print("DONE", flush=True)
    """
)


def _record(h: int, i: int) -> bytes:
    size = 50 + (h * 7919 + i * 104729) % 30000 + (1 << 20 if i % 5 == 4 else 0)
    return f"{h}:{i}:".encode() + bytes([(h * 31 + i) % 256]) * size


def _run_and_kill(
    path: Path, kill_after_acks: int, deadline_s: float, tear_at: int = 0
) -> list[list[str]]:
    """Run the appender, SIGKILL it after ``kill_after_acks`` acknowledgements (or the
    deadline) unless it killed itself first, and return every line it printed, i.e. what
    it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "100000", str(tear_at)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    buffer = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            stop = time.monotonic() + deadline_s
            while buffer.count(b"\n") < kill_after_acks and time.monotonic() < stop:
                if sel.select(timeout=0.2):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    buffer += chunk
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # lines already in the pipe were acknowledged before the kill
        buffer += proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the appender must die by SIGKILL"
    # an acknowledgement is a whole line: a kill can cut the last one short
    lines = buffer.decode().split("\n")[:-1]
    assert "DONE" not in lines
    return [line.split() for line in lines]


def _open_after_crash(path: Path) -> tuple[WAL, bool]:
    """Open the WAL a killed appender left; recover only a torn tail. Returns (wal, torn)."""
    try:
        return WAL.open(path, recovery_hint=HINT), False
    except WALCorruptError as err:
        # only an interrupted final append is acceptable after a process crash
        assert err.torn_tail, str(err)
        report = recover(path)
        assert report.backup_path is not None and Path(report.backup_path).exists()
        assert report.bytes_dropped > 0
        return WAL.open(path), True


def _check_acknowledged(w: WAL, acks: list[list[str]]) -> None:
    ended = [int(a[1]) for a in acks if a[0] == "E"]
    last_acked_end = max(ended, default=None)
    committed = w.last_committed_height
    if last_acked_end is not None:
        # an acknowledged marker is never lost; at most one more was written
        assert committed in (last_acked_end, last_acked_end + 1)
    in_progress = 1 if committed is None else committed + 1
    recs = w.replay(in_progress)
    # what replays is exactly the in-progress height's records, in order, none missing
    assert recs == [_record(in_progress, i) for i in range(len(recs))]
    acked = [int(a[2]) for a in acks if a[0] == "R" and int(a[1]) == in_progress]
    assert len(recs) >= len(acked), (in_progress, len(recs), acked[-1:])


@pytest.mark.slow
def test_sigkill_while_appending_loses_no_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    acks: list[list[str]] = []  # across runs: each run resumes where the last one stopped
    for kill_after in (40, 123, 77):
        new = _run_and_kill(path, kill_after, deadline_s=20)
        assert new, "the appender acknowledged nothing"
        acks += new
        w, _ = _open_after_crash(path)
        with w:
            _check_acknowledged(w, acks)


# write calls of the appender: the new WAL's header (1), 16 appends (2-17), the height-1
# marker (18), 16 appends, the height-2 marker (35), then the rotation's new file: header
# (36), marker (37). Tearing the header of a file not yet renamed into place is harmless.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("tear_at", "torn"), [(1, False), (6, True), (18, True), (35, True), (36, False), (37, False)]
)
def test_process_killed_mid_write(tmp_path: Path, tear_at: int, torn: bool) -> None:
    path = tmp_path / "wal"
    acks = _run_and_kill(path, 10**9, deadline_s=20, tear_at=tear_at)
    w, was_torn = _open_after_crash(path)
    assert was_torn is torn
    with w:
        _check_acknowledged(w, acks)
    # the validator restarts on the recovered WAL and carries on
    acks += _run_and_kill(path, 30, deadline_s=20)
    w, _ = _open_after_crash(path)
    with w:
        _check_acknowledged(w, acks)
