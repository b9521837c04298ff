"""The block executor: what a valid next block is, atomic apply, evidence on chain once."""

from __future__ import annotations

import pytest

from chain.block import Block
from chain.certificate import CommitCertificate
from chain.crypto import PrivateKey
from chain.evidence import DuplicateVoteEvidence
from chain.genesis import GENESIS_FORMAT, Genesis
from chain.hashing import sha256
from chain.tx import Transaction
from chain.vote import Vote, VoteType
from contracts.kv import MemoryKV
from contracts.params import profile
from node.executor import BlockInvalid, Executor
from node.store.blockstore import BlockStore

CHAIN = "mutual-exec"
VALS = [PrivateKey(bytes([10 + i]) * 32) for i in range(4)]
REGISTRAR = PrivateKey(b"\x21" * 32)
GENESIS = Genesis.from_doc({
    "format": GENESIS_FORMAT, "chain_id": CHAIN, "genesis_time": "2026-01-01T00:00:00+00:00",
    "validators": [{"name": f"v{i}", "pub_key": k.public_key.hex(), "power": 10}
                   for i, k in enumerate(VALS)],
    "registrars": [REGISTRAR.public_key.hex()], "assessors": [REGISTRAR.public_key.hex()],
    "operator": REGISTRAR.public_key.hex(), "params": profile("devnet"),
})


def cert_for(block: Block, signers=(0, 1, 2), ts: int | None = None) -> CommitCertificate:
    t = block.header.time + 1000 if ts is None else ts
    votes = [Vote(VoteType.PRECOMMIT, block.height, 0, block.block_id(), t + i, i)
             .signed(VALS[i], CHAIN) for i in signers]
    return CommitCertificate.from_votes(votes)


def register(nonce: int, i: int) -> bytes:
    seed = sha256(b"exec" + bytes([i]))
    return Transaction.create(REGISTRAR, CHAIN, "register_member", nonce, {
        "member": sha256(b"pk" + seed), "identity_tags": [[1, seed]],
        "birth_date": "1990-01-01", "health_commitment": seed, "credit_attestation": seed,
        "credit_passed": True}).encode()


def fresh() -> Executor:
    kv = MemoryKV()
    return Executor(GENESIS, kv, BlockStore(kv))


def build(ex: Executor, txs=(), evidence=(), last_commit=None) -> Block:
    header = ex.header_for(list(txs), list(evidence), last_commit, 0)
    return Block(header, tuple(txs), tuple(evidence), last_commit)


def test_chain_of_blocks_applies_and_reopens():
    ex = fresh()
    b1 = build(ex, [register(1, 1), register(2, 2)])
    c1 = cert_for(b1)
    applied = ex.apply(b1, c1)
    assert [r.code for r in applied.receipts] == ["ok", "ok"]
    b2 = build(ex, [register(3, 3)], last_commit=c1)
    assert b2.header.state_root == applied.state_root
    ex.apply(b2, cert_for(b2))
    reopened = Executor(GENESIS, ex.kv, BlockStore(ex.kv))
    assert reopened.height == 2 and reopened.state_root == ex.state_root


@pytest.mark.parametrize("mutate, why", [
    (lambda h: h.update(height=3), "height"),
    (lambda h: h.update(chain_id="other"), "chain id"),
    (lambda h: h.update(time=h["time"] + 1), "median time"),
    (lambda h: h.update(state_root=b"\x00" * 32), "state_root"),
    (lambda h: h.update(validators_hash=b"\x00" * 32), "validators_hash"),
    (lambda h: h.update(proposer=9), "proposer"),
    (lambda h: h.update(last_block_id=b"\x01" * 32), "last_commit"),
])
def test_header_rules(mutate, why):
    from chain.block import BlockHeader

    ex = fresh()
    b1 = build(ex)
    c1 = cert_for(b1)
    ex.apply(b1, c1)
    good = build(ex, last_commit=c1)
    fields = good.header.to_map()
    mutate(fields)
    bad = Block(BlockHeader.from_map(fields), good.txs, good.evidence, good.last_commit)
    with pytest.raises(BlockInvalid, match=why):
        ex.validate(bad)
    ex.validate(good)


def test_last_commit_needs_two_thirds():
    ex = fresh()
    b1 = build(ex)
    ex.apply(b1, cert_for(b1))
    short = cert_for(b1, signers=(0, 1))
    with pytest.raises(BlockInvalid, match="2/3"):
        ex.validate(build(ex, last_commit=short))


def test_transaction_rules():
    ex = fresh()
    tx = register(1, 1)
    with pytest.raises(BlockInvalid, match="twice"):
        ex.validate(build(ex, [tx, tx]))
    forged = bytearray(tx)
    forged[-5] ^= 1  # inside the signature
    with pytest.raises(BlockInvalid, match="signature"):
        ex.validate(build(ex, [bytes(forged)]))
    with pytest.raises(BlockInvalid, match="transaction 0"):
        ex.validate(build(ex, [b"\x91\x01"]))
    other_chain = Transaction.create(REGISTRAR, "elsewhere", "leave", 1, {}).encode()
    with pytest.raises(BlockInvalid, match="chain"):
        ex.validate(build(ex, [other_chain]))
    b1 = build(ex, [tx])
    c1 = cert_for(b1)
    ex.apply(b1, c1)
    with pytest.raises(BlockInvalid, match="already committed"):
        ex.validate(build(ex, [tx], last_commit=c1))


def test_oversized_transaction_is_refused_even_when_the_mempool_knows_it():
    from chain.tx import MAX_TX_SIZE

    ex = fresh()
    tx = register(1, 1)
    big = tx + b"\x00" * (MAX_TX_SIZE + 1 - len(tx))
    # the mempool hands validate its decoded copy of a transaction instead of the bytes
    ex.known_tx = lambda tx_hash: Transaction.decode(tx) if tx_hash == sha256(big) else None
    with pytest.raises(BlockInvalid, match=f"transaction 0: .*exceeds {MAX_TX_SIZE}"):
        ex.validate(build(ex, [big]))


def test_mempool_cannot_hold_transactions_no_block_may_carry():
    from chain.tx import MAX_TX_SIZE
    from node.mempool import MempoolConfig

    with pytest.raises(ValueError, match="max_tx_bytes"):
        MempoolConfig(max_tx_bytes=MAX_TX_SIZE + 1)
    MempoolConfig(max_tx_bytes=MAX_TX_SIZE)


def test_evidence_goes_on_chain_once():
    ex = fresh()
    a = Vote(VoteType.PREVOTE, 1, 0, sha256(b"a"), 5, 3).signed(VALS[3], CHAIN)
    b = Vote(VoteType.PREVOTE, 1, 0, None, 6, 3).signed(VALS[3], CHAIN)
    ev = DuplicateVoteEvidence.create(a, b)
    b1 = build(ex)
    c1 = cert_for(b1)
    ex.apply(b1, c1)
    b2 = build(ex, evidence=[ev], last_commit=c1)
    c2 = cert_for(b2)
    ex.apply(b2, c2)
    assert ex.store.evidence_height(ev.hash()) == 2
    with pytest.raises(BlockInvalid, match="already on chain"):
        ex.validate(build(ex, evidence=[ev], last_commit=c2))
    forged = DuplicateVoteEvidence(ev.vote_a, Vote(VoteType.PREVOTE, 1, 0, None, 7, 3, b"\x00" * 64))
    with pytest.raises(BlockInvalid, match="evidence 0"):
        ex.validate(build(ex, evidence=[forged], last_commit=c2))


def test_failed_write_leaves_state_and_store_unchanged():
    ex = fresh()
    b1 = build(ex, [register(1, 1)])
    root_before = ex.state_root

    def boom(*a, **k):
        raise OSError("disk full")

    ex.store.save_block = boom
    with pytest.raises(OSError):
        ex.apply(b1, cert_for(b1))
    assert ex.height == 0 and ex.state_root == root_before
    assert ex.app.next_nonce(REGISTRAR.public_key.raw) == 1
    del ex.store.save_block
    ex.apply(b1, cert_for(b1))
    assert ex.height == 1


def test_a_pruning_executor_keeps_the_last_roots_across_failures_and_reopens():
    """keep_roots=2 (a node's state_history): the previous root, which proofs are served
    against, stays readable; older ones are gone with every record only they needed, also
    after a failed write (the tree is reopened from the store) and a restart."""
    from contracts import tree as tree_mod
    from contracts.tree import StateError
    from tests.test_state_prune import reachable

    kv = MemoryKV()
    ex = Executor(GENESIS, kv, BlockStore(kv), keep_roots=2)
    roots = [ex.state_root]
    last = None
    for h in range(1, 7):
        block = build(ex, [register(h, h)], last_commit=last)
        cert = cert_for(block)
        if h == 3:  # a write that fails: nothing reaches the store, the retry works
            def boom(*a, **k):
                raise OSError("disk full")
            ex.store.save_block = boom
            with pytest.raises(OSError):
                ex.apply(block, cert)
            del ex.store.save_block
        if h == 5:  # a restart
            ex = Executor(GENESIS, kv, BlockStore(kv), keep_roots=2)
        ex.apply(block, cert)
        last = cert
        roots.append(ex.state_root)
        state = ex.state_kv
        need = reachable(state, roots[-1]) | reachable(state, roots[-2])
        assert {k for k, _ in state.iterate(tree_mod.NODE_PREFIX)} == need
        app, tree = ex.view_at(block.header.state_root)  # the parent's state
        assert app.next_nonce(REGISTRAR.public_key.raw) == h
        if h >= 2:
            with pytest.raises(StateError, match="unknown state root"):
                ex.view_at(roots[-3])
