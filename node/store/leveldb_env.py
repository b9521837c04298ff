"""Make LevelDB read its tables with ``pread`` instead of ``mmap``, and keep its background
thread's allocations in a shared malloc arena.

LevelDB 1.22's POSIX Env maps up to 1,000 open table files and serves reads straight from
those mappings. Every page a read (or a compaction) touches then stays in the process's
RSS until the table is closed, and a random read maps a whole page-cache folio around
its page: the million-member bench carried 120-580 MB of such pages, more than its
caches. With the limit at 0, LevelDB reads tables with ``pread`` into its block cache
(heap, bounded by ``cache_bytes``) and the file pages stay in the kernel's page cache,
shared and reclaimable, outside the process. It was measured no slower
(``python -m devnet.bench_state``, README "Memory").

plyvel does not expose the knob. LevelDB keeps it in ``g_mmap_limit``, a variable its
test helper ``EnvPosixTestHelper::SetReadOnlyMMapLimit`` sets and that the default Env
reads once, when the process opens its first database. The variable is not exported, so
this module finds it in the loaded library's ELF symbol table, checks that the address
lies in that library's writable mapping and holds LevelDB's default (1000), and only
then writes 0. Anything unexpected (another build, a stripped library, a malformed file)
leaves LevelDB as it is and says why in ``table_reads()``. The switch only takes effect
before the process's first database opens, which is why LevelKV calls ``prepare`` before
every open; a database opened through plyvel directly, before any LevelKV, would keep
the mmap reads without this module being able to tell.

glibc gives each new thread its own malloc arena (up to 8 per core), and an arena keeps
the memory its thread freed for that thread alone: LevelDB's compaction thread and a
writer thread held ~50 MB that way at a million members. Unless ``MALLOC_ARENA_MAX`` is
set, ``prepare`` caps the process at two arenas (the main thread's and one for the rest),
measured no slower; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading

import plyvel

_LIMIT_SYMBOL = b"_ZN7leveldb12_GLOBAL__N_112g_mmap_limitE"   # leveldb::(anon)::g_mmap_limit
_ANCHOR_SYMBOL = b"_ZN7leveldb3Env7DefaultEv"                 # exported: leveldb::Env::Default
_DEFAULT_LIMIT = 1000  # kDefaultMmapLimit on 64-bit builds
_M_ARENA_MAX = -8       # mallopt parameter (glibc malloc.h)
MALLOC_ARENAS = 2

_lock = threading.Lock()
_state: str | None = None  # None until the first database is about to open


def elf_symbols(path: str, names: set[bytes]) -> dict[bytes, int]:
    """The values (addresses relative to the load base) of ``names`` in the ELF64
    little-endian file at ``path``, from its .symtab and .dynsym; names not found are
    absent from the result. Raises ValueError for a file that is not such an ELF."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4:5] != b"\x02" or data[5:6] != b"\x01":
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    try:
        return _symbols(data, names)
    except (struct.error, IndexError, ValueError) as exc:  # truncated or inconsistent
        raise ValueError(f"{path}: malformed ELF file ({exc})") from None


def _symbols(data: bytes, names: set[bytes]) -> dict[bytes, int]:
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    found: dict[bytes, int] = {}
    for sh_type, sh_offset, sh_size, sh_link in ((s[1], s[4], s[5], s[6]) for s in sections):
        if sh_type not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        str_off = sections[sh_link][4]
        for off in range(sh_offset, sh_offset + sh_size, 24):
            st_name, _, _, st_shndx, st_value, _ = struct.unpack_from("<IBBHQQ", data, off)
            if st_shndx == 0 or st_value == 0:
                continue  # undefined
            start = str_off + st_name
            name = data[start:data.index(b"\0", start)]
            if name in names:
                found[name] = st_value
    return found


def _mappings() -> list[tuple[int, int, str, str]]:
    """(start, end, permissions, path) of this process's file mappings."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, parts[1], parts[5].rstrip("\n")))
    return out


def _disable_mmap() -> str:
    maps = _mappings()
    libs = sorted({p for _, _, _, p in maps
                   if "leveldb" in os.path.basename(p) or "_plyvel" in os.path.basename(p)})
    for lib in libs:
        try:
            syms = elf_symbols(lib, {_LIMIT_SYMBOL, _ANCHOR_SYMBOL})
        except (OSError, ValueError):
            continue
        if _LIMIT_SYMBOL not in syms or _ANCHOR_SYMBOL not in syms:
            continue
        try:
            anchor = ctypes.cast(getattr(ctypes.CDLL(lib), _ANCHOR_SYMBOL.decode()),
                                 ctypes.c_void_p).value
        except (OSError, AttributeError):
            continue
        if not anchor:
            continue
        addr = anchor - syms[_ANCHOR_SYMBOL] + syms[_LIMIT_SYMBOL]
        if not any(lo <= addr and addr + 4 <= hi and perms.startswith("rw") and path == lib
                   for lo, hi, perms, path in maps):
            return f"mmap (g_mmap_limit of {lib} is not in its writable mapping)"
        limit = ctypes.c_int.from_address(addr)
        if limit.value != _DEFAULT_LIMIT:
            return f"mmap (g_mmap_limit of {lib} holds {limit.value}, not LevelDB's default)"
        limit.value = 0
        return "pread"
    return "mmap (LevelDB's mmap limit was not found in the loaded library's symbols)"


def _limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at MALLOC_ARENAS, unless the environment chose already;
    True if the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc: its mallopt has no such parameter
        return bool(libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
    except (OSError, AttributeError):
        return False


def prepare() -> str:
    """Before the process's first database opens (LevelKV calls this before every open):
    cap the malloc arenas and switch table reads to ``pread``; returns ``table_reads()``."""
    global _state
    with _lock:
        if _state is None:
            _limit_malloc_arenas()
            if not hasattr(plyvel, "DB"):
                _state = "mmap (plyvel not loaded)"
            else:
                try:
                    _state = _disable_mmap()
                except OSError as exc:  # no /proc: not Linux
                    _state = f"mmap ({exc.strerror or exc})"
                except Exception as exc:  # never let this stop a database from opening
                    _state = f"mmap (the switch failed: {type(exc).__name__}: {exc})"
        return _state


def table_reads() -> str:
    """How LevelDB reads table files in this process: ``"pread"``, or ``"mmap (why)"``,
    or ``"not decided"`` before the first database opened."""
    return _state or "not decided"
