"""LevelDB table reads: pread by default (node/store/leveldb_env.py), mmap where that is refused.

Each case runs in a fresh interpreter: the switch only works before a process opens its
first database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from node.store.leveldb_env import elf_symbols

ROOT = Path(__file__).resolve().parent.parent

# writes enough for several table files, compacts, reads them back, then reports how the
# process reads tables and whether any table file is mapped into it
PROBE = textwrap.dedent("""
    import json, sys
    from node.store import leveldb_env
    if len(sys.argv) > 2:
        leveldb_env._DEFAULT_LIMIT = int(sys.argv[2])   # pretend another build
    from node.store.kvstore import LevelKV
    kv = LevelKV(sys.argv[1], write_buffer_bytes=1 << 20)
    for start in range(0, 40_000, 5_000):
        batch = kv.batch()
        for i in range(start, start + 5_000):
            batch.put(b"k%08d" % i, b"v" * 200)
        kv.write(batch)
    kv.compact()
    assert all(kv.get(b"k%08d" % i) == b"v" * 200 for i in range(0, 40_000, 7))
    with open("/proc/self/maps") as f:
        mapped = sum(1 for line in f if line.rstrip().endswith(".ldb"))
    kv.close()
    # threads that allocate through malloc (bytes over 512 bytes), then glibc's count of
    # arenas ("heaps" in malloc_info)
    import ctypes, os, re, threading
    together = threading.Barrier(4)  # all four alive at once: none reuses another's arena
    def churn():
        junk = [bytes(2000 + i) for i in range(2000)]
        together.wait(30)
        del junk
    threads = [threading.Thread(target=churn) for _ in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    libc = ctypes.CDLL(None)
    heaps = None
    if hasattr(libc, "malloc_info") and hasattr(libc, "gnu_get_libc_version"):
        libc.fdopen.restype = ctypes.c_void_p
        r, w = os.pipe()
        fp = ctypes.c_void_p(libc.fdopen(w, b"w"))
        libc.malloc_info(0, fp)
        libc.fclose(fp)
        xml = b""
        while chunk := os.read(r, 65536):
            xml += chunk
        heaps = len(re.findall(rb'<heap nr=', xml))
    print(json.dumps({"reads": leveldb_env.table_reads(), "mapped": mapped, "heaps": heaps}))
""")


def _probe(path: Path, *extra: str, env: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    out = subprocess.run([sys.executable, "-c", PROBE, str(path), *extra], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_tables_are_read_without_mapping_them(tmp_path: Path) -> None:
    result = _probe(tmp_path / "db")
    assert result["reads"] == "pread", (
        f"node/store/leveldb_env.py did not recognise this plyvel/LevelDB build "
        f"(plyvel {version('plyvel')}): {result['reads']}. LevelDB still maps its tables; "
        "re-check the g_mmap_limit symbol, its default and the plyvel pin in pyproject.toml")
    assert result["mapped"] == 0, "pread was switched on but table files are still mapped"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_threads_share_the_capped_malloc_arenas(tmp_path: Path) -> None:
    capped = _probe(tmp_path / "a")
    if capped["heaps"] is None:
        pytest.skip("not glibc")
    assert capped["heaps"] <= 2
    # an operator's own MALLOC_ARENA_MAX is left alone
    chosen = _probe(tmp_path / "b", env={"MALLOC_ARENA_MAX": "8"})
    assert chosen["heaps"] > 2


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_an_unexpected_limit_is_left_alone(tmp_path: Path) -> None:
    # a library whose variable does not hold LevelDB's default is not written to: LevelDB
    # keeps its mmap reads, and says so
    result = _probe(tmp_path / "db", "999")
    assert result["reads"].startswith("mmap (") and "holds 1000" in result["reads"]
    assert result["mapped"] > 0


def test_elf_symbols_refuses_other_files(tmp_path: Path) -> None:
    bogus = tmp_path / "not-elf.so"
    bogus.write_bytes(b"#!/bin/sh\n" * 10)
    with pytest.raises(ValueError, match="not a 64-bit"):
        elf_symbols(str(bogus), {b"x"})
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(b"\x7fELF\x02\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="malformed ELF"):
        elf_symbols(str(truncated), {b"x"})
    inconsistent = tmp_path / "inconsistent.so"  # one section header, far past the end
    header = bytearray(b"\x7fELF\x02\x01" + b"\x00" * 58)
    header[0x28:0x30] = (1 << 20).to_bytes(8, "little")
    header[0x3A:0x3E] = (64).to_bytes(2, "little") + (1).to_bytes(2, "little")
    inconsistent.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="malformed ELF"):
        elf_symbols(str(inconsistent), {b"x"})


def test_elf_symbols_finds_an_exported_function() -> None:
    # the interpreter's own binary or libpython exports Py_Initialize
    import sysconfig
    candidates = [Path(sys.executable).resolve()]
    libdir, ldlib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and ldlib:
        candidates.append(Path(libdir) / ldlib)
    found = [elf_symbols(str(p), {b"Py_Initialize"}) for p in candidates if p.is_file()]
    assert any(b"Py_Initialize" in f and f[b"Py_Initialize"] > 0 for f in found)
