"""Block store on both KV backends: round trips, refusals, atomic saves, reopen, crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chain import encoding
from chain.block import Block, BlockHeader, evidence_hash, txs_hash
from chain.certificate import CommitCertificate, CommitSig
from chain.evidence import DuplicateVoteEvidence
from chain.hashing import sha256
from chain.vote import Vote, VoteType
from contracts.kv import KV, MemoryKV
from node.store.blockstore import (
    PREFIXES,
    BlockMismatch,
    BlockStore,
    CorruptStore,
    NonContiguousHeight,
    StateRootMismatch,
    WrongDatabase,
    height_key,
)
from node.store.kvstore import LevelKV

CHAIN = "test-chain"
GENESIS_HASH = sha256(b"genesis")
GENESIS_ROOT = sha256(b"genesis-root")
GENESIS_TIME = 1_000


def receipt(code: str = "ok") -> bytes:
    return encoding.encode({"code": code, "events": [], "reason": ""})


def tx_bytes(tag: str) -> bytes:
    return encoding.encode({"tx": tag})  # the store treats transactions as opaque bytes


def evidence(height: int) -> DuplicateVoteEvidence:
    a = Vote(VoteType.PREVOTE, height, 0, b"\x0a" * 32, 5, 1, b"\x01" * 64)
    b = Vote(VoteType.PREVOTE, height, 0, b"\x0b" * 32, 5, 1, b"\x02" * 64)
    return DuplicateVoteEvidence.create(a, b)


class ChainBuilder:
    """Builds a linked chain of blocks with certificates, as consensus would deliver them."""

    def __init__(self) -> None:
        self.prev: Block | None = None
        self.prev_cert: CommitCertificate | None = None
        self.root = GENESIS_ROOT

    def next(
        self, txs: list[bytes] | None = None, codes: list[str] | None = None,
        ev: tuple[DuplicateVoteEvidence, ...] = (),
    ) -> tuple[Block, CommitCertificate, list[bytes], bytes]:
        txs = txs or []
        height = 1 if self.prev is None else self.prev.height + 1
        header = BlockHeader(
            CHAIN, height, GENESIS_TIME + height,
            None if self.prev is None else self.prev.block_id(),
            None if self.prev_cert is None else self.prev_cert.hash(),
            txs_hash(txs), evidence_hash(list(ev)), self.root, b"\x07" * 32, 0,
            b"\x07" * 32,
        )
        block = Block(header, tuple(txs), ev, self.prev_cert)
        cert = CommitCertificate(height, 0, block.block_id(),
                                 (CommitSig(0, GENESIS_TIME + height, b"\x03" * 64),))
        receipts = [receipt(c) for c in (codes or ["ok"] * len(txs))]
        new_root = sha256(self.root + height_key(height))
        return block, cert, receipts, new_root

    def accept(self, block: Block, cert: CommitCertificate, root: bytes) -> None:
        self.prev, self.prev_cert, self.root = block, cert, root


def save_next(store: BlockStore, chain: ChainBuilder, kv: KV, txs: list[bytes] | None = None,
              codes: list[str] | None = None, ev: tuple = ()) -> Block:
    block, cert, receipts, root = chain.next(txs, codes, ev)
    state = kv.prefixed(PREFIXES["state"]).batch()
    state.put(b"node-" + height_key(block.height), root)
    store.save_block(block, cert, receipts, root, state)
    chain.accept(block, cert, root)
    return block


class Backend:
    """Open / reopen one database on either backend."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.memory = MemoryKV() if kind == "memory" else None
        self.kv: KV | None = None

    def open(self) -> KV:
        self.kv = self.memory if self.memory is not None else LevelKV(self.path)
        return self.kv

    def reopen(self) -> KV:
        if self.memory is None and self.kv is not None:
            self.kv.close()
        return self.open()

    def close(self) -> None:
        if self.memory is None and self.kv is not None:
            self.kv.close()


@pytest.fixture(params=["memory", "leveldb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = Backend(request.param, tmp_path / "db")
    yield b
    b.close()


def dump(kv: KV) -> dict[bytes, bytes]:
    return dict(kv.iterate())


# ---- round trips -----------------------------------------------------------------------


def test_empty_store(backend: Backend) -> None:
    store = BlockStore(backend.open())
    assert store.latest_height == 0 and store.tip() is None
    assert store.genesis_hash() is None and store.state_root_after(0) is None
    assert list(store.iter_blocks()) == []


def test_save_and_read_everything(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
    assert store.state_root_after(0) == GENESIS_ROOT and store.latest_height == 0
    chain = ChainBuilder()
    b1 = save_next(store, chain, kv, [tx_bytes("a"), tx_bytes("b")], ["ok", "unknown_member"])
    b2 = save_next(store, chain, kv, [], ev=(evidence(1),))
    b3 = save_next(store, chain, kv, [tx_bytes("c")])
    assert store.latest_height == 3
    tip = store.tip()
    assert tip is not None and tip.height == 3 and tip.block_id == b3.block_id()
    assert tip.state_root == chain.root and tip.time == b3.header.time
    for b in (b1, b2, b3):
        assert store.block(b.height) == b
        assert store.block_bytes(b.height) == b.encode()
        assert store.block_by_id(b.block_id()) == b
        assert store.height_of(b.block_id()) == b.height
        cert = store.certificate(b.height)
        assert cert is not None and cert.block_id == b.block_id()
        assert store.certificate_bytes(b.height) == cert.encode()
    # The canonical certificate of block 1 rides in block 2.
    assert b2.last_commit == store.certificate(1)
    rec = store.tx(sha256(tx_bytes("b")))
    assert rec is not None and (rec.height, rec.index, rec.tx) == (1, 1, tx_bytes("b"))
    assert rec.receipt == receipt("unknown_member")
    rec_c = store.tx(sha256(tx_bytes("c")))
    assert rec_c is not None and (rec_c.height, rec_c.index) == (3, 0)
    assert store.receipts(1) == [receipt("ok"), receipt("unknown_member")]
    assert store.receipts(2) == []
    assert store.receipt(1, 0) == receipt("ok")
    assert store.evidence_height(evidence(1).hash()) == 2
    assert store.state_root_after(3) == chain.root
    assert store.state_root_after(1) == b2.header.state_root
    # The state tree's writes went in with the blocks.
    state = kv.prefixed(PREFIXES["state"])
    assert state.get(b"node-" + height_key(3)) == chain.root
    assert [b.height for b in store.iter_blocks()] == [1, 2, 3]
    assert [h for h, _ in store.iter_block_bytes(2)] == [2, 3]
    assert [h for h, _ in store.iter_block_bytes(1, 3)] == [1, 2]
    assert list(store.iter_block_bytes(3, 2)) == [] == list(store.iter_block_bytes(1 << 64))
    assert [b.height for b in store.iter_blocks(-5, 1 << 70)] == [1, 2, 3]


def test_unknown_things_are_none(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    save_next(store, ChainBuilder(), kv, [tx_bytes("a")])
    for bad in (0, -1, 2, 99, 1 << 64, True, "1", None):
        assert store.block(bad) is None  # type: ignore[arg-type]
        assert store.block_bytes(bad) is None  # type: ignore[arg-type]
        assert store.certificate(bad) is None  # type: ignore[arg-type]
        assert store.receipts(bad) == []  # type: ignore[arg-type]
        assert store.receipt(bad, 0) is None  # type: ignore[arg-type]
    assert store.receipt(1, 1) is None and store.receipt(1, -1) is None
    assert store.state_root_after(2) is None and store.state_root_after(-1) is None
    for bad_hash in (b"\x00" * 32, b"short", "text"):
        assert store.block_by_id(bad_hash) is None  # type: ignore[arg-type]
        assert store.height_of(bad_hash) is None  # type: ignore[arg-type]
        assert store.tx(bad_hash) is None  # type: ignore[arg-type]
        assert store.evidence_height(bad_hash) is None  # type: ignore[arg-type]


def test_iteration_is_height_order_past_byte_boundaries() -> None:
    # Big-endian keys: 256 must sort after 255 (little-endian or decimal text would not).
    kv = MemoryKV()
    store = BlockStore(kv)
    chain = ChainBuilder()
    for _ in range(260):
        save_next(store, chain, kv)
    heights = [b.height for b in store.iter_blocks(250)]
    assert heights == list(range(250, 261))
    assert [h for h, _ in store.iter_block_bytes(255, 258)] == [255, 256, 257]


def test_reopen_after_close_returns_everything(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
    chain = ChainBuilder()
    blocks = [save_next(store, chain, kv, [tx_bytes(f"t{h}")]) for h in range(1, 6)]
    before = dump(kv)
    kv = backend.reopen()
    assert dump(kv) == before
    store = BlockStore(kv)
    assert store.latest_height == 5 and store.tip() is not None
    assert store.genesis_hash() == GENESIS_HASH
    assert [b.block_id() for b in store.iter_blocks()] == [b.block_id() for b in blocks]
    rec = store.tx(sha256(tx_bytes("t4")))
    assert rec is not None and rec.height == 4
    # and it carries on from where it was
    save_next(store, chain, kv)
    assert store.latest_height == 6


# ---- refusals --------------------------------------------------------------------------


def test_non_contiguous_heights_are_refused(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    chain = ChainBuilder()
    b1, c1, r1, root1 = chain.next()
    chain.accept(b1, c1, root1)
    b2, c2, r2, root2 = chain.next()
    state = kv.prefixed(PREFIXES["state"]).batch()
    state.put(b"x", b"y")
    with pytest.raises(NonContiguousHeight) as info:
        store.save_block(b2, c2, r2, root2, state)
    assert (info.value.expected, info.value.got) == (1, 2)
    assert len(state) == 1  # nothing staged into the caller's batch
    store.save_block(b1, c1, r1, root1)
    with pytest.raises(NonContiguousHeight):
        store.save_block(b1, c1, r1, root1)  # the same height again
    chain.accept(b2, c2, root2)
    b3, c3, r3, root3 = chain.next()
    before = dump(kv)
    with pytest.raises(NonContiguousHeight):
        store.save_block(b3, c3, r3, root3)  # skips height 2
    assert dump(kv) == before and store.latest_height == 1


def test_mismatches_are_refused_and_change_nothing(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
    chain = ChainBuilder()
    save_next(store, chain, kv)
    block, cert, receipts, root = chain.next([tx_bytes("a")])
    before = dump(kv)

    other = CommitCertificate(block.height, 0, b"\x09" * 32, cert.sigs)
    wrong_height = CommitCertificate(block.height + 1, 0, block.block_id(), cert.sigs)
    cases = [
        (BlockMismatch, (block, other, receipts, root)),
        (BlockMismatch, (block, wrong_height, receipts, root)),
        (BlockMismatch, (block, cert, [], root)),
        (BlockMismatch, (block, cert, ["text"], root)),
        (BlockMismatch, (block, cert, receipts, b"short")),
        (BlockMismatch, (block, "cert", receipts, root)),
    ]
    # A block whose header does not commit to its transactions.
    bad_header = BlockHeader(**{**vars(block.header), "txs_hash": b"\x00" * 32})
    bad_block = Block(bad_header, block.txs, block.evidence, block.last_commit)
    bad_cert = CommitCertificate(block.height, 0, bad_block.block_id(), cert.sigs)
    cases.append((BlockMismatch, (bad_block, bad_cert, receipts, root)))
    # A block that does not link to the stored parent.
    unlinked_header = BlockHeader(**{**vars(block.header), "last_block_id": b"\x05" * 32})
    unlinked = Block(unlinked_header, block.txs, block.evidence, block.last_commit)
    cases.append((BlockMismatch, (unlinked, CommitCertificate(
        block.height, 0, unlinked.block_id(), cert.sigs), receipts, root)))
    # A header whose state root differs from what this node computed for the parent.
    diverged_header = BlockHeader(**{**vars(block.header), "state_root": b"\x06" * 32})
    diverged = Block(diverged_header, block.txs, block.evidence, block.last_commit)
    cases.append((StateRootMismatch, (diverged, CommitCertificate(
        block.height, 0, diverged.block_id(), cert.sigs), receipts, root)))

    for error, args in cases:
        state = kv.prefixed(PREFIXES["state"]).batch()
        with pytest.raises(error):
            store.save_block(*args, state)  # type: ignore[arg-type]
        assert len(state) == 0
        assert dump(kv) == before and store.latest_height == 1
    store.save_block(block, cert, receipts, root)
    assert store.latest_height == 2


def test_genesis_root_is_checked_against_block_1() -> None:
    kv = MemoryKV()
    store = BlockStore(kv)
    store.init_genesis(GENESIS_HASH, sha256(b"another root"), GENESIS_TIME)
    block, cert, receipts, root = ChainBuilder().next()
    with pytest.raises(StateRootMismatch):
        store.save_block(block, cert, receipts, root)


def test_wrong_genesis_and_schema_are_refused(backend: Backend) -> None:
    kv = backend.open()
    store = BlockStore(kv)
    store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
    store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)  # same chain: no-op
    with pytest.raises(WrongDatabase):
        store.init_genesis(sha256(b"other"), GENESIS_ROOT, GENESIS_TIME)
    with pytest.raises(BlockMismatch):
        store.init_genesis(b"short", GENESIS_ROOT, GENESIS_TIME)
    meta = kv.prefixed(PREFIXES["meta"])
    b = meta.batch()
    b.put(b"schema", encoding.encode({"version": 99}))
    kv.write(b)
    with pytest.raises(WrongDatabase):
        BlockStore(kv)
    b = meta.batch()
    b.put(b"schema", b"\xc1")
    kv.write(b)
    with pytest.raises(CorruptStore):
        BlockStore(kv)


def test_blocks_without_schema_record_are_refused() -> None:
    kv = MemoryKV()
    b = kv.batch()
    b.put(PREFIXES["blocks"] + height_key(1), b"old")
    kv.write(b)
    with pytest.raises(WrongDatabase):
        BlockStore(kv)


def test_corrupt_tip_and_block_are_reported() -> None:
    kv = MemoryKV()
    store = BlockStore(kv)
    chain = ChainBuilder()
    save_next(store, chain, kv, [tx_bytes("a")])
    b = kv.batch()
    b.put(PREFIXES["blocks"] + height_key(1), b"\x01\x02")
    kv.write(b)
    with pytest.raises(CorruptStore):
        store.block(1)
    with pytest.raises(CorruptStore):
        store.tx(sha256(tx_bytes("a")))
    b = kv.batch()
    b.put(PREFIXES["meta"] + b"tip", b"\xc1")
    kv.write(b)
    with pytest.raises(CorruptStore):
        BlockStore(kv)


# ---- the transaction index -------------------------------------------------------------


def test_tx_index_prefers_the_successful_inclusion() -> None:
    kv = MemoryKV()
    store = BlockStore(kv)
    chain = ChainBuilder()
    a, b = tx_bytes("a"), tx_bytes("b")
    save_next(store, chain, kv, [a, b], ["ok", "member_unknown"])
    # A replay of `a` fails and must not hide the original; `b` now succeeds.
    save_next(store, chain, kv, [a, b], ["nonce_too_low", "ok"])
    # The same bytes twice in one block: the first ok one wins.
    c = tx_bytes("c")
    save_next(store, chain, kv, [c, c], ["bad", "ok"])
    d = tx_bytes("d")
    save_next(store, chain, kv, [d, d], ["ok", "nonce_too_low"])
    locations = {t: store.tx(sha256(t)) for t in (a, b, c, d)}
    assert {t: (r.height, r.index) for t, r in locations.items() if r} == {
        a: (1, 0), b: (2, 1), c: (3, 1), d: (4, 0)}
    assert store.receipts(2) == [receipt("nonce_too_low"), receipt("ok")]


# ---- atomicity -------------------------------------------------------------------------


class FailingMemoryKV(MemoryKV):
    """Counts writes and fails them on demand, like a disk that goes away."""

    def __init__(self) -> None:
        super().__init__()
        self.fail = False
        self.writes = 0

    def write(self, batch, sync: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.writes += 1
        assert sync, "block store writes must be synced"
        if self.fail:
            raise OSError("disk went away")
        super().write(batch, sync)


class FailingLevelKV(LevelKV):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail = False
        self.writes = 0

    def write(self, batch, sync: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.writes += 1
        assert sync, "block store writes must be synced"
        if self.fail:
            raise OSError("disk went away")
        super().write(batch, sync)


@pytest.mark.parametrize("kind", ["memory", "leveldb"])
def test_failed_write_leaves_nothing_visible(kind: str, tmp_path: Path) -> None:
    kv = FailingMemoryKV() if kind == "memory" else FailingLevelKV(tmp_path / "db")
    try:
        store = BlockStore(kv)
        store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
        chain = ChainBuilder()
        save_next(store, chain, kv, [tx_bytes("a")])
        writes = kv.writes
        save_next(store, chain, kv, [tx_bytes("b")])
        assert kv.writes == writes + 1  # one save, one write: nothing half-done is possible
        before = dump(kv)
        kv.fail = True
        block, cert, receipts, root = chain.next([tx_bytes("c")], ev=(evidence(2),))
        state = kv.prefixed(PREFIXES["state"]).batch()
        state.put(b"node-c", root)
        with pytest.raises(OSError):
            store.save_block(block, cert, receipts, root, state)
        assert dump(kv) == before
        assert store.latest_height == 2 and store.block(3) is None
        assert store.tx(sha256(tx_bytes("c"))) is None and store.state_root_after(3) is None
        assert BlockStore(kv).latest_height == 2
        # The disk comes back: the same save goes through.
        kv.fail = False
        store.save_block(block, cert, receipts, root, state)
        assert store.latest_height == 3 and kv.prefixed(PREFIXES["state"]).get(b"node-c")
    finally:
        if kind == "leveldb":
            kv.close()


CRASH_CHILD = r"""
import sys
from contracts.kv import KV
from node.store.blockstore import PREFIXES, BlockStore, height_key
from node.store.kvstore import LevelKV
from tests.test_blockstore import GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME, ChainBuilder, tx_bytes

kv = LevelKV(sys.argv[1])
store = BlockStore(kv)
store.init_genesis(GENESIS_HASH, GENESIS_ROOT, GENESIS_TIME)
chain = ChainBuilder()
for h in range(1, 2001):
    txs = [tx_bytes(f"{h}-{i}") for i in range(20)]
    block, cert, receipts, root = chain.next(txs)
    state = kv.prefixed(PREFIXES["state"]).batch()
    for i in range(200):
        state.put(height_key(h) + i.to_bytes(4, "big"), root * 8)
    store.save_block(block, cert, receipts, root, state)
    chain.accept(block, cert, root)
    print(h, flush=True)
"""


def test_sigkill_mid_save_leaves_whole_heights_only(tmp_path: Path) -> None:
    path = tmp_path / "db"
    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASH_CHILD, str(path)], cwd=repo,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    last = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: the child stops after 2000 heights
            last = int(line)
            if last >= 12:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    assert last >= 12, "child did not get far enough"
    kv = LevelKV(path)
    try:
        store = BlockStore(kv)
        top = store.latest_height
        assert top >= last  # every save that returned is durable
        state = kv.prefixed(PREFIXES["state"])
        for h in range(1, top + 1):
            block = store.block(h)
            assert block is not None and len(block.txs) == 20
            assert store.certificate(h) is not None and store.state_root_after(h) is not None
            assert len(store.receipts(h)) == 20
            assert store.tx(sha256(block.txs[19])) is not None
            assert len(list(state.iterate(height_key(h)))) == 200
        # Nothing of the height that was being written when the process died.
        nxt = height_key(top + 1)
        assert store.block(top + 1) is None and store.receipts(top + 1) == []
        assert list(state.iterate(nxt)) == [] and store.state_root_after(top + 1) is None
        assert store.tx(sha256(tx_bytes(f"{top + 1}-0"))) is None
    finally:
        kv.close()


def test_with_the_real_state_tree(tmp_path: Path) -> None:
    from contracts.tree import StateTree

    kv = LevelKV(tmp_path / "db")
    try:
        store = BlockStore(kv)
        tree = StateTree(kv.prefixed(PREFIXES["state"]))
        chain = ChainBuilder()
        chain.root = tree.root()
        store.init_genesis(GENESIS_HASH, tree.root(), GENESIS_TIME)
        for h in range(1, 4):
            for i in range(50):
                tree.set(b"key-%d-%d" % (h, i), b"value-%d" % h)
            batch = kv.batch()
            root = tree.commit(batch)
            block, cert, receipts, _ = chain.next([tx_bytes(f"s{h}")])
            store.save_block(block, cert, receipts, root, batch)
            chain.accept(block, cert, root)
        roots = [store.state_root_after(h) for h in range(4)]
    finally:
        kv.close()
    kv = LevelKV(tmp_path / "db")
    try:
        store = BlockStore(kv)
        state_view = kv.prefixed(PREFIXES["state"])
        tip = store.tip()
        assert tip is not None and StateTree.stored_root(state_view) == roots[3] == tip.state_root
        reopened = StateTree(state_view, root=roots[3])
        assert reopened.get(b"key-2-7") == b"value-2"
        older = StateTree(state_view, root=roots[1])  # every committed root stays readable
        assert older.get(b"key-1-0") == b"value-1" and older.get(b"key-3-0") is None
    finally:
        kv.close()
