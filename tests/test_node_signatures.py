"""The node's wiring of transaction signatures: verified once per node, in the mempool.

``node/node.py`` gives the executor a signature check that goes through the mempool's
verdict cache, so a transaction the mempool already verified is not verified again when a
block carrying it is validated, and one first seen in a block is verified once and its
verdict remembered. These tests count the real verifications on a real node's parts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chain.block import Block
from chain.crypto import Domain, PublicKey
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.keyfile import read_key
from chain.tx import Transaction
from devnet.cluster import Cluster, free_base_port
from node import config as cfg
from node.executor import BlockInvalid
from node.node import Node


def register(cluster: Cluster, nonce: int) -> Transaction:
    seed = sha256(b"node-signatures" + nonce.to_bytes(4, "big"))
    return Transaction.create(cluster.role_key("registrar"), cluster.genesis.chain_id,
                              "register_member", nonce, {
                                  "member": sha256(b"pk" + seed), "identity_tags": [[1, seed]],
                                  "birth_date": "1990-01-01", "health_commitment": seed,
                                  "credit_attestation": seed, "credit_passed": True})


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[tuple[Node, Cluster]]:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    home = cluster.nodes[0].home
    n = Node(cfg.load(home), Genesis.load(cluster.genesis_path),
             read_key(home / "node_key.json"), read_key(home / "validator_key.json"))
    n.open_storage()
    try:
        yield n, cluster
    finally:
        n._pool.shutdown(wait=True)
        n.wal.close()
        n.kv.close()


@pytest.fixture()
def verifications(monkeypatch) -> list[bytes]:
    """Every real transaction-signature verification in the process, by signature (the
    public-key primitive itself, under whatever path calls it)."""
    seen: list[bytes] = []
    real = PublicKey.verify

    def counting(self: PublicKey, domain: Domain, chain_id: str, payload: bytes,
                 sig: bytes) -> bool:
        if domain == Domain.TX:
            seen.append(sig)
        return real(self, domain, chain_id, payload, sig)

    monkeypatch.setattr(PublicKey, "verify", counting)
    return seen


def block_of(n: Node, txs: list[Transaction]) -> Block:
    raw = [tx.encode() for tx in txs]
    return Block(n.executor.header_for(raw, [], None, 0), tuple(raw), (), None)


def test_a_block_reuses_the_mempools_verdicts(node, verifications) -> None:
    n, cluster = node
    pooled, fresh = register(cluster, 1), register(cluster, 2)
    assert n.mempool.check_signature(pooled)
    assert verifications == [pooled.sig]
    verifications.clear()
    # the pooled one is not verified again; the one first seen in the block is, once,
    # and through the mempool, which now remembers it
    assert [tx.hash for tx in n.executor.validate(block_of(n, [pooled, fresh]))] == \
        [pooled.hash, fresh.hash]
    assert verifications == [fresh.sig]
    assert n.mempool.verified(fresh.hash)
    n.executor.validate(block_of(n, [pooled, fresh]))
    assert verifications == [fresh.sig]


def test_a_bad_signature_in_a_block_is_refused_and_remembered(node, verifications) -> None:
    n, cluster = node
    good = register(cluster, 1)
    forged = Transaction.decode(good.encode()[:-1] + bytes([good.encode()[-1] ^ 1]))
    with pytest.raises(BlockInvalid, match="invalid signature"):
        n.executor.validate(block_of(n, [forged]))
    assert verifications == [forged.sig]
    with pytest.raises(BlockInvalid, match="invalid signature"):
        n.executor.validate(block_of(n, [forged]))
    assert verifications == [forged.sig]  # the verdict came from the mempool's cache
