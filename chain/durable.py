"""Durable file writes: the one ``atomic_write`` every door uses, and its parts.

A file written with ``atomic_write`` is, after a crash at any moment, either the old file
or the new one, whole; once the call returns the new one is on disk. The sequence is the
classic one (write ``<path>.tmp``, sync it, rename it over ``<path>``, sync the folder so
the rename itself survives a power cut). Key files, the signer's state, the consensus WAL
(its recovery; its rotation uses the parts, for it keeps the new file open) and export
archives go through it.

It lives in ``chain`` because key files are written by operators (``node``) and members
and auditors too, and ``chain`` is the one package every door may import.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

if sys.platform == "darwin":  # pragma: no cover - the project runs on Linux
    import fcntl


def sync_data(fd: int) -> None:
    """Persist a file's data and size. fdatasync skips the inode-timestamp write that
    fsync adds (the size is still persisted, all an append needs); macOS needs
    F_FULLFSYNC to reach the platter."""
    if sys.platform == "darwin":  # pragma: no cover
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    elif hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover
        os.fsync(fd)


def sync_dir(directory: str | Path) -> None:
    """Persist a folder's entries (a rename or a new file in it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (it may write fewer than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_new_file(tmp: Path, chunks: Iterable[bytes], mode: int = 0o600,
                   flags: int = os.O_WRONLY) -> int:
    """Write ``chunks`` to a fresh ``tmp`` (a stale leftover is truncated and given
    ``mode``), sync it and return its open descriptor; on any error ``tmp`` is closed.
    ``flags`` adds to ``O_CREAT | O_TRUNC | O_CLOEXEC`` (the WAL keeps it ``O_RDWR |
    O_APPEND``)."""
    fd = os.open(tmp, flags | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        # a leftover tmp keeps its old mode through O_TRUNC; a key must never be readable
        os.fchmod(fd, mode)
        for chunk in chunks:
            write_all(fd, chunk)
        sync_data(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write(path: str | Path, data: bytes | Iterable[bytes], mode: int = 0o600) -> int:
    """Replace ``path`` by ``data`` (bytes, or an iterable of byte chunks written in turn)
    all or nothing, durably; return the number of bytes written. If writing fails (or
    the chunks' iterator raises) the old file is untouched and the tmp file removed."""
    path = Path(path)
    tmp = tmp_path(path)
    chunks = [data] if isinstance(data, bytes | bytearray | memoryview) else data
    written = 0

    def counted() -> Iterable[bytes]:
        nonlocal written
        for chunk in chunks:
            written += len(chunk)
            yield chunk

    try:
        os.close(write_new_file(tmp, counted(), mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sync_dir(path.parent)
    return written
