"""Two real nodes (in-process) with the same chain id but different genesis files.

The misconfigured pair must never connect: each node's p2p refuses the other in the
handshake with ``genesis_mismatch`` (naming both genesis hashes), instead of syncing, seeing
"block 1's time must be the genesis time" and banning the peer as a misbehaving one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest

from chain.crypto import PrivateKey
from chain.genesis import Genesis
from chain.keyfile import read_key
from devnet.cluster import Cluster, free_base_port
from node import config as cfg
from node.node import Node
from p2p import HandshakeError, Network
from tests.test_p2p_network import until as network_until

WAIT = 15.0  # bound on every wait; the refusals take milliseconds


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    await network_until(cond, what, timeout)


def _node(cluster: Cluster, index: int, genesis_file: str | None = None,
          extra_allowed: list[str] = ()) -> Node:
    config = cfg.load(cluster.nodes[index].home)
    if genesis_file is not None:
        config.node.genesis_file = genesis_file
    config.p2p.allowed_keys = list(extra_allowed)
    genesis = Genesis.load(config.path(config.node.genesis_file))
    return Node(config, genesis, read_key(config.path(config.node.node_key_file)),
                read_key(config.path(config.node.validator_key_file)))


def test_nodes_on_different_genesis_refuse_each_other_in_the_handshake(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cluster = Cluster.create(tmp_path / "net", validators=2, base_port=free_base_port(4))
    # node1 gets a genesis file that differs only in genesis_time: same chain id, same
    # validators and node keys, so everything but the genesis hash matches
    doc = json.loads(cluster.genesis_path.read_text())
    t = datetime.fromisoformat(doc["genesis_time"]) + timedelta(seconds=1)
    doc["genesis_time"] = t.isoformat()
    other = tmp_path / "other-genesis.json"
    other.write_text(json.dumps(doc))
    g0, g1 = cluster.genesis, Genesis.load(other)
    assert g0.chain_id == g1.chain_id and g0.hash != g1.hash
    probe = PrivateKey(b"\x42" * 32)

    async def scenario() -> None:
        n0 = _node(cluster, 0, extra_allowed=[probe.public_key.hex()])
        n1 = _node(cluster, 1, genesis_file=str(other))
        started: list[Node] = []
        probe_net: Network | None = None
        try:
            for n in (n0, n1):
                await asyncio.wait_for(n.start(), WAIT)
                started.append(n)
            await until(lambda: all(n.network.metrics.handshake_failures["genesis_mismatch"]
                                    >= 2 for n in started), "both nodes refuse repeatedly")
            for n in started:
                assert n.network.peers() == []
                assert n.network.metrics.connects == 0 and n.network.metrics.bans == 0
                assert not n.network.metrics.invalid
            # the node announces its genesis hash: a peer on the same genesis gets in,
            # one on the other genesis is told why it does not
            host, port = n0.network.listen_address
            probe_net = Network(g0.chain_id, probe, genesis_hash=g1.hash, listen=None,
                                allowed=n0.network.allowed)
            await probe_net.start()
            with pytest.raises(HandshakeError) as info:
                await asyncio.wait_for(probe_net.connect(host, port), WAIT)
            assert info.value.reason == "genesis_mismatch"
            assert info.value.message.startswith(
                f"peer runs genesis {g0.hash[:4].hex()}..., ours {g1.hash[:4].hex()}...")
            await probe_net.stop()
            probe_net = Network(g0.chain_id, probe, genesis_hash=g0.hash, listen=None,
                                allowed=n0.network.allowed)
            await probe_net.start()
            assert await asyncio.wait_for(probe_net.connect(host, port), WAIT) \
                == n0.node_key.public_key.raw
        finally:
            if probe_net is not None:
                await asyncio.wait_for(probe_net.stop(), WAIT)
            for n in reversed(started):
                await asyncio.wait_for(n.shutdown(), WAIT)

    asyncio.run(scenario())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "genesis_mismatch: peer runs genesis" in text
    assert "misbehav" not in text and "banning" not in text
    assert "must be the genesis time" not in text
