"""The node's block store: committed blocks, their certificates, the transaction index,
receipts and per-block results, kept in the node's one key-value store (LevelDB in
production, ``contracts.kv.MemoryKV`` in tests).

The one operation that matters is ``save_block``: a block, the certificate that committed
it, its transactions' index entries and receipts, the state tree's changes and the new tip
go to disk in ONE atomic batch written with ``sync=True``. After a crash the store holds
either all of height ``h`` or none of it, and the tip always names the last complete height.

``PREFIXES`` is the registry of every key prefix in the node's database, including those
owned by other modules (state tree, consensus WAL, signer state, evidence pool); the byte
layout of every key and value is in docs/storage.md. Heights in keys are 8-byte big-endian
so that key order is height order.

The store checks what it can check cheaply (contiguous heights, the block links to the
stored parent, the certificate names this block, the header's state root is the one this
node computed for the parent) and refuses anything else with a typed error before it
stages a single write. It does not verify signatures: consensus and block sync do that
before they call ``save_block``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgpack

from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.hashing import HASH_SIZE, sha256
from chain.vote import MessageError
from contracts.kv import KV, Batch

# 2: the state tree stores inner nodes in groups of four levels (docs/state.md)
SCHEMA_VERSION = 2

# Every prefix of the node's database, and who owns it. No prefix is a prefix of another.
PREFIXES: dict[str, bytes] = {
    "state": b"state/",          # contracts' authenticated state tree (StateTree)
    "blocks": b"blocks/",        # block store: height -> block
    "block_ids": b"block_ids/",  # block store: block id -> height
    "certs": b"certs/",          # block store: height -> commit certificate (seen commit)
    "txs": b"txs/",              # block store: tx hash -> (height, index)
    "receipts": b"receipts/",    # block store: (height, index) -> receipt
    "results": b"results/",      # block store: height -> state root after the block
    "evidence_index": b"evidence_index/",  # block store: evidence hash -> height
    "meta": b"meta/",            # block store: schema version, genesis hash, tip
    "wal": b"wal/",              # consensus driver: write-ahead log
    "signer": b"signer/",        # consensus signer: last signed (height, round, step)
    "evidence": b"evidence/",    # evidence pool: evidence seen but not yet committed
}

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_TXLOC = struct.Struct(">QI")
_META_SCHEMA = b"schema"
_META_GENESIS = b"genesis"
_META_TIP = b"tip"
MAX_HEIGHT = (1 << 64) - 1


class BlockStoreError(Exception):
    """Base of every error the block store raises."""


class NonContiguousHeight(BlockStoreError):
    """``save_block`` was given a height other than ``latest_height + 1``."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"expected block at height {expected}, got height {got}")
        self.expected = expected
        self.got = got


class BlockMismatch(BlockStoreError):
    """The block, its certificate, receipts or parent link do not fit together."""


class StateRootMismatch(BlockStoreError):
    """The block's header carries a state root other than the one this node computed
    for the parent: this node's state and the chain's have diverged."""


class WrongDatabase(BlockStoreError):
    """The database belongs to another chain or an incompatible schema."""


class CorruptStore(BlockStoreError):
    """Stored bytes do not decode: the database is damaged."""


@dataclass(frozen=True)
class Tip:
    """The last saved height: its block id and the state root after executing it.

    Height 0 is the genesis tip (no block id) written by ``init_genesis``.
    """

    height: int
    block_id: bytes | None
    state_root: bytes
    time: int

    def encode(self) -> bytes:
        return encoding.encode({"block_id": self.block_id, "height": self.height,
                                "state_root": self.state_root, "time": self.time})

    @classmethod
    def decode(cls, data: bytes) -> Tip:
        try:
            m = encoding.decode(data)
            if not isinstance(m, dict) or set(m) != {"block_id", "height", "state_root", "time"}:
                raise ValueError("tip must be a map of block_id, height, state_root, time")
            return cls(m["height"], m["block_id"], m["state_root"], m["time"])
        except (ValueError, KeyError) as exc:
            raise CorruptStore(f"stored tip does not decode: {exc}") from exc


@dataclass(frozen=True)
class TxRecord:
    """Where a committed transaction is, its signed bytes and its receipt bytes."""

    height: int
    index: int
    tx: bytes
    receipt: bytes


def height_key(height: int) -> bytes:
    """The 8-byte big-endian encoding used for heights in keys."""
    return _U64.pack(height)


def _receipt_key(height: int, index: int) -> bytes:
    return _TXLOC.pack(height, index)


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise BlockMismatch(f"{name} must be {HASH_SIZE} bytes")
    return value


def _receipt_code(receipt: bytes) -> str | None:
    try:
        m = msgpack.unpackb(receipt, raw=False)
    except Exception:  # any undecodable receipt simply has no code
        return None
    code = m.get("code") if isinstance(m, dict) else None
    return code if isinstance(code, str) else None


class BlockStore:
    """Blocks, certificates, the tx index, receipts and results over a ``KV`` view.

    Pass the root view of the node's database: the keys are the ones in ``PREFIXES``.
    Not thread-safe for writers (one writer, the node's commit path); reads may come from
    anywhere the KV backend allows.
    """

    def __init__(self, kv: KV, *, durable: bool = True) -> None:
        """``durable``: write every batch with ``sync=True`` (a node). False only for a
        throwaway store whose loss is harmless (an audit's replay on disk)."""
        self._kv = kv
        self._sync = durable
        self._blocks = kv.prefixed(PREFIXES["blocks"])
        self._ids = kv.prefixed(PREFIXES["block_ids"])
        self._certs = kv.prefixed(PREFIXES["certs"])
        self._txs = kv.prefixed(PREFIXES["txs"])
        self._receipts = kv.prefixed(PREFIXES["receipts"])
        self._results = kv.prefixed(PREFIXES["results"])
        self._evidence = kv.prefixed(PREFIXES["evidence_index"])
        self._meta = kv.prefixed(PREFIXES["meta"])
        self._check_schema()
        raw_tip = self._meta.get(_META_TIP)
        self._tip: Tip | None = None if raw_tip is None else Tip.decode(raw_tip)

    def _check_schema(self) -> None:
        raw = self._meta.get(_META_SCHEMA)
        if raw is None:
            if any(True for _ in self._meta.iterate()) or any(True for _ in self._blocks.iterate()):
                raise WrongDatabase("database has block store data but no schema version")
            batch = self._meta.batch()
            batch.put(_META_SCHEMA, encoding.encode({"version": SCHEMA_VERSION}))
            self._kv.write(batch, sync=self._sync)
            return
        try:
            version = encoding.decode(raw)["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStore(f"stored schema version does not decode: {exc}") from exc
        if version != SCHEMA_VERSION:
            raise WrongDatabase(
                f"database schema version {version}, this node reads version {SCHEMA_VERSION}"
            )

    # ---- writing ------------------------------------------------------------------------

    def init_genesis(
        self, genesis_hash: bytes, state_root: bytes, genesis_time: int,
        state_batch: Batch | None = None,
    ) -> None:
        """Record the chain this database belongs to and the genesis state (height 0).

        Writes the genesis hash, the state root after genesis (``state_root_after(0)``),
        the height-0 tip and the state tree's genesis writes (``state_batch``) in one synced
        batch. Calling it again with the same genesis hash is a no-op; with another one it
        raises ``WrongDatabase`` (this data directory belongs to another chain).
        """
        _check_hash("genesis hash", genesis_hash)
        _check_hash("state root", state_root)
        stored = self._meta.get(_META_GENESIS)
        if stored is not None:
            if stored != genesis_hash:
                raise WrongDatabase(
                    f"database belongs to genesis {stored.hex()}, not {genesis_hash.hex()}"
                )
            return
        if self._tip is not None:
            raise WrongDatabase("database has blocks but no genesis record")
        tip = Tip(0, None, state_root, genesis_time)
        batch = self._kv.batch() if state_batch is None else self._kv.within(state_batch)
        batch.put(PREFIXES["meta"] + _META_GENESIS, genesis_hash)
        batch.put(PREFIXES["results"] + height_key(0), state_root)
        batch.put(PREFIXES["meta"] + _META_TIP, tip.encode())
        self._kv.write(batch, sync=self._sync)
        self._tip = tip

    def save_block(
        self,
        block: Block,
        certificate: CommitCertificate,
        receipts: Sequence[bytes],
        state_root: bytes,
        state_batch: Batch | None = None,
    ) -> None:
        """Persist a committed block and everything that goes with it, atomically.

        ``certificate`` is the one this node saw commit ``block``; ``receipts[i]`` is the
        executor's receipt for ``block.txs[i]``; ``state_root`` is the state root after
        executing the block; ``state_batch`` is the batch ``StateTree.commit`` staged its
        writes into (any view of this store; ``None`` if the block changed no state).
        Everything goes into that batch, which is written once with ``sync=True``.

        Raises ``NonContiguousHeight``, ``BlockMismatch`` or ``StateRootMismatch`` before
        staging anything, so a refused block leaves both the store and ``state_batch``
        untouched. If the write itself fails, nothing of it is visible.
        """
        height = block.height
        expected = self.latest_height + 1
        if height != expected:
            raise NonContiguousHeight(expected, height)
        self._check_fit(block, certificate, receipts, state_root)

        block_bytes = block.encode()
        block_id = block.block_id()
        hk = height_key(height)
        batch = self._kv.batch() if state_batch is None else self._kv.within(state_batch)
        # Resolve the tx index against earlier blocks and earlier txs of this block before
        # staging anything, so the staged ops are all computed from committed data.
        locations: dict[bytes, int] = {}
        for index, tx in enumerate(block.txs):
            tx_hash = sha256(tx)
            prior = locations.get(tx_hash)
            if prior is not None:
                if _receipt_code(receipts[prior]) == "ok":
                    continue
            else:
                stored = self._txs.get(tx_hash)
                if stored is not None:
                    old_h, old_i = _TXLOC.unpack(stored)
                    old_receipt = self._receipts.get(_receipt_key(old_h, old_i))
                    if old_receipt is not None and _receipt_code(old_receipt) == "ok":
                        continue
            locations[tx_hash] = index

        p = PREFIXES
        batch.put(p["blocks"] + hk, block_bytes)
        batch.put(p["block_ids"] + block_id, hk)
        batch.put(p["certs"] + hk, certificate.encode())
        for index, receipt in enumerate(receipts):
            batch.put(p["receipts"] + _receipt_key(height, index), receipt)
        for tx_hash, index in locations.items():
            batch.put(p["txs"] + tx_hash, _TXLOC.pack(height, index))
        for ev in block.evidence:
            ev_hash = ev.hash()
            if self._evidence.get(ev_hash) is None:
                batch.put(p["evidence_index"] + ev_hash, hk)
        batch.put(p["results"] + hk, state_root)
        tip = Tip(height, block_id, state_root, block.header.time)
        batch.put(p["meta"] + _META_TIP, tip.encode())
        self._kv.write(batch, sync=self._sync)
        self._tip = tip

    def _check_fit(
        self, block: Block, certificate: CommitCertificate, receipts: Sequence[bytes],
        state_root: bytes,
    ) -> None:
        height = block.height
        if not isinstance(certificate, CommitCertificate):
            raise BlockMismatch("certificate is not a CommitCertificate")
        if certificate.height != height:
            raise BlockMismatch(
                f"certificate is for height {certificate.height}, block is {height}")
        block_id = block.block_id()
        if certificate.block_id != block_id:
            raise BlockMismatch("certificate is for another block id")
        if len(receipts) != len(block.txs):
            raise BlockMismatch(
                f"{len(receipts)} receipts for {len(block.txs)} transactions")
        if not all(isinstance(r, bytes) for r in receipts):
            raise BlockMismatch("receipts must be bytes")
        _check_hash("state root", state_root)
        try:
            block.check_structure()
        except MessageError as exc:
            raise BlockMismatch(f"block is inconsistent: {exc}") from exc
        # Heights are contiguous, so the parent is the tip (or genesis for height 1).
        parent_id = None if self._tip is None else self._tip.block_id
        if height > 1 and block.header.last_block_id != parent_id:
            raise BlockMismatch(f"block {height} does not link to the stored block {height - 1}")
        parent_root = self.state_root_after(height - 1)
        if parent_root is not None and block.header.state_root != parent_root:
            raise StateRootMismatch(
                f"block {height} carries state root {block.header.state_root.hex()}, "
                f"this node computed {parent_root.hex()} after height {height - 1}"
            )

    # ---- reading ------------------------------------------------------------------------

    @property
    def latest_height(self) -> int:
        """The last saved height; 0 if there is no block yet."""
        return 0 if self._tip is None else self._tip.height

    def tip(self) -> Tip | None:
        """The tip record (height, block id, state root after it, block time), or None."""
        return self._tip

    def genesis_hash(self) -> bytes | None:
        return self._meta.get(_META_GENESIS)

    def block_bytes(self, height: int) -> bytes | None:
        """The canonical bytes of the block at ``height`` (what sync sends), or None."""
        if not _valid_height(height):
            return None
        return self._blocks.get(height_key(height))

    def block(self, height: int) -> Block | None:
        data = self.block_bytes(height)
        return None if data is None else _decode_block(data, height)

    def height_of(self, block_id: bytes) -> int | None:
        """The height of the block with id ``block_id``, or None."""
        if not isinstance(block_id, bytes) or len(block_id) != HASH_SIZE:
            return None
        stored = self._ids.get(block_id)
        return None if stored is None else _U64.unpack(stored)[0]

    def block_by_id(self, block_id: bytes) -> Block | None:
        height = self.height_of(block_id)
        return None if height is None else self.block(height)

    def certificate_bytes(self, height: int) -> bytes | None:
        if not _valid_height(height):
            return None
        return self._certs.get(height_key(height))

    def certificate(self, height: int) -> CommitCertificate | None:
        """The certificate this node saw commit block ``height`` (the canonical one, which
        may hold a different set of signatures, is ``block(height + 1).last_commit``)."""
        data = self.certificate_bytes(height)
        if data is None:
            return None
        try:
            return CommitCertificate.decode(data)
        except MessageError as exc:
            raise CorruptStore(f"stored certificate {height} does not decode: {exc}") from exc

    def tx(self, tx_hash: bytes) -> TxRecord | None:
        """A committed transaction by hash: its height, index, bytes and receipt, or None.

        If the same transaction was included more than once (a replay, which fails), this
        is the inclusion whose receipt code is ``"ok"``, else the latest one.
        """
        if not isinstance(tx_hash, bytes) or len(tx_hash) != HASH_SIZE:
            return None
        loc = self._txs.get(tx_hash)
        if loc is None:
            return None
        height, index = _TXLOC.unpack(loc)
        data = self.block_bytes(height)
        receipt = self._receipts.get(_receipt_key(height, index))
        if data is None or receipt is None:
            raise CorruptStore(f"tx index points at missing block/receipt {height}:{index}")
        try:
            # Stored blocks were canonical when saved; skip the full decode for one tx.
            tx = msgpack.unpackb(data, raw=False)["txs"][index]
        except Exception as exc:  # whatever msgpack or indexing raises means damage
            raise CorruptStore(f"stored block {height} does not hold tx {index}") from exc
        return TxRecord(height, index, tx, receipt)

    def receipt(self, height: int, index: int) -> bytes | None:
        if not _valid_height(height) or not isinstance(index, int) or not 0 <= index < 1 << 32:
            return None
        return self._receipts.get(_receipt_key(height, index))

    def receipts(self, height: int) -> list[bytes]:
        """Every receipt of block ``height`` in transaction order ([] if unknown)."""
        if not _valid_height(height):
            return []
        return [v for _, v in self._receipts.iterate(height_key(height))]

    def state_root_after(self, height: int) -> bytes | None:
        """The state root after executing block ``height`` (0: after genesis), or None."""
        if not isinstance(height, int) or not 0 <= height <= MAX_HEIGHT:
            return None
        return self._results.get(height_key(height))

    def evidence_height(self, evidence_hash: bytes) -> int | None:
        """The height of the block that committed this evidence, or None."""
        if not isinstance(evidence_hash, bytes) or len(evidence_hash) != HASH_SIZE:
            return None
        stored = self._evidence.get(evidence_hash)
        return None if stored is None else _U64.unpack(stored)[0]

    def iter_block_bytes(
        self, start: int = 1, stop: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """``(height, block bytes)`` for heights in ``[start, stop)``, ascending."""
        start = max(start, 1)
        if start > MAX_HEIGHT or (stop is not None and stop <= start):
            return
        stop_key = None if stop is None else height_key(min(stop, MAX_HEIGHT))
        for key, value in self._blocks.iterate(start=height_key(start), stop=stop_key):
            yield _U64.unpack(key)[0], value

    def iter_blocks(self, start: int = 1, stop: int | None = None) -> Iterator[Block]:
        """Decoded blocks for heights in ``[start, stop)``, ascending (sync and audit)."""
        for height, data in self.iter_block_bytes(start, stop):
            yield _decode_block(data, height)


def _valid_height(height: object) -> bool:
    return isinstance(height, int) and not isinstance(height, bool) and 1 <= height <= MAX_HEIGHT


def _decode_block(data: bytes, height: int) -> Block:
    try:
        return Block.decode(data)
    except MessageError as exc:
        raise CorruptStore(f"stored block {height} does not decode: {exc}") from exc
