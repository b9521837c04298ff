"""The block executor: validates blocks against the chain so far and applies them.

``validate`` is the one definition of a valid next block used by consensus (a proposal),
block sync (a fetched block) and the auditor's replay. ``apply`` runs a committed block
through ``contracts`` and writes the block, its certificate, its receipts and the state
changes in one synced batch (``BlockStore.save_block``), so a crash leaves either the
whole block or none of it.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.block import Block, BlockHeader, evidence_hash, txs_hash
from chain.certificate import CommitCertificate, verify_certificate, weighted_median_time
from chain.evidence import DuplicateVoteEvidence
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.tx import MAX_TX_SIZE, Transaction, TxError
from chain.validators import ValidatorSet
from chain.vote import MessageError
from contracts import records
from contracts.app import Application, Receipt
from contracts.kv import KV
from contracts.tree import StateTree
from node.store.blockstore import PREFIXES, BlockStore

log = logging.getLogger("node.executor")

SignatureCheck = Callable[[bytes, Transaction], bool]


class BlockInvalid(Exception):
    """A block is not a valid next block; the message says exactly why."""


def _default_sig_check(tx_hash: bytes, tx: Transaction) -> bool:
    return tx.verify_signature()


def receipt_bytes(receipt: Receipt) -> bytes:
    return encoding.encode(receipt.to_map())


@dataclass(frozen=True)
class Applied:
    height: int
    block_id: bytes
    state_root: bytes
    receipts: tuple[Receipt, ...]
    tx_hashes: tuple[bytes, ...]
    begin_events: tuple
    end_events: tuple


class Executor:
    """Owns the application state of one node (or one auditor replay)."""

    def __init__(self, genesis: Genesis, kv: KV, store: BlockStore,
                 sig_check: SignatureCheck = _default_sig_check,
                 known_tx: Callable[[bytes], Transaction | None] | None = None,
                 keep_roots: int | None = None, tree_cache: int | None = None) -> None:
        """``keep_roots``: how many state roots stay readable (``StateTree``'s ``keep``);
        None keeps them all (an archive, as the auditor's replay needs). ``tree_cache``:
        the state tree's ``node_cache`` (None: its default)."""
        self.genesis = genesis
        self.kv = kv
        self.store = store
        # how every tree this executor commits with is opened (views need neither)
        self._tree_options: dict[str, int | None] = {"keep": keep_roots}
        if tree_cache is not None:
            self._tree_options["node_cache"] = tree_cache
        self.sig_check = sig_check
        # transactions this node already decoded (its mempool): no second decode
        self.known_tx = known_tx or (lambda tx_hash: None)
        # hashes of certificates already verified (the ones blocks were applied with):
        # the next block usually carries the same bytes as its last_commit
        self._verified_certs: dict[bytes, None] = {}
        self.state_kv = kv.prefixed(PREFIXES["state"])
        stored_genesis = store.genesis_hash()
        if stored_genesis is None:
            tree = StateTree(self.state_kv, **self._tree_options)
            app = Application(genesis, tree)
            app.init_chain()
            batch = kv.batch()
            root = tree.commit(self.state_kv.within(batch))
            store.init_genesis(genesis.hash, root, genesis.genesis_time_ms, batch)
        else:
            store.init_genesis(genesis.hash, store.state_root_after(0) or b"\x00" * 32,
                               genesis.genesis_time_ms)  # raises WrongDatabase on mismatch
        self.height = store.latest_height
        root = store.state_root_after(self.height)
        if root is None:
            raise BlockInvalid(f"block store has no state root for height {self.height}")
        self.tree = StateTree(self.state_kv, root, **self._tree_options)
        self.app = Application(genesis, self.tree)
        # validator sets by start height (final ones only) and the change heights as of
        # one executor height: see ``validators_at``
        self._vset_cache: dict[int, ValidatorSet] = {}
        self._vset_heights: tuple[int, list[int]] | None = None

    # ------------------------------------------------------------------ reading

    @property
    def state_root(self) -> bytes:
        """The state root after the latest committed block (goes into the next header)."""
        return self.tree.root()

    def last_block_id(self) -> bytes | None:
        tip = self.store.tip()
        return None if tip is None else tip.block_id

    def last_block_time(self) -> int:
        tip = self.store.tip()
        return self.genesis.genesis_time_ms if tip is None or tip.height == 0 else tip.time

    def validators_at(self, height: int) -> ValidatorSet:
        """The set that signs block ``height`` (known up to two past the latest block).

        Final sets (heights up to ``height + 2``) are cached by the height they start at,
        so every height of one set gets the very same object: the consensus machine
        reuses next-height messages it already verified only when the set ``is`` the
        one it verified them against. Raises ``ValueError`` for a height below 1."""
        if height < 1:
            raise ValueError("heights start at 1")
        if height > self.height + 2:
            # not final yet: a block still to come may change it (no caching)
            return self.app.validators_at(height)
        heights = self.validator_set_heights()
        start = heights[bisect_right(heights, height) - 1]
        vset = self._vset_cache.get(start)
        if vset is None:
            vset = self._vset_cache[start] = self.app.validators_at(start)
        return vset

    def validator_set_heights(self) -> list[int]:
        """Heights at which the set changed (1 = genesis), ascending, as far as known after
        the latest block (a change applies at most two heights after it)."""
        cached = self._vset_heights
        if cached is None or cached[0] != self.height:
            cached = self._vset_heights = (self.height, self.app.validator_set_heights())
        return cached[1]

    def validator_record(self, start: int) -> dict[str, Any] | None:
        """The state's ``vset/<start>`` record ({"validators", "changes"}), or None."""
        return records.load(self.app.state, records.vset_key(start))

    @property
    def validators(self) -> ValidatorSet:
        """The set of the next height: the one consensus runs with now."""
        return self.validators_at(self.height + 1)

    def view_at(self, root: bytes) -> tuple[Application, StateTree]:
        """A read-only application over the state with ``root`` (for proofs)."""
        tree = StateTree(self.state_kv, root)
        return Application(self.genesis, tree), tree

    # ------------------------------------------------------------------ building

    def header_for(self, txs: list[bytes], evidence: list[DuplicateVoteEvidence],
                   last_commit: CommitCertificate | None, proposer: int) -> BlockHeader:
        """The header of the next block with these contents."""
        height = self.height + 1
        if height == 1:
            time_ms = self.genesis.genesis_time_ms
            last_commit_hash = None
        else:
            if last_commit is None:
                raise BlockInvalid("a block after the first needs its parent's certificate")
            time_ms = weighted_median_time(last_commit, self.validators_at(height - 1))
            last_commit_hash = last_commit.hash()
        return BlockHeader(
            chain_id=self.genesis.chain_id, height=height, time=time_ms,
            last_block_id=self.last_block_id(), last_commit_hash=last_commit_hash,
            txs_hash=txs_hash(txs), evidence_hash=evidence_hash(evidence),
            state_root=self.state_root, validators_hash=self.validators_at(height).hash(),
            proposer=proposer, next_validators_hash=self.validators_at(height + 1).hash(),
        )

    # ------------------------------------------------------------------ validation

    def validate(self, block: Block) -> list[Transaction]:
        """Check that ``block`` is a valid next block; return its decoded transactions."""
        h = block.header
        expected = self.height + 1
        if h.height != expected:
            raise BlockInvalid(f"block height {h.height}, expected {expected}")
        if h.chain_id != self.genesis.chain_id:
            raise BlockInvalid(f"chain id {h.chain_id!r} is not {self.genesis.chain_id!r}")
        try:
            block.check_structure()
        except MessageError as exc:
            raise BlockInvalid(str(exc)) from None
        if h.last_block_id != self.last_block_id():
            raise BlockInvalid("last_block_id is not the id of the latest committed block")
        if h.height == 1:
            if h.time != self.genesis.genesis_time_ms:
                raise BlockInvalid("block 1's time must be the genesis time")
        else:
            assert block.last_commit is not None  # check_structure guarantees it
            parent_set = self.validators_at(h.height - 1)
            if h.last_commit_hash not in self._verified_certs:
                ok, why = verify_certificate(block.last_commit, self.genesis.chain_id,
                                             parent_set, h.height - 1, h.last_block_id)
                if not ok:
                    raise BlockInvalid(f"last_commit: {why}")
            median = weighted_median_time(block.last_commit, parent_set)
            if h.time != median:
                raise BlockInvalid(f"time {h.time} is not the parent certificate's median "
                                   f"time {median}")
            if h.time <= self.last_block_time():
                raise BlockInvalid("block time does not advance")
        if h.state_root != self.state_root:
            raise BlockInvalid(f"state_root {h.state_root.hex()} is not this node's "
                               f"{self.state_root.hex()}")
        vset = self.validators_at(h.height)
        if h.validators_hash != vset.hash():
            raise BlockInvalid("validators_hash does not match the validator set")
        if h.next_validators_hash != self.validators_at(h.height + 1).hash():
            raise BlockInvalid("next_validators_hash does not match the next height's "
                               "validator set")
        if not 0 <= h.proposer < len(vset):
            raise BlockInvalid(f"proposer index {h.proposer} is not a validator")
        limits = self.genesis.consensus
        if len(block.txs) > limits["max_block_txs"]:
            raise BlockInvalid(f"{len(block.txs)} transactions exceed max_block_txs")
        if sum(len(t) for t in block.txs) > limits["max_block_bytes"]:
            raise BlockInvalid("transactions exceed max_block_bytes")
        txs: list[Transaction] = []
        seen: set[bytes] = set()
        for i, data in enumerate(block.txs):
            tx_hash = sha256(data)
            if tx_hash in seen:
                raise BlockInvalid(f"transaction {i} appears twice")
            seen.add(tx_hash)
            # checked here, not left to decode: a transaction the mempool already holds is
            # not decoded again, and whether a block is valid must not depend on that
            if len(data) > MAX_TX_SIZE:
                raise BlockInvalid(f"transaction {i}: transaction of {len(data)} bytes "
                                   f"exceeds {MAX_TX_SIZE}")
            tx = self.known_tx(tx_hash)
            if tx is None:
                try:
                    tx = Transaction.decode(data)
                except TxError as exc:
                    raise BlockInvalid(f"transaction {i}: {exc.message}") from None
            if tx.chain_id != self.genesis.chain_id:
                raise BlockInvalid(f"transaction {i} is for chain {tx.chain_id!r}")
            if not self.sig_check(tx_hash, tx):
                raise BlockInvalid(f"transaction {i} has an invalid signature")
            if self.store.tx(tx_hash) is not None:
                raise BlockInvalid(f"transaction {i} ({tx_hash.hex()}) is already committed")
            txs.append(tx)
        ev_seen: set[bytes] = set()
        for i, ev in enumerate(block.evidence):
            if not 1 <= ev.height < h.height:
                raise BlockInvalid(f"evidence {i} is not for a past height")
            ok, why = ev.verify(self.genesis.chain_id, self.validators_at(ev.height))
            if not ok:
                raise BlockInvalid(f"evidence {i}: {why}")
            ev_hash = ev.hash()
            if ev_hash in ev_seen or self.store.evidence_height(ev_hash) is not None:
                raise BlockInvalid(f"evidence {i} is already on chain")
            ev_seen.add(ev_hash)
        return txs

    # ------------------------------------------------------------------ execution

    def apply(self, block: Block, certificate: CommitCertificate,
              txs: list[Transaction] | None = None) -> Applied:
        """Execute a validated, committed block and persist it atomically."""
        if txs is None:
            txs = self.validate(block)
        h = block.header
        seed = (sha256(block.last_commit.encode()) if block.last_commit is not None
                else self.genesis.hash)
        offences = [(ev.height, self.validators_at(ev.height)[ev.validator].pub_key, ev.hash())
                    for ev in block.evidence]
        try:
            begin = self.app.begin_block(h.height, h.time, seed, offences)
            receipts = [self.app.deliver_tx(tx) for tx in txs]
            end = self.app.end_block()
            batch = self.kv.batch()
            root = self.tree.commit(self.state_kv.within(batch))
            self.store.save_block(block, certificate, [receipt_bytes(r) for r in receipts],
                                  root, batch)
        except BaseException:
            # nothing reached disk: reopen the state at the stored root so memory matches
            self.tree = StateTree(self.state_kv, self.store.state_root_after(self.height),
                                  **self._tree_options)
            self.app = Application(self.genesis, self.tree)
            self._vset_heights = None
            raise
        self.height = h.height
        self._vset_heights = None
        # ``apply`` is only given certificates that were verified (built by consensus from
        # verified votes, or checked by block sync / the auditor) for exactly this block
        self._verified_certs[certificate.hash()] = None
        if len(self._verified_certs) > 16:
            del self._verified_certs[next(iter(self._verified_certs))]
        return Applied(h.height, block.block_id(), root, tuple(receipts),
                       tuple(sha256(t) for t in block.txs), tuple(begin), tuple(end))
