"""A block that +2/3 of the voting power committed but this node finds invalid means the
node's own state has diverged: the driver stops the node with that reason instead of
stalling at the height (a decided block) or blaming the peer that sent it (a synced block
with a verified certificate). Uses test_driver_timing's harness: stubs, no sockets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from chain.vote import Vote, VoteType
from node.driver import FatalError, _Item
from node.executor import BlockInvalid
from node.store.blockstore import StateRootMismatch
from tests.test_driver_timing import CHAIN, KEYS, Harness


def _invalid_here(block: object) -> list:
    raise BlockInvalid("state_root 0606... is not this node's state root")


async def test_a_decided_block_invalid_here_stops_the_node(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.node.executor.validate = _invalid_here
        h.driver._begin_height(1)
        block_id = h.block(1)
        del h.driver.block_txs[block_id]  # not validated before it was decided
        h.propose(1, block_id)
        with pytest.raises(FatalError, match=r"block 1, decided by \+2/3 .*diverged"):
            for v in range(5):
                h.precommit(v, 1, block_id)
        assert h.node.executor.height == 0  # nothing was applied
    finally:
        h.close()


async def test_a_certified_synced_block_invalid_here_stops_the_node(tmp_path) -> None:
    h = Harness(tmp_path)
    blamed: list = []
    try:
        h.node.executor.validate = _invalid_here
        h.node.report_peer = lambda peer, reason: blamed.append(peer)
        h.driver._begin_height(1)
        block = SimpleNamespace(height=1)
        with pytest.raises(FatalError, match=r"block 1, certified by \+2/3 .*diverged"):
            h.driver._dispatch(_Item("synced", (block, object()), b"peer"))
        assert blamed == []  # the peer sent the chain's block: not its fault
        assert h.node.executor.height == 0
    finally:
        h.close()


async def test_a_block_the_store_refuses_stops_the_node(tmp_path) -> None:
    # through the driver's own loop, which turns the store's error into a stop
    h = Harness(tmp_path)

    def refuse(block: object, cert: object, txs: object) -> None:
        raise StateRootMismatch("block 1 carries state root 06..., this node computed 07...")

    try:
        h.node.executor.apply = refuse
        h.driver._begin_height(1)
        block_id = h.block(1)
        h.propose(1, block_id)
        for v in range(5):
            vote = Vote(VoteType.PRECOMMIT, 1, 0, block_id, 1_001, v).signed(KEYS[v], CHAIN)
            assert h.driver.submit("vote", vote, b"peer")
        with pytest.raises(FatalError, match="the block store failed: block 1 carries"):
            await asyncio.wait_for(h.driver._run(), 5)
    finally:
        h.close()
