"""Where the audited chain comes from: a node's API (``NodeSource``), a stopped node's
database or an archive file (``DataSource``), or blocks in memory (``MemorySource``).
Nothing a source says is trusted; the replay checks all of it."""

from __future__ import annotations

import contextlib
import fcntl
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.compare import (
    check_nodes,
    compare_flat,
    compare_served,
    decode_or_bytes,
    first_difference,
)
from audit.report import ABSENT, AuditFailure
from chain.block import Block
from chain.tx import to_jsonable
from chain.vote import MessageError
from contracts import records
from contracts.rules import payout
from contracts.tree import StateTree
from node.store.blockstore import PREFIXES, BlockStore, BlockStoreError

if TYPE_CHECKING:
    from audit.replay import Auditor

CHUNK_BLOCKS = 64            # blocks fetched, decoded and signature-checked together


class SourceError(Exception):
    """The chain source cannot be opened (wrong path, a running node holds the database)."""


# =====================================================================================
# sources
# =====================================================================================

Fetched = list[tuple[int, bytes, bytes | None]]   # (height, block bytes, stored cert bytes)


class Source:
    """Where the chain comes from. Everything it returns is checked, nothing trusted."""

    label = "source"
    wants_results = False  # does check_block_result compare anything?

    def claimed_genesis_hash(self) -> bytes | None:
        return None

    def tip(self) -> int:
        raise NotImplementedError

    def request(self, heights: list[int]) -> Callable[[], Fetched]:
        """Start fetching ``heights``; the returned callable waits for them."""
        raise NotImplementedError

    def check_block_result(self, height: int, state_root: bytes,
                           receipts: list[bytes]) -> None:
        """Compare what the source recorded for ``height`` with the replay's results."""

    def check_final(self, auditor: Auditor) -> None:
        """Compare the source's view of the final state with the replay's."""

    def close(self) -> None:
        pass


class MemorySource(Source):
    """Blocks and certificates held in memory (tests, and chains exported by other tools)."""

    label = "memory"

    def __init__(self, blocks: list[bytes], certificates: dict[int, bytes]) -> None:
        self.blocks = blocks
        self.certificates = certificates

    def tip(self) -> int:
        return len(self.blocks)

    def request(self, heights: list[int]) -> Callable[[], Fetched]:
        got = [(h, self.blocks[h - 1], self.certificates.get(h)) for h in heights]
        return lambda: got


class _DaemonPool:
    """Threads that run submitted calls and never hold up the process's exit.

    A ThreadPoolExecutor's threads are joined when the interpreter exits, so after Ctrl-C
    the audit would wait out ``--timeout`` on a node that stopped answering. These are
    daemon threads: ``close`` drops the queued calls (their futures are cancelled) and
    whatever is still in flight is abandoned with the process."""

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._threads = threads
        for i in range(threads):
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        if self._closed:
            future.cancel()
        else:
            self._queue.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            future, fn, args = item
            if self._closed:
                future.cancel()
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def close(self) -> None:
        self._closed = True
        for _ in range(self._threads):
            self._queue.put(None)


class NodeSource(Source):
    """A node's HTTP API: canonical block and certificate bytes, fetched in parallel."""

    def __init__(self, client: Any, threads: int = 8) -> None:
        from client import ClientError

        self.client = client
        self.label = client.base_url
        self._client_error = ClientError
        self._pool = _DaemonPool(threads, "audit-fetch")
        try:
            self._status = client.status()
        except ClientError as exc:
            raise SourceError(f"cannot read {client.base_url}/status: {exc}") from None
        self.tip_height = int(self._status.get("height", 0))

    def claimed_genesis_hash(self) -> bytes | None:
        value = self._status.get("genesis_hash")
        try:
            return bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            return None

    def tip(self) -> int:
        return self.tip_height

    def _one(self, height: int) -> tuple[int, bytes, bytes | None]:
        try:
            block = self.client.raw_block(height)
        except self._client_error as exc:
            raise AuditFailure(height, f"the node does not serve block {height}: {exc}") from None
        try:
            cert = self.client.raw_certificate(height)
        except self._client_error as exc:
            if exc.status != 404:
                raise AuditFailure(height, f"the node does not serve the certificate of "
                                           f"block {height}: {exc}") from None
            cert = None
        return height, block, cert

    def request(self, heights: list[int]) -> Callable[[], Fetched]:
        futures = [self._pool.submit(self._one, h) for h in heights]
        return lambda: [f.result() for f in futures]

    def check_final(self, auditor: Auditor) -> None:
        """Served settled periods and final claims must be the replay's, and the node's
        state root after the audited tip must be the recomputed one."""
        tip = auditor.height
        for n in sorted(auditor.rules.settled):
            want = to_jsonable(records.load(auditor.state, records.period_key(n)))
            try:
                got = self.client.period(n)
            except self._client_error as exc:
                raise AuditFailure(tip, f"the node does not serve period {n}: {exc}") from None
            compare_served(tip, f"period {n} as served by the node", want, got)
        for cid in sorted(auditor.rules.final_claims(auditor.state)):
            want = to_jsonable(payout.load_claim(auditor.state, cid))
            try:
                got = self.client.claim(cid)
            except self._client_error as exc:
                raise AuditFailure(tip, f"the node does not serve claim {cid}: {exc}") from None
            compare_served(tip, f"claim {cid} as served by the node", want, got)
        self._check_served_changes(auditor)
        root = auditor.state_root.hex()
        try:
            status = self.client.status()
            if status.get("height") == tip:
                claimed, where = status.get("state_root", ABSENT), "/status state_root"
            else:
                nxt = Block.decode(self.client.raw_block(tip + 1))
                claimed, where = nxt.header.state_root.hex(), f"block {tip + 1} header"
        except (self._client_error, MessageError) as exc:
            raise AuditFailure(tip, f"cannot read the node's state root after the tip: "
                                    f"{exc}") from None
        if claimed != root:
            raise AuditFailure(tip, f"the node's state root after block {tip} ({where}) is "
                                    "not the recomputed one", field="state_root",
                               expected=root, found=claimed)

    def _check_served_changes(self, auditor: Auditor) -> None:
        """The validator set changes the node serves (``/validators/changes``, what a
        member's verify-share walks) must be the replay's: each height and set hash. A
        node from before governance (404) serves none to compare."""
        tip = auditor.height
        want = [(e["height"], e["hash"]) for e in auditor.vset_history[1:]]
        got: list[tuple[Any, Any]] = []
        after = 1
        try:
            while len(got) <= len(want):
                page = self.client.validator_changes(from_height=after, limit=1000)
                changes = page.get("changes") if isinstance(page, dict) else None
                if not isinstance(changes, list):
                    raise AuditFailure(tip, "the node's /validators/changes is not a list",
                                       field="validators/changes")
                new = [(c.get("height"), c.get("hash")) for c in changes
                       if isinstance(c, dict) and isinstance(c.get("height"), int)
                       and c["height"] > after]
                got.extend(new)
                if len(changes) < 1000 or not new:
                    break
                after = new[-1][0]
        except self._client_error as exc:
            if exc.status == 404:
                return
            raise AuditFailure(tip, f"the node does not serve /validators/changes: "
                                    f"{exc}") from None
        # a change committed in the last two blocks applies above the tip: both sides
        # list it (the replay knows it too)
        for i, (w, g) in enumerate(zip(want, got, strict=False)):
            if w != g:
                raise AuditFailure(min(w[0], g[0]) if isinstance(g[0], int) else w[0],
                                   "the node serves a validator set change that is not the "
                                   "replay's", field=f"validators/changes[{i}]",
                                   expected={"height": w[0], "hash": w[1]},
                                   found={"height": g[0], "hash": g[1]})
        if len(want) != len(got):
            raise AuditFailure(tip, "the node serves another number of validator set "
                                    "changes than the replay made",
                               field="validators/changes", expected=[h for h, _ in want],
                               found=[h for h, _ in got])

    def close(self) -> None:
        self._pool.close()


def find_db_dir(path: str | Path) -> Path:
    """The LevelDB directory for ``--data``: the db itself, ``<data>/db`` or
    ``<home>/data/db``."""
    p = Path(path)
    for cand in (p, p / "db", p / "data" / "db"):
        if (cand / "CURRENT").is_file():
            return cand
    raise SourceError(f"{path} holds no node database (looked for CURRENT in {p}, {p}/db "
                      f"and {p}/data/db)")


def _check_unlocked(db: Path) -> None:
    """Refuse a database that a running node holds: LevelDB takes a POSIX record lock on
    ``LOCK``; probing it with the same kind of lock (and releasing it at once) never
    writes anything."""
    lock = db / "LOCK"
    if not lock.exists():
        return
    with open(lock, "rb") as fh:
        try:
            fcntl.lockf(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise SourceError(f"{db} is in use by a running node (its LOCK is held): stop "
                              "the node, or audit it with --node URL") from None
        fcntl.lockf(fh.fileno(), fcntl.LOCK_UN)


class DataSource(Source):
    """A stopped node's database, audited through a private copy.

    LevelDB has no read-only mode: opening a database may replay its log and compact,
    i.e. write. So the directory is copied to a temporary directory and the copy is
    opened; the node's own files are only ever read. The copy is removed by ``close``.
    """

    def __init__(self, path: str | Path) -> None:
        """``path``: the database itself, a data directory or a home (``find_db_dir``)."""
        from node.store.kvstore import open_kv

        db = find_db_dir(path)
        _check_unlocked(db)
        self.label = str(db)
        self.kv: Any = None
        self._tmp = tempfile.mkdtemp(prefix="mutual-audit-")
        copy = Path(self._tmp) / "db"
        try:  # whatever stops the opening (an error, Ctrl-C, SIGTERM), the copy goes
            try:
                shutil.copytree(db, copy, ignore=shutil.ignore_patterns("LOCK"))
                self.kv = open_kv(copy, create_if_missing=False)
            except Exception as exc:
                raise SourceError(f"cannot open a copy of {db}: {exc}") from None
            try:
                self.store = BlockStore(self.kv)
            except BlockStoreError as exc:
                raise SourceError(f"{db}: {exc}") from None
        except BaseException:
            self.close()
            raise

    wants_results = True

    def claimed_genesis_hash(self) -> bytes | None:
        return self.store.genesis_hash()

    def tip(self) -> int:
        return self.store.latest_height

    def request(self, heights: list[int]) -> Callable[[], Fetched]:
        got = []
        for h in heights:
            data = self.store.block_bytes(h)
            if data is None:
                raise AuditFailure(h, f"the database has no block {h} below its tip")
            got.append((h, data, self.store.certificate_bytes(h)))
        return lambda: got

    def check_block_result(self, height: int, state_root: bytes,
                           receipts: list[bytes]) -> None:
        stored = self.store.state_root_after(height)
        if stored != state_root:
            raise AuditFailure(height, f"the database's state root after block {height} "
                                       "(results/) is not the recomputed one",
                               field="results.state_root", expected=state_root.hex(),
                               found=ABSENT if stored is None else stored.hex())
        got = self.store.receipts(height)
        if len(got) != len(receipts):
            raise AuditFailure(height, "the database holds another number of receipts",
                               field="receipts", expected=len(receipts), found=len(got))
        for i, (want, have) in enumerate(zip(receipts, got, strict=True)):
            if want != have:
                w, g = decode_or_bytes(want), decode_or_bytes(have)
                name, ev, fv = first_difference(w, g)
                raise AuditFailure(height, "the stored receipt differs from the recomputed "
                                           "one", tx=i, field=f"receipt.{name}",
                                   expected=ev, found=fv)

    def check_final(self, auditor: Auditor) -> None:
        tip = auditor.height
        state = self.kv.prefixed(PREFIXES["state"])
        root = auditor.state_root
        stored_root = StateTree.stored_root(state)
        if stored_root != root:
            raise AuditFailure(tip, "the database's state tree root is not the recomputed "
                                    "one", field="state/m", expected=root.hex(),
                               found=ABSENT if stored_root is None else stored_root.hex())
        compare_flat(tip, auditor.state_kv, state)
        check_nodes(tip, state, auditor.state_kv)
        tip_rec = self.store.tip()
        if tip_rec is not None and tip_rec.state_root != root:
            raise AuditFailure(tip, "the database's tip record names another state root",
                               field="meta/tip.state_root", expected=root.hex(),
                               found=tip_rec.state_root.hex())

    def close(self) -> None:
        if self.kv is not None:
            with contextlib.suppress(Exception):
                self.kv.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
