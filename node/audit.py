"""``mutual audit``: replay a whole chain from the auditor's own genesis and check everything.

The chain comes from a node's HTTP API (``--node``) or from a copy of a stopped node's
database (``--data``). Nothing the source says is trusted: every block is re-validated by
``node.executor.Executor`` (the same definition of a valid block that consensus and sync
use) over a fresh in-memory state, every commit certificate is checked against the
validator set of the auditor's genesis, every transaction signature is verified (across a
process pool when blocks are big), the state root after each block is compared with the
one the next header commits to, and an independent model of the pooling rules rechecks
every notice snapshot, settlement (claims, fee, surplus, shares, caps, conservation),
jury (eligibility, panel draw, tally, quorum, majority, timing) and waiting-period
decision. Finally the source's own claims (stored state, receipts and roots for
``--data``; served period and claim records and its state root for ``--node``) are
compared with the replay. The first discrepancy stops the audit and is named precisely.

docs/audit.md describes every check and the report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate, verify_certificate
from chain.crypto import Domain, PublicKey
from chain.genesis import Genesis, GenesisError
from chain.hashing import sha256
from chain.tx import Transaction, TxError, to_jsonable
from chain.validators import Validator, ValidatorSet
from chain.verifyrate import measure_verify_rate
from chain.vote import MessageError
from contracts import records
from contracts.calendar import age_years, cst_date, parse_date
from contracts.kv import KV, KVError, MemoryKV
from contracts.params import Params
from contracts.rules import payout
from contracts.tree import StateTree, node_record_ok
from node.blockstore import PREFIXES, BlockStore, BlockStoreError
from node.executor import Applied, BlockInvalid, Executor
from node.progress import Progress

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
CHUNK_BLOCKS = 64            # blocks fetched, decoded and signature-checked together
POOL_MIN_TXS = 256           # below this many txs in a group the pool costs more than it saves
BATCH_TXS = 512              # transactions per group of signature checks (pipelining grain)
MIN_SLICE = 64               # transactions per pool task
JURY_DRAW_TAG = b"mutual-ledger/jury-draw/v1\x00"   # docs/rules.md "The panel draw"
EXIT_EVENTS = ("member_left", "member_removed", "member_paid_out", "member_barred")


class _Absent:
    """A field or key that one side has and the other has not (``ABSENT``)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


def _shown(value: Any) -> Any:
    """A finding's value as the JSON report shows it: ``"(absent)"`` for ``ABSENT``."""
    return "(absent)" if value is ABSENT else to_jsonable(value)


class AuditFailure(Exception):
    """The first discrepancy: where it is and what differs. ``expected``/``found`` are
    ``ABSENT`` for a field or key that only the other side has; a finding with either
    value set carries both in ``describe`` and ``to_json``."""

    def __init__(self, height: int, what: str, *, tx: int | None = None,
                 tx_hash: str | None = None, field: str | None = None,
                 expected: Any = None, found: Any = None) -> None:
        self.height = height
        self.what = what
        self.tx = tx
        self.tx_hash = tx_hash
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [f"height {self.height}: {self.what}"]
        if self.tx is not None:
            parts.append(f"tx {self.tx}" + (f" ({self.tx_hash})" if self.tx_hash else ""))
        if self.field is not None:
            parts.append(f"field {self.field}")
        if self.has_values:
            parts.append(f"expected {self._text(self.expected)}, found "
                         f"{self._text(self.found)}")
        return "; ".join(parts)

    @property
    def has_values(self) -> bool:
        return self.expected is not None or self.found is not None

    @staticmethod
    def _text(value: Any) -> str:
        shown = _shown(value)
        return shown if value is ABSENT else json.dumps(shown, default=repr)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"height": self.height, "what": self.what}
        for name in ("tx", "tx_hash", "field"):
            value = getattr(self, name)
            if value is not None:
                out[name] = to_jsonable(value)
        if self.has_values:
            out["expected"] = _shown(self.expected)
            out["found"] = _shown(self.found)
        return out


class AuditInterrupted(KeyboardInterrupt):
    """A signal stopped the audit: ``signum`` (SIGINT, or SIGTERM while ``mutual audit``
    runs) and, once the replay had begun, ``report``: the partial report, ``ok`` false,
    ``first_error`` saying where it stopped. A ``KeyboardInterrupt``, so a library caller's
    Ctrl-C still stops its program."""

    def __init__(self, signum: int = signal.SIGINT, report: AuditReport | None = None
                 ) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.report = report


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
        from node.client import ClientError

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
            _compare_served(tip, f"period {n} as served by the node", want, got)
        for cid in sorted(auditor.rules.final_claims(auditor.state)):
            want = to_jsonable(payout.load_claim(auditor.state, cid))
            try:
                got = self.client.claim(cid)
            except self._client_error as exc:
                raise AuditFailure(tip, f"the node does not serve claim {cid}: {exc}") from None
            _compare_served(tip, f"claim {cid} as served by the node", want, got)
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
        from node.kvstore import open_kv

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
                w, g = _loads(want), _loads(have)
                name, ev, fv = _first_difference(w, g)
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
        _compare_flat(tip, auditor.state_kv, state)
        _check_nodes(tip, state, auditor.state_kv)
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


# ---- comparing records ----------------------------------------------------------------

def _loads(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # undecodable bytes are compared as bytes
        return data


def _first_difference(want: Any, got: Any, path: str = "") -> tuple[str, Any, Any]:
    """The first field (dotted path) where two decoded records differ; a field that only
    one side has is ``ABSENT`` on the other."""
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got), key=str):
            if want.get(k, ABSENT) != got.get(k, ABSENT):
                return _first_difference(want.get(k, ABSENT), got.get(k, ABSENT),
                                         f"{path}.{k}" if path else k)
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{i}]")
    return (path or "(value)", want if want is ABSENT else to_jsonable(want),
            got if got is ABSENT else to_jsonable(got))


def key_name(key: bytes) -> str:
    """A state key in readable form: ``period/3``, ``member/<hex>``, ``vote/7/<hex>``."""
    prefix, sep, rest = key.partition(b"/")
    if not sep:
        return key.decode("ascii", "replace")
    name = prefix.decode("ascii", "replace")
    if name in ("member", "role", "acct", "ident"):
        return f"{name}/{rest.hex()}"
    if name in ("obj", "vote", "panel") and len(rest) == 40:
        return f"{name}/{int.from_bytes(rest[:8], 'big')}/{rest[8:].hex()}"
    if name == "arrq" and len(rest) == 16:
        return f"{name}/{int.from_bytes(rest[:8], 'big')}/{int.from_bytes(rest[8:], 'big')}"
    if len(rest) == 8:
        return f"{name}/{int.from_bytes(rest, 'big')}"
    return f"{name}/{rest.hex()}"


def _compare_served(height: int, what: str, want: Any, got: Any) -> None:
    if want != got:
        name, ev, fv = _first_difference(want, got)
        raise AuditFailure(height, f"{what} differs from the replay", field=name,
                           expected=ev, found=fv)


def _compare_flat(height: int, replay: KV, stored: KV) -> None:
    """The flat copy of the latest state (what a node answers queries from) must hold
    exactly the replayed keys and values."""
    mine = replay.iterate(b"v")
    theirs = stored.iterate(b"v")
    a = next(mine, None)
    b = next(theirs, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            raise AuditFailure(height, f"state key {key_name(a[0][1:])} is missing from the "
                                       "database", field=key_name(a[0][1:]),
                               expected=to_jsonable(_loads(a[1])), found=ABSENT)
        if a is None or b[0] < a[0]:
            raise AuditFailure(height, f"the database holds state key {key_name(b[0][1:])} "
                                       "that the replay does not", field=key_name(b[0][1:]),
                               expected=ABSENT, found=to_jsonable(_loads(b[1])))
        if a[1] != b[1]:
            name, ev, fv = _first_difference(_loads(a[1]), _loads(b[1]))
            key = key_name(a[0][1:])
            raise AuditFailure(height, f"state value of {key} in the database differs from "
                                       "the replay", field=f"{key}.{name}", expected=ev,
                               found=fv)
        a = next(mine, None)
        b = next(theirs, None)


def _check_nodes(height: int, stored: KV, replay: KV) -> None:
    """Every stored tree record must hash to its address (records are content-addressed):
    a leaf's value must match its value hash, a group's binary nodes must hash to each
    other and to its address (``contracts.tree.node_record_ok``, docs/state.md §3)."""
    for k, rec in stored.iterate(b"n"):
        # the address is the key's last 32 bytes (anything between "n" and it only
        # clusters records by position, see docs/state.md)
        addr = k[-32:]
        if not node_record_ok(addr, rec):
            name = f"node {addr.hex()}"
            if rec[:1] == b"\x00" and len(rec) >= 65:
                kh = rec[1:33]
                for key, _ in replay.iterate(b"v"):
                    if sha256(key[1:]) == kh:
                        name = f"leaf of {key_name(key[1:])}"
                        break
            raise AuditFailure(height, f"stored state {name} does not match its hash (the "
                                       "database was altered or is damaged)",
                               field=f"state/{k[:1].decode()}{k[1:].hex()}")


# =====================================================================================
# signature checks (optionally in a process pool)
# =====================================================================================

_W_CHAIN: str = ""
_W_VSET: ValidatorSet | None = None

TxCheck = tuple[str, str] | None   # (field, reason) or None when the tx is fine


def _init_worker(chain_id: str, validators: list[tuple[bytes, int]]) -> None:
    global _W_CHAIN, _W_VSET
    # Ctrl-C on a terminal reaches the whole process group: the main process stops the
    # audit and shuts the pool down; a worker must not die with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _W_CHAIN = chain_id
    _W_VSET = ValidatorSet(Validator(pk, power) for pk, power in validators)


def check_txs(chain_id: str, txs: list[bytes]) -> list[TxCheck]:
    """Decode each signed transaction and verify its chain id and signature."""
    out: list[TxCheck] = []
    for raw in txs:
        try:
            tx = Transaction.decode(raw)
        except TxError as exc:
            out.append(("encoding", f"does not decode: {exc.message}"))
            continue
        if tx.chain_id != chain_id:
            out.append(("chain_id", f"is for chain {tx.chain_id!r}, not {chain_id!r}"))
        elif not _verify_tx(tx, raw):
            out.append(("sig", f"signature does not verify for sender {tx.sender.hex()}"))
        else:
            out.append(None)
    return out


def signing_payload_of(tx: Transaction, raw: bytes) -> bytes:
    """The signed payload of a canonical signed transaction, cut from its bytes.

    In the canonical map the keys sort as body, chain_id, nonce, sender, sig, type, so the
    unsigned encoding is the same bytes with the map header 0x86 -> 0x85 and the ``sig``
    entry removed. Cutting is exact and saves re-encoding; anything unexpected falls back
    to encoding the unsigned map."""
    tail = len(encoding.encode(tx.type)) + 5             # "\xa4type" + the type string
    entry = b"\xa3sig\xc4\x40" + tx.sig
    cut = len(raw) - tail - len(entry)
    if raw[:1] == b"\x86" and raw[cut:cut + len(entry)] == entry:
        return b"\x85" + raw[1:cut] + raw[cut + len(entry):]
    return tx.signing_payload()


def _verify_tx(tx: Transaction, raw: bytes) -> bool:
    return PublicKey(tx.sender).verify(Domain.TX, tx.chain_id, signing_payload_of(tx, raw),
                                       tx.sig)


CertJob = tuple[tuple[str, int], bytes, int, bytes]   # (key, cert bytes, height, block id)


def check_certs(chain_id: str, vset: ValidatorSet, jobs: list[CertJob]
                ) -> dict[tuple[str, int], str]:
    """Verify certificates; return the reason for each one that fails."""
    bad: dict[tuple[str, int], str] = {}
    for key, data, height, block_id in jobs:
        try:
            cert = CommitCertificate.decode(data)
        except MessageError as exc:
            bad[key] = f"does not decode: {exc}"
            continue
        ok, why = verify_certificate(cert, chain_id, vset, height, block_id)
        if not ok:
            bad[key] = why
    return bad


def _worker_txs(txs: list[bytes]) -> list[TxCheck]:
    return check_txs(_W_CHAIN, txs)


def _worker_certs(jobs: list[CertJob]) -> dict[tuple[str, int], str]:
    assert _W_VSET is not None
    return check_certs(_W_CHAIN, _W_VSET, jobs)


class _Pending:
    def __init__(self, parts: list[Future] | None, cert_part: Future | None,
                 inline: Callable[[], tuple[list[TxCheck], dict]] | None) -> None:
        self.parts, self.cert_part, self.inline = parts, cert_part, inline

    def result(self) -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
        if self.inline is not None:
            return self.inline()
        assert self.parts is not None and self.cert_part is not None
        txs: list[TxCheck] = []
        for f in self.parts:
            txs.extend(f.result())
        return txs, self.cert_part.result()


def _pooled_or_inline(pending: _Pending, inline: Callable[[], tuple[list[TxCheck], dict]]
                      ) -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
    """The pool's answer, or the same checks inline if the pool broke (a worker killed,
    or a main module that cannot be re-imported): a slower audit, never a wrong one."""
    try:
        return pending.result()
    except BrokenProcessPool:
        return inline()


class SigVerifier:
    """Transaction and certificate signature checks, in a process pool for big chunks.

    ``workers=0`` checks inline. The pool is created lazily, the first time a chunk holds
    at least ``POOL_MIN_TXS`` transactions, so small chains never pay its start-up.
    """

    def __init__(self, genesis: Genesis, workers: int) -> None:
        self.chain_id = genesis.chain_id
        self.vset = genesis.validators
        self.workers = max(0, workers)
        self._pool: ProcessPoolExecutor | None = None
        self.used_pool = False

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # never fork: the fetch threads may hold locks; a forkserver child starts clean
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods
                                              else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(["node.audit"])
            vals = [(v.pub_key, v.power) for v in self.vset.validators]
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_init_worker,
                                             initargs=(self.chain_id, vals))
            self.used_pool = True
        return self._pool

    def submit(self, txs: list[bytes], certs: list[CertJob]) -> _Pending:
        if self.workers == 0 or len(txs) < POOL_MIN_TXS:
            return _Pending(None, None, lambda: (check_txs(self.chain_id, txs),
                                                 check_certs(self.chain_id, self.vset, certs)))
        def inline() -> tuple[list[TxCheck], dict]:
            return check_txs(self.chain_id, txs), check_certs(self.chain_id, self.vset, certs)

        try:
            pool = self._get_pool()
            size = max(MIN_SLICE, -(-len(txs) // self.workers))
            parts = [pool.submit(_worker_txs, txs[i:i + size])
                     for i in range(0, len(txs), size)]
            pending = _Pending(parts, pool.submit(_worker_certs, certs), None)
        except (BrokenProcessPool, RuntimeError, OSError):
            self.workers = 0  # no pool on this platform or in this process: stay inline
            return _Pending(None, None, inline)
        return _Pending(None, None, lambda: _pooled_or_inline(pending, inline))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def default_workers() -> int:
    """Signature workers: ``MUTUAL_AUDIT_WORKERS`` if set, else one per spare core."""
    env = os.environ.get("MUTUAL_AUDIT_WORKERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return max(0, (os.cpu_count() or 1) - 1)


# =====================================================================================
# the independent model of the rules
# =====================================================================================

@dataclass
class _Moment:
    height: int
    time: int
    prev_time: int | None
    prev_root: bytes
    seed: bytes


@dataclass
class _Jury:
    origin: str
    mode: str
    claimant: str
    close_ms: int | None = None
    yes: int = 0
    no: int = 0
    voters: set[str] = field(default_factory=set)
    panel: list[str] | None = None


class RuleChecker:
    """Rechecks the rules' decisions from the replayed records and events, with its own
    bookkeeping (active members per cohort, the juror pool, payable claims, surplus,
    year-to-date totals, jury tallies) so that a bug in ``contracts`` and the audit would
    have to agree to go unnoticed. docs/rules.md is the specification followed here.
    """

    def __init__(self, genesis: Genesis, state: Callable[[], Any],
                 state_at: Callable[[bytes], Any]) -> None:
        self.genesis = genesis
        self.params = Params.from_dict(genesis.params)
        self.schedule = self.params.make_schedule(genesis.genesis_time_ms)
        self._state = state
        self._state_at = state_at
        self.active = 0
        self.cohorts: Counter[int] = Counter()
        self.member_cohort: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.jurors: set[str] = set()
        self.pool: set[str] = set()
        self.arrears: dict[str, set[int]] = {}
        self.next_notice = 1
        self.next_settlement = 1
        self.snapshots: dict[int, list[dict[str, int]]] = {}
        self.payable: dict[int, list[int]] = {}
        self.surplus = 0
        self.ytd: dict[int, dict[int, int]] = {}
        self.juries: dict[int, _Jury] = {}
        self.objectors: dict[int, set[str]] = {}
        self.settled: list[int] = []
        self.final: set[int] = set()
        self.stats: Counter[str] = Counter()
        self.verdicts: Counter[str] = Counter()

    # ---- driving ------------------------------------------------------------------------

    def on_block(self, m: _Moment, applied: Applied) -> None:
        events: list[tuple[int | None, Any]] = [(None, e) for e in applied.begin_events]
        for i, receipt in enumerate(applied.receipts):
            if receipt.ok:
                events.extend((i, e) for e in receipt.events)
        for txi, ev in events:
            handler = getattr(self, "_on_" + ev.type, None)
            if handler is not None:
                handler(m, ev.attrs, txi)
            elif ev.type in EXIT_EVENTS:
                self._exit(m, ev.attrs, txi)
        meta = records.load(self._state(), records.META_KEY)
        self._expect(m, None, "meta.active (active members)", self.active, meta["active"])
        self._expect(m, None, "meta.pool (juror pool size)", len(self.pool), meta["pool"])
        self._expect(m, None, "meta.surplus", self.surplus, meta["surplus"])

    def final_claims(self, state: Any) -> list[int]:
        return sorted(self.final)

    # ---- helpers ------------------------------------------------------------------------

    def _fail(self, m: _Moment, txi: int | None, what: str, name: str | None = None,
              expected: Any = None, found: Any = None) -> AuditFailure:
        return AuditFailure(m.height, what, tx=txi, field=name, expected=expected,
                            found=found)

    def _expect(self, m: _Moment, txi: int | None, name: str, expected: Any,
                found: Any, what: str | None = None) -> None:
        if expected != found:
            raise self._fail(m, txi, what or f"{name} is not what the rules give", name,
                             expected, found)

    def _load(self, key: bytes) -> dict[str, Any] | None:
        return records.load(self._state(), key)

    def _claim(self, cid: int) -> dict[str, Any] | None:
        """The claim as the rules read it (a payout applies once its period settled)."""
        return payout.load_claim(self._state(), cid)

    def _member(self, pk_hex: str) -> dict[str, Any]:
        rec = payout.load_member(self._state(), bytes.fromhex(pk_hex))
        assert rec is not None, pk_hex
        return rec

    def _due(self, m: _Moment, txi: int | None, what: str, due: int) -> None:
        """A scheduled job must run in the first block at or after its instant."""
        if m.time < due:
            raise self._fail(m, txi, f"{what} ran before its time", "block.time", due, m.time)
        if m.prev_time is not None and m.prev_time >= due:
            raise self._fail(m, txi, f"{what} ran late: the previous block (time "
                                     f"{m.prev_time}) was already at or past {due}",
                             "block.time")

    # ---- membership and the pool --------------------------------------------------------

    def _on_member_joined(self, m: _Moment, a: dict, txi: int | None) -> None:
        pk, cohort = a["member"], a["cohort"]
        self._expect(m, txi, "cohort", self.next_notice, cohort,
                     f"member {pk} joined the wrong cohort")
        self.active += 1
        self.cohorts[cohort] += 1
        self.member_cohort[pk] = cohort
        self.statuses[pk] = "active"

    def _exit(self, m: _Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        if self.statuses.get(pk) != "active":
            raise self._fail(m, txi, f"member {pk} left although not active", "status",
                             "active", self.statuses.get(pk))
        self._expect(m, txi, "exit_period", self.next_notice - 1, a["exit_period"],
                     f"member {pk}'s exit period is wrong")
        self.active -= 1
        self.cohorts[self.member_cohort[pk]] -= 1
        self.statuses[pk] = "ended"
        self.pool.discard(pk)

    def _on_juror_approved(self, m: _Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        rec = self._member(pk)
        jp = self.params.jury
        age = age_years(parse_date(rec["birth_date"]), cst_date(m.time))
        if (self.statuses.get(pk) != "active" or age < jp.juror_min_age_years
                or m.time - rec["joined_ms"] < jp.juror_min_membership_ms
                or self.arrears.get(pk)):
            raise self._fail(m, txi, f"member {pk} approved as a juror although not "
                                     "eligible (age, membership time, arrears or status)")
        self.jurors.add(pk)
        self.pool.add(pk)

    def _on_arrears_recorded(self, m: _Moment, a: dict, txi: int | None) -> None:
        self.arrears.setdefault(a["member"], set()).add(a["period"])
        self.pool.discard(a["member"])

    def _on_arrears_paid(self, m: _Moment, a: dict, txi: int | None) -> None:
        pk = a["member"]
        self.arrears.get(pk, set()).discard(a["period"])
        if self.statuses.get(pk) == "active" and pk in self.jurors and not self.arrears[pk]:
            self.pool.add(pk)

    def _on_arrears_cleared_by_claim(self, m: _Moment, a: dict, txi: int | None) -> None:
        self.arrears.pop(a["member"], None)

    # ---- claims and the waiting period -------------------------------------------------

    def _check_amount(self, m: _Moment, txi: int | None, c: dict, member: dict) -> None:
        age = age_years(parse_date(member["birth_date"]), cst_date(c["diagnosed_ms"]))
        self._expect(m, txi, f"claim/{c['id']}.age_at_diagnosis", age, c["age_at_diagnosis"])
        self._expect(m, txi, f"claim/{c['id']}.amount", self.params.payout_for(c["disease"],
                                                                             age), c["amount"])

    def _waiting(self, c: dict, member: dict) -> bool:
        return c["diagnosed_ms"] < member["joined_ms"] + self.params.waiting_ms

    def _on_claim_filed(self, m: _Moment, a: dict, txi: int | None) -> None:
        c = self._claim(a["claim_id"])
        assert c is not None
        member = self._member(c["member"].hex())
        self._check_amount(m, txi, c, member)
        if self._waiting(c, member) and not c["accident"]:
            raise self._fail(m, txi, f"claim {c['id']} was accepted although diagnosed inside "
                                     "the waiting period and not an accident",
                             f"claim/{c['id']}.status", "rejected_waiting", "filed")

    def _on_claim_rejected_waiting(self, m: _Moment, a: dict, txi: int | None) -> None:
        c = self._claim(a["claim_id"])
        assert c is not None
        member = self._member(c["member"].hex())
        if not self._waiting(c, member) or c["accident"]:
            raise self._fail(m, txi, f"claim {c['id']} was rejected by the waiting period "
                                     "although it is outside it (or an accident)",
                             f"claim/{c['id']}.status", "filed", "rejected_waiting")
        self._expect(m, txi, f"member/{c['member'].hex()}.refund", True, member["refund"])
        self.stats["waiting_rejections"] += 1
        self.final.add(c["id"])

    def _on_claim_objected(self, m: _Moment, a: dict, txi: int | None) -> None:
        self.objectors.setdefault(a["claim_id"], set()).add(a["member"])

    def _on_claim_payable(self, m: _Moment, a: dict, txi: int | None) -> None:
        self._expect(m, txi, f"claim/{a['claim_id']}.pay_period", self.next_settlement,
                     a["period"], f"claim {a['claim_id']} was queued for the wrong settlement")
        self.payable.setdefault(a["period"], []).append(a["claim_id"])

    def _on_claim_paid(self, m: _Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.deduction", a["deduction"], c["deduction"],
                     f"claim {cid}'s deduction is not the one its payout announced")
        if not 0 <= c["deduction"] <= c["amount"]:
            raise self._fail(m, txi, f"claim {cid}'s deduction is outside 0..amount",
                             f"claim/{cid}.deduction", f"0..{c['amount']}", c["deduction"])
        self._expect(m, txi, f"claim/{cid}.net", c["amount"] - c["deduction"], c["net"])
        self._expect(m, txi, f"claim/{cid}.status", "paid", c["status"])
        self.stats["claims_paid"] += 1
        self.stats["paid_fen"] += c["amount"]
        self.final.add(cid)

    # ---- notices and settlements --------------------------------------------------------

    def _groups(self, n: int) -> list[dict[str, int]]:
        first = self.schedule.first_period_of_year(self.schedule.year(n))
        later = [{"cohort": j, "members": self.cohorts[j]}
                 for j in range(max(first + 1, 1), n + 1) if self.cohorts[j] > 0]
        old = self.active - sum(g["members"] for g in later)
        return ([{"cohort": 0, "members": old}] if old else []) + later

    def _on_notice_published(self, m: _Moment, a: dict, txi: int | None) -> None:
        n = a["period"]
        self._expect(m, txi, "notice period", self.next_notice, n,
                     "a notice ran out of order")
        self._due(m, txi, f"notice of period {n}", self.schedule.notice_ms(n))
        self._expect(m, txi, f"period/{n}.members", self.active, a["members"],
                     f"period {n}'s snapshot does not count the active members")
        rec = self._load(records.period_key(n))
        assert rec is not None
        groups = self._groups(n)
        found = [{"cohort": g["cohort"], "members": g["members"]} for g in rec["groups"]]
        self._expect(m, txi, f"period/{n}.groups", groups, found,
                     f"period {n}'s snapshot groups are not the active members per cohort")
        self.snapshots[n] = groups
        self.next_notice = n + 1

    def _on_period_settled(self, m: _Moment, a: dict, txi: int | None) -> None:
        n = a["period"]
        self._expect(m, txi, "settlement period", self.next_settlement, n,
                     "a settlement ran out of order")
        self._due(m, txi, f"settlement of period {n}", self.schedule.settlement_ms(n))
        rec = self._load(records.period_key(n))
        assert rec is not None
        ids = self.payable.pop(n, [])
        self._expect(m, txi, f"period/{n}.claims", ids, rec["claims"],
                     f"period {n} did not pay exactly the claims that became payable for it")
        claims = [self._claim(cid) for cid in ids]
        p = self.params
        P = sum(c["amount"] for c in claims if c is not None)
        F = P * p.fee_bps // 10_000
        S = self.surplus
        groups = self.snapshots.get(n, [])
        M = sum(g["members"] for g in groups)
        need = P + F - S
        if need <= 0:
            raw, surplus, extra = 0, -need, 0
        elif M == 0:
            raw, surplus, extra = 0, 0, need
        else:
            raw = -(-need // M)
            surplus, extra = M * raw - need, 0
        cases = len(ids)
        share = min(raw, p.cap_per_case_fen * cases)
        prev = (self.ytd.get(n - 1, {})
                if n > 1 and self.schedule.year(n - 1) == self.schedule.year(n) else {})
        out_groups, collected, ytd = [], 0, {}
        for g in groups:
            before = prev.get(g["cohort"], 0)
            charge = min(share, max(0, p.cap_per_year_fen - before))
            collected += g["members"] * charge
            ytd[g["cohort"]] = before + charge
            out_groups.append({"cohort": g["cohort"], "members": g["members"],
                               "ytd_before": before, "charge": charge, "ytd": before + charge})
        covered = M * raw - collected + extra
        expected = {"P": P, "F": F, "S": S, "need": need, "M": M, "cases": cases,
                    "share_raw": raw, "case_cap": p.cap_per_case_fen * cases, "share": share,
                    "annual_cap": p.cap_per_year_fen, "collected": collected,
                    "operator_covered": covered, "surplus_new": surplus, "groups": out_groups,
                    "members": M, "status": "settled",
                    "payout_exit_period": self.next_notice - 1}
        for name, want in expected.items():
            self._expect(m, txi, f"period/{n}.{name}", want, rec.get(name),
                         f"period {n}'s {name} is not what the settlement formula gives")
        # the conservation identity, on the record's own figures
        lhs = sum(g["members"] * g["charge"] for g in rec["groups"]) + rec["operator_covered"]
        rhs = rec["P"] + rec["F"] - rec["S"] + rec["surplus_new"]
        self._expect(m, txi, f"period/{n} conservation (collected + operator_covered)", rhs,
                     lhs, f"period {n} breaks the conservation identity")
        if rec["surplus_new"] < 0 or rec["operator_covered"] < 0:
            raise self._fail(m, txi, f"period {n} has a negative surplus or operator share")
        self.surplus = surplus
        self.ytd[n] = ytd
        self.next_settlement = n + 1
        self.settled.append(n)
        self.stats["periods"] += 1
        self.stats["shared_fen"] += collected
        self.stats["fees_fen"] += F
        self.stats["operator_covered_fen"] += covered

    # ---- juries -------------------------------------------------------------------------

    def _on_jury_opened(self, m: _Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.mode", self.params.jury.mode, a["mode"])
        j = _Jury(a["origin"], a["mode"], c["member"].hex())
        if j.mode == "open":
            j.close_ms = m.time + self.params.jury.window_ms
            self._expect(m, txi, f"claim/{cid}.jury.close_ms", j.close_ms,
                         c["jury"]["close_ms"])
        self.juries[cid] = j

    def draw_panel(self, state: Any, cid: int, claimant: str, block_seed: bytes
                   ) -> list[str]:
        """The panel per docs/rules.md, over the pool in ``state`` (the state the draw
        ran against: after the previous block)."""
        k = self.params.jury.panel_size
        n = records.load(state, records.META_KEY)["pool"]
        seed = sha256(JURY_DRAW_TAG + block_seed + records.u64(cid))

        def conflicted(pk: bytes) -> bool:
            return (pk.hex() == claimant
                    or state.get(records.objection_key(cid, pk)) is not None)

        def slot(i: int) -> bytes:
            return records.load(state, records.pool_key(i))["member"]

        chosen: list[str] = []
        if n <= 2 * k:
            for i in sorted(range(n), key=lambda i: sha256(seed + records.u64(i))):
                pk = slot(i)
                if not conflicted(pk):
                    chosen.append(pk.hex())
                    if len(chosen) == k:
                        break
            return chosen
        seen: set[bytes] = set()
        for attempt in range(4 * k + 64):
            pk = slot(int.from_bytes(sha256(seed + records.u64(attempt)), "big") % n)
            if pk in seen:
                continue
            seen.add(pk)
            if conflicted(pk):
                continue
            chosen.append(pk.hex())
            if len(chosen) == k:
                break
        return chosen

    def _on_jury_drawn(self, m: _Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        j = self.juries.get(cid)
        if j is None or j.mode != "panel" or j.panel is not None:
            raise self._fail(m, txi, f"claim {cid}: a panel was drawn without a pending "
                                     "panel jury")
        want = self.draw_panel(self._state_at(m.prev_root), cid, j.claimant, m.seed)
        self._expect(m, txi, f"claim/{cid}.jury.panel", want, a["panel"],
                     f"claim {cid}'s panel is not the draw from its seed")
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.seed", m.seed.hex(),
                     (c["jury"]["seed"] or b"").hex())
        j.panel = want
        j.close_ms = m.time + self.params.jury.window_ms
        self._expect(m, txi, f"claim/{cid}.jury.close_ms", j.close_ms, a["close_ms"])
        self.stats["panels"] += 1

    def _on_jury_vote(self, m: _Moment, a: dict, txi: int | None) -> None:
        cid, pk = a["claim_id"], a["juror"]
        j = self.juries.get(cid)
        if j is None or j.close_ms is None:
            raise self._fail(m, txi, f"a vote on claim {cid} was counted with no jury open")
        if m.time >= j.close_ms:
            raise self._fail(m, txi, f"a vote on claim {cid} was counted after the window "
                                     "closed", "block.time", f"< {j.close_ms}", m.time)
        if pk in j.voters or pk == j.claimant or pk in self.objectors.get(cid, set()):
            raise self._fail(m, txi, f"juror {pk} may not vote on claim {cid} (repeat, "
                                     "claimant or objector)")
        eligible = pk in self.pool if j.mode == "open" else pk in (j.panel or [])
        if not eligible or self.statuses.get(pk) != "active":
            raise self._fail(m, txi, f"member {pk} voted on claim {cid} without being an "
                                     f"eligible juror ({j.mode} jury)", "juror")
        j.voters.add(pk)
        if a["pay"]:
            j.yes += 1
        else:
            j.no += 1

    def _on_jury_closed(self, m: _Moment, a: dict, txi: int | None) -> None:
        cid = a["claim_id"]
        j = self.juries.pop(cid, None)
        if j is None or j.close_ms is None:
            raise self._fail(m, txi, f"claim {cid}'s jury closed without being open")
        self._due(m, txi, f"jury of claim {cid}", j.close_ms)
        self._expect(m, txi, f"claim/{cid}.jury.yes", j.yes, a["yes"],
                     f"claim {cid}'s jury tally is not the votes cast")
        self._expect(m, txi, f"claim/{cid}.jury.no", j.no, a["no"],
                     f"claim {cid}'s jury tally is not the votes cast")
        jp = self.params.jury
        votes = j.yes + j.no
        quorum = jp.open_quorum if j.mode == "open" else jp.panel_min_votes
        if votes < quorum:
            verdict = "no_quorum"
        else:
            verdict = "pay" if j.yes * 10_000 > jp.pass_bps * votes else "deny"
        pay = verdict == "pay" or (verdict == "no_quorum" and j.origin == "objection")
        self._expect(m, txi, f"claim/{cid}.jury.verdict", verdict, a["verdict"],
                     f"claim {cid}'s verdict does not follow from quorum and majority")
        self._expect(m, txi, f"claim/{cid} pay decision", pay, a["pay"])
        c = self._claim(cid)
        assert c is not None
        self._expect(m, txi, f"claim/{cid}.jury.verdict", verdict, c["jury"]["verdict"])
        self._expect(m, txi, f"claim/{cid}.jury.yes", j.yes, c["jury"]["yes"])
        self._expect(m, txi, f"claim/{cid}.jury.no", j.no, c["jury"]["no"])
        if not pay:
            self._expect(m, txi, f"claim/{cid}.status", "denied_final", c["status"])
            self.final.add(cid)
        self.verdicts[verdict] += 1
        self.stats["juries"] += 1


# =====================================================================================
# the replay
# =====================================================================================

@dataclass
class AuditReport:
    ok: bool
    chain_id: str
    source: str
    blocks: int
    txs: int
    applied: int
    rejected: dict[str, int]
    periods: int
    state_root: str | None
    first_error: AuditFailure | None
    certificates: int
    signatures: int
    stats: dict[str, int]
    verdicts: dict[str, int]
    seconds: float
    verify_per_s: float
    workers: int
    pooled: bool

    @classmethod
    def not_started(cls, chain_id: str, source: str, failure: AuditFailure) -> AuditReport:
        """The report of an audit stopped before its replay began: nothing was checked."""
        return cls(ok=False, chain_id=chain_id, source=source, blocks=0, txs=0, applied=0,
                   rejected={}, periods=0, state_root=None, first_error=failure,
                   certificates=0, signatures=0, stats={}, verdicts={}, seconds=0.0,
                   verify_per_s=0.0, workers=0, pooled=False)

    @property
    def tx_per_s(self) -> float:
        return self.txs / self.seconds if self.seconds > 0 else 0.0

    @property
    def blocks_per_s(self) -> float:
        return self.blocks / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "blocks": self.blocks, "txs": self.txs, "periods": self.periods,
            "state_root": self.state_root,
            "first_error": None if self.first_error is None else self.first_error.to_json(),
            "chain_id": self.chain_id, "applied": self.applied,
            "rejected": dict(self.rejected), "certificates": self.certificates,
            "claims_paid": self.stats.get("claims_paid", 0),
            "paid_fen": self.stats.get("paid_fen", 0),
            "shared_fen": self.stats.get("shared_fen", 0),
            "fees_fen": self.stats.get("fees_fen", 0),
            "juries": self.stats.get("juries", 0),
            "seconds": round(self.seconds, 3), "tx_per_s": round(self.tx_per_s, 1),
            "blocks_per_s": round(self.blocks_per_s, 1),
            "verify_per_s": round(self.verify_per_s, 1),
            "replay_vs_verify": (round(self.tx_per_s / self.verify_per_s, 3)
                                 if self.verify_per_s else None),
            "workers": self.workers if self.pooled else 0,
        }


def _yuan(fen: int) -> str:
    return f"{fen // 100:,}.{fen % 100:02d} yuan"


def render_report(r: AuditReport) -> str:
    """The readable report (everything but the final JSON line)."""
    s = r.stats
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(r.rejected.items())) or "none"
    lines = [
        f"mutual audit of chain {r.chain_id!r} from {r.source}",
        f"  blocks        {r.blocks} (certificates checked: {r.certificates}, "
        f"signatures verified: {r.signatures})",
        f"  transactions  {r.txs}: {r.applied} applied, {r.txs - r.applied} refused by the "
        f"rules ({rejected})",
        f"  periods       {r.periods} settled; claims paid {s.get('claims_paid', 0)} "
        f"({_yuan(s.get('paid_fen', 0))})",
        f"  shared        {_yuan(s.get('shared_fen', 0))} by members; fees "
        f"{_yuan(s.get('fees_fen', 0))}; operator covered "
        f"{_yuan(s.get('operator_covered_fen', 0))}",
        f"  juries        {s.get('juries', 0)} closed "
        f"({', '.join(f'{k} {v}' for k, v in sorted(r.verdicts.items())) or 'none'}); "
        f"panels drawn {s.get('panels', 0)}; waiting-period rejections "
        f"{s.get('waiting_rejections', 0)}",
        f"  state root    {r.state_root or '(not computed)'} (after block {r.blocks})",
        f"  speed         {r.tx_per_s:,.0f} tx/s, {r.blocks_per_s:,.0f} blocks/s in "
        f"{r.seconds:.2f} s; Ed25519 verify {r.verify_per_s:,.0f}/s on one core "
        f"(replay/verify {r.tx_per_s / r.verify_per_s if r.verify_per_s else 0:.2f}); "
        f"signature workers {r.workers if r.pooled else 0}",
    ]
    if r.ok:
        lines.append("OK: every certificate, signature, state root and rule decision holds")
    else:
        assert r.first_error is not None
        lines.append(f"FAILED at {r.first_error.describe()}")
    return "\n".join(lines)


REPLAY_ROOTS = 2


class Auditor:
    """One replay of a chain from ``source`` under ``genesis`` (the auditor's own file)."""

    def __init__(self, genesis: Genesis, source: Source, *, workers: int | None = None,
                 progress: Progress | None = None, verify_seconds: float = 0.3,
                 work_dir: str | Path | None = None) -> None:
        """``work_dir``: replay into a LevelDB database in a new directory under it
        (removed by ``close``) instead of in memory, for chains whose blocks and
        transaction index do not fit in memory."""
        self.genesis = genesis
        self.verify_seconds = verify_seconds
        self.source = source
        self._replay_dir: str | None = None
        self.kv: Any = None
        if work_dir is None:
            self.kv = MemoryKV()
        else:
            from node.kvstore import open_kv

            try:
                self._replay_dir = tempfile.mkdtemp(prefix="mutual-replay-", dir=work_dir)
                self.kv = open_kv(Path(self._replay_dir) / "db")
            except (OSError, KVError) as exc:
                self.close()
                raise SourceError(f"--work-dir {work_dir}: cannot make the replay's "
                                  f"database there: {exc}") from None
        try:  # whatever stops the construction (an error, Ctrl-C), the replay's dir goes
            # the checks read the state after the previous block at most (a panel's draw),
            # so two roots stay readable and older tree records are pruned as the replay
            # goes: the replay's memory follows the state's size, not the chain's history
            self.executor = Executor(genesis, self.kv,
                                     BlockStore(self.kv, durable=False), self._sig_ok,
                                     keep_roots=REPLAY_ROOTS)
            self.verifier = SigVerifier(genesis,
                                        default_workers() if workers is None else workers)
        except BaseException:
            self.close()
            raise
        self.progress = progress
        self.rules = RuleChecker(genesis, lambda: self.executor.tree,
                                 lambda root: StateTree(self.executor.state_kv, root))
        self._presigned = False
        self.nonces: dict[bytes, int] = {}
        self.txs = 0
        self.applied = 0
        self.rejected: Counter[str] = Counter()
        self.certificates = 0
        self.signatures = 0
        self.checked = 0  # the last block every check of which has run

    # ---- state the checks read ----------------------------------------------------------

    @property
    def height(self) -> int:
        return self.executor.height

    @property
    def state(self) -> Any:
        return self.executor.tree

    @property
    def state_kv(self) -> KV:
        return self.executor.state_kv

    @property
    def state_root(self) -> bytes:
        return self.executor.state_root

    def _sig_ok(self, tx_hash: bytes, tx: Transaction) -> bool:
        # every transaction of the block being validated was verified just before
        return True if self._presigned else tx.verify_signature()

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> AuditReport:
        """Replay and check; a Ctrl-C (or an ``AuditInterrupted`` raised by a signal
        handler) stops the replay, shuts the signature pool down and raises
        ``AuditInterrupted`` carrying the partial report."""
        start = time.perf_counter()
        failure: AuditFailure | None = None
        signum: int | None = None
        final = False
        try:
            self._check_genesis()
            tip = self.source.tip()
            if self.progress is not None:
                self.progress.total = tip
            self._replay(tip)
            final = True
            self.source.check_final(self)
        except AuditFailure as exc:
            failure = exc
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, AuditInterrupted) else signal.SIGINT
            failure = _interrupted_failure(signum, self.checked, final)
        except Exception as exc:  # a damaged source or a bug: still one readable finding
            failure = AuditFailure(self.height + 1, f"the audit could not continue: "
                                                    f"{type(exc).__name__}: {exc}")
        finally:
            self.verifier.close()
            if self.progress is not None:
                self.progress.finish()
        seconds = time.perf_counter() - start
        if signum is not None:  # no rate measurement after a Ctrl-C
            raise AuditInterrupted(signum, self.interrupted_report(signum, seconds, failure))
        return self._report(failure, seconds, measure_verify_rate(self.verify_seconds))

    def close(self) -> None:
        """Remove the replay's database (with ``work_dir``); safe to call twice."""
        if self._replay_dir is None:
            return
        close = getattr(self.kv, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        shutil.rmtree(self._replay_dir, ignore_errors=True)
        self._replay_dir = None

    def interrupted_report(self, signum: int, seconds: float = 0.0,
                           failure: AuditFailure | None = None) -> AuditReport:
        """The report of an audit that SIGINT or SIGTERM stopped: what was checked by
        then, its state root only if every block replayed was also checked."""
        if failure is None:
            failure = _interrupted_failure(signum, self.checked)
        return self._report(failure, seconds, 0.0, blocks=self.checked,
                            root=self.height == self.checked)

    def _report(self, failure: AuditFailure | None, seconds: float, verify_rate: float,
                blocks: int | None = None, root: bool = True) -> AuditReport:
        return AuditReport(
            ok=failure is None, chain_id=self.genesis.chain_id, source=self.source.label,
            blocks=self.height if blocks is None else blocks, txs=self.txs,
            applied=self.applied, rejected=dict(self.rejected),
            periods=self.rules.stats.get("periods", 0),
            state_root=self.state_root.hex() if root else None, first_error=failure,
            certificates=self.certificates, signatures=self.signatures,
            stats=dict(self.rules.stats), verdicts=dict(self.rules.verdicts),
            seconds=seconds, verify_per_s=verify_rate, workers=self.verifier.workers,
            pooled=self.verifier.used_pool)

    def _check_genesis(self) -> None:
        claimed = self.source.claimed_genesis_hash()
        if claimed is not None and claimed != self.genesis.hash:
            raise AuditFailure(0, "the source runs another genesis than the auditor's file",
                               field="genesis_hash", expected=self.genesis.hash.hex(),
                               found=claimed.hex())

    def _replay(self, tip: int) -> None:
        chunks = [list(range(s, min(s + CHUNK_BLOCKS, tip + 1)))
                  for s in range(1, tip + 1, CHUNK_BLOCKS)]
        if not chunks:
            return
        ticket = self.source.request(chunks[0])
        pending: tuple | None = None
        for k in range(len(chunks)):
            fetched = ticket()
            if k + 1 < len(chunks):
                ticket = self.source.request(chunks[k + 1])  # fetch ahead while we work
            decoded = [(h, self._decode(h, raw), cert) for h, raw, cert in fetched]
            handle = self._submit(decoded)
            if pending is not None:
                self._execute_chunk(*pending, next_block=decoded[0][1])
            pending = (decoded, handle)
        assert pending is not None
        self._execute_chunk(*pending, next_block=None)

    def _decode(self, height: int, raw: bytes) -> Block:
        try:
            block = Block.decode(raw)
        except MessageError as exc:
            raise AuditFailure(height, f"block {height} does not decode: {exc}") from None
        if block.height != height:
            raise AuditFailure(height, f"the block served for height {height} is another "
                                       "height", field="header.height", expected=height,
                               found=block.height)
        return block

    def _submit(self, decoded: list[tuple[int, Block, bytes | None]]
                ) -> list[tuple[int, int, _Pending]]:
        """Queue the signature checks of a chunk in groups of about ``BATCH_TXS``
        transactions, so the first group's answer is back while the rest still run."""
        groups = []
        start = count = 0
        for i, (_, block, _) in enumerate(decoded):
            count += len(block.txs)
            if count >= BATCH_TXS or i == len(decoded) - 1:
                groups.append((start, i + 1, self._submit_group(decoded[start:i + 1])))
                start, count = i + 1, 0
        return groups

    def _submit_group(self, decoded: list[tuple[int, Block, bytes | None]]) -> _Pending:
        txs: list[bytes] = []
        certs: list[CertJob] = []
        carried: dict[int, bytes] = {}
        for h, block, _ in decoded:
            if block.last_commit is not None:
                carried[h - 1] = block.last_commit.encode()
        same: list[int] = []
        for h, block, stored in decoded:
            txs.extend(block.txs)
            if block.last_commit is not None:
                certs.append((("carried", h - 1), carried[h - 1], h - 1,
                              block.header.last_block_id or b""))
            if stored is not None:
                if carried.get(h) == stored:
                    same.append(h)  # the very bytes carried by block h+1: check once
                else:
                    certs.append((("stored", h), stored, h, block.block_id()))
        pending = self.verifier.submit(txs, certs)
        if not same:
            return pending

        def result() -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
            tx_checks, bad = pending.result()
            for h in same:
                if ("carried", h) in bad:
                    bad[("stored", h)] = bad[("carried", h)]
            return tx_checks, bad

        return _Pending(None, None, result)

    def _execute_chunk(self, decoded: list[tuple[int, Block, bytes | None]],
                       groups: list[tuple[int, int, _Pending]],
                       next_block: Block | None) -> None:
        for start, stop, pending in groups:
            tx_checks, bad_certs = pending.result()
            offset = 0
            for i in range(start, stop):
                h, block, stored = decoded[i]
                n = len(block.txs)
                checks = tx_checks[offset:offset + n]
                offset += n
                nxt = decoded[i + 1][1] if i + 1 < len(decoded) else next_block
                self._execute(h, block, checks, bad_certs, stored, nxt)
                self.checked = h
                if self.progress is not None:
                    self.progress.update(h, self.txs)

    def _execute(self, h: int, block: Block, checks: list[TxCheck],
                 bad_certs: dict[tuple[str, int], str], stored: bytes | None,
                 nxt: Block | None) -> None:
        g = self.genesis
        hdr = block.header
        if hdr.chain_id != g.chain_id:
            raise AuditFailure(h, "the header names another chain", field="header.chain_id",
                               expected=g.chain_id, found=hdr.chain_id)
        if h > 1:
            why = bad_certs.get(("carried", h - 1))
            if why is not None:
                raise AuditFailure(h - 1, f"the commit certificate of block {h - 1} (carried "
                                          f"in block {h}'s last_commit) is invalid: {why}",
                                   field="last_commit")
            self.certificates += 1
            self.signatures += len(block.last_commit.sigs) if block.last_commit else 0
        for i, check in enumerate(checks):
            if check is not None:
                raise AuditFailure(h, f"transaction {i} {check[1]}", tx=i,
                                   tx_hash=sha256(block.txs[i]).hex(), field=check[0])
        if hdr.state_root != self.state_root:
            raise AuditFailure(h, f"the header's state root is not the state recomputed after "
                                  f"block {h - 1}", field="header.state_root",
                               expected=self.state_root.hex(), found=hdr.state_root.hex())
        self._presigned = True  # verified above: decoding, chain id and signature
        try:
            txs = self.executor.validate(block)
        except BlockInvalid as exc:
            raise AuditFailure(h, f"block {h} is not a valid next block: {exc}") from None
        finally:
            self._presigned = False
        cert = self._certificate_for(h, block, stored, nxt, bad_certs)
        prev_root = self.state_root
        prev_time = self.executor.last_block_time() if h > 1 else None
        try:
            applied = self.executor.apply(block, cert, txs)
        except Exception as exc:  # the rules refusing a committed block is a finding
            raise AuditFailure(h, f"executing block {h} failed: {type(exc).__name__}: "
                                  f"{exc}") from None
        if self.source.wants_results:
            self.source.check_block_result(
                h, applied.state_root, [_receipt_bytes(r) for r in applied.receipts])
        self._nonce_order(h, txs, applied)
        seed = (sha256(block.last_commit.encode()) if block.last_commit is not None
                else g.hash)
        self.rules.on_block(_Moment(h, hdr.time, prev_time, prev_root, seed), applied)

    def _certificate_for(self, h: int, block: Block, stored: bytes | None,
                         nxt: Block | None, bad_certs: dict[tuple[str, int], str]
                         ) -> CommitCertificate:
        """The certificate that commits block ``h``: the one block h+1 carries, or for the
        last block the source's own. The source's certificate is checked either way (it
        is what the node serves as proof of finality)."""
        stored_cert = None
        block_id = block.block_id()
        if stored is not None:
            why = bad_certs.get(("stored", h))
            with contextlib.suppress(MessageError):
                stored_cert = CommitCertificate.decode(stored)
            if stored_cert is not None and (stored_cert.height, stored_cert.block_id) != (
                    h, block_id):
                raise AuditFailure(h, f"the source's commit certificate of block {h} "
                                      "certifies another block", field="certificate.block_id",
                                   expected=block_id.hex(), found=stored_cert.block_id.hex())
            if why is not None or stored_cert is None:
                raise AuditFailure(h, f"the source's commit certificate of block {h} is "
                                      f"invalid: {why}", field="certificate")
            self.certificates += 1
            self.signatures += len(stored_cert.sigs)
        if nxt is not None:
            if nxt.last_commit is None:
                raise AuditFailure(h + 1, f"block {h + 1} carries no certificate of block {h}",
                                   field="last_commit")
            cert = nxt.last_commit
        elif stored_cert is None:
            raise AuditFailure(h, f"the source has no commit certificate for the last block "
                                  f"{h}", field="certificate")
        else:
            cert = stored_cert
        if cert.height != h or cert.block_id != block_id:
            where = f"block {h + 1}'s last_commit" if nxt is not None else "the certificate"
            raise AuditFailure(h, f"{where} does not certify block {h}",
                               field="certificate.block_id", expected=block_id.hex(),
                               found=cert.block_id.hex())
        return cert

    def _nonce_order(self, h: int, txs: list[Transaction], applied: Applied) -> None:
        for i, (tx, receipt) in enumerate(zip(txs, applied.receipts, strict=True)):
            self.txs += 1
            last = self.nonces.get(tx.sender, 0)
            if receipt.ok:
                if tx.nonce != last + 1:
                    raise AuditFailure(h, f"transaction {i} was applied out of nonce order",
                                       tx=i, tx_hash=tx.hash.hex(), field="nonce",
                                       expected=last + 1, found=tx.nonce)
                self.nonces[tx.sender] = tx.nonce
                self.applied += 1
            else:
                if receipt.code == "bad_nonce" and tx.nonce == last + 1:
                    raise AuditFailure(h, f"transaction {i} was refused for its nonce although "
                                          "it is the sender's next", tx=i,
                                       tx_hash=tx.hash.hex(), field="nonce",
                                       expected=last + 1, found=tx.nonce)
                self.rejected[receipt.code] += 1


def _interrupted_failure(signum: int, checked: int, final: bool = False) -> AuditFailure:
    """The finding of an interrupted audit: where it stopped."""
    name = signal.Signals(signum).name
    if final:
        return AuditFailure(checked, f"the audit was interrupted by {name} while comparing "
                                     "the source's own records with the replay (every "
                                     "block was checked)")
    return AuditFailure(checked + 1, f"the audit was interrupted by {name} before block "
                                     f"{checked + 1} was checked")


def _receipt_bytes(receipt: Any) -> bytes:
    from node.executor import receipt_bytes

    return receipt_bytes(receipt)


def audit(genesis: Genesis, source: Source, *, workers: int | None = None,
          progress: Progress | None = None, verify_seconds: float = 0.3,
          work_dir: str | Path | None = None) -> AuditReport:
    """Replay and check the chain ``source`` serves against ``genesis``. ``workers``:
    signature-checking processes (None: one per spare core, 0: inline);
    ``verify_seconds``: how long to measure this machine's Ed25519 verify rate;
    ``work_dir``: replay on disk there instead of in memory (see ``Auditor``)."""
    auditor = Auditor(genesis, source, workers=workers, progress=progress,
                      verify_seconds=verify_seconds, work_dir=work_dir)
    try:
        return auditor.run()
    finally:
        auditor.close()


# =====================================================================================
# the command
# =====================================================================================

def _emit_json(doc: dict[str, Any], out: Any) -> None:
    out.write(json.dumps(doc, sort_keys=False) + "\n")
    out.flush()


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise AuditInterrupted(signum)


@contextlib.contextmanager
def _sigterm_interrupts() -> Any:
    """While the audit runs, SIGTERM stops it like Ctrl-C does (so the copy of a database
    is deleted and the report still printed). Only the main thread can set a handler;
    the previous one is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _open_source(args: Any) -> Source:
    if getattr(args, "node", None):
        from node.client import Client

        return NodeSource(Client(args.node, timeout=args.timeout))
    from node.archive import ArchiveError, is_archive, read_archive

    path = Path(args.data)
    if is_archive(path):
        try:
            records = read_archive(path)
        except ArchiveError as exc:
            raise SourceError(str(exc)) from None
        source = MemorySource([b for _, b, _ in records], {h: c for h, _, c in records})
        source.label = str(args.data)
        return source
    if not path.exists():
        raise SourceError(f"--data {args.data}: no such file or directory")
    if not path.is_dir():
        raise SourceError(f"--data must be a node's data directory or an archive made by "
                          f"`mutual export`; {args.data} is neither (a file, but not an "
                          "archive)")
    try:
        db = find_db_dir(path)
    except SourceError as exc:
        raise SourceError(f"--data must be a node's data directory or an archive made by "
                          f"`mutual export`; {args.data} is neither: {exc}") from None
    return DataSource(db)


def _close_source(source: Source | Auditor) -> None:
    """Close a source or an auditor (deleting a ``--data`` copy or a ``--work-dir``
    replay) even through a second Ctrl-C."""
    while True:
        try:
            source.close()
            return
        except KeyboardInterrupt:
            continue


def main(args: Any, out: Any = None, err: Any = None) -> int:
    """``mutual audit``: exit 0 when everything holds, 1 on a finding, 2 on bad input,
    128 + the signal number when SIGINT or SIGTERM stopped it."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        genesis = Genesis.load(args.genesis)
    except GenesisError as exc:
        err.write(f"mutual audit: error: {exc}\n")
        return EXIT_USAGE
    if not getattr(args, "node", None) and not getattr(args, "data", None):
        err.write("mutual audit: error: give --node URL or --data DIR\n")
        return EXIT_USAGE
    source: Source | None = None
    auditor: Auditor | None = None
    report: AuditReport | None = None
    signum: int | None = None
    with _sigterm_interrupts():
        try:
            try:
                source = _open_source(args)
            except SourceError as exc:
                err.write(f"mutual audit: error: {exc}\n")
                return EXIT_FAIL if getattr(args, "node", None) else EXIT_USAGE
            progress = Progress(0, stream=err, enabled=not args.json)
            try:
                auditor = Auditor(genesis, source, workers=None, progress=progress,
                                  work_dir=getattr(args, "work_dir", None))
            except SourceError as exc:
                err.write(f"mutual audit: error: {exc}\n")
                return EXIT_USAGE
            report = auditor.run()
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, AuditInterrupted) else signal.SIGINT
            report = exc.report if isinstance(exc, AuditInterrupted) else None
        finally:
            if auditor is not None:
                _close_source(auditor)
            if source is not None:
                _close_source(source)
    if signum is not None:
        name = signal.Signals(signum).name
        if report is None and auditor is not None:  # e.g. a second Ctrl-C while stopping
            report = auditor.interrupted_report(signum)
        if report is None:  # stopped while the source was being opened
            label = str(getattr(args, "node", None) or getattr(args, "data", ""))
            report = AuditReport.not_started(genesis.chain_id, label, AuditFailure(
                1, f"the audit was interrupted by {name} before the replay started"))
            err.write(f"mutual audit: interrupted by {name} before the replay started\n")
        else:
            assert report.first_error is not None
            err.write(f"mutual audit: interrupted by {name} at height "
                      f"{report.first_error.height} (blocks up to {report.blocks} were "
                      "checked)\n")
        err.flush()
    assert report is not None
    if not args.json:
        out.write(render_report(report) + "\n")
    _emit_json(report.to_json(), out)
    if signum is not None:
        return 128 + signum
    return EXIT_OK if report.ok else EXIT_FAIL


__all__ = ["ABSENT", "AuditFailure", "AuditInterrupted", "AuditReport", "Auditor",
           "DataSource", "MemorySource", "NodeSource", "RuleChecker", "Source",
           "SourceError", "audit", "check_certs", "check_txs", "find_db_dir", "key_name",
           "main", "measure_verify_rate", "render_report"]
