"""A database or a consensus WAL that stops taking writes (a full disk) stops the node
with its reason, and a restart once the cause is gone continues the chain from what was
saved: nothing the node reported committed is lost, no height is skipped.

One validator in-process on loopback ports; the failures are LevelDB's own error for a
full disk, raised from the synced block write, and ENOSPC from the WAL's write. Every wait
is bounded; the nodes are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from types import SimpleNamespace

import plyvel
import pytest

from chain.genesis import Genesis
from chain.keyfile import read_key
from devnet.cluster import Cluster, free_base_port
from node import config as cfg
from node.node import Node, NodeError
from node.store import kvstore
from node.store import wal as walmod


def _node(cluster: Cluster) -> Node:
    home = cluster.nodes[0].home
    return Node(cfg.load(home), Genesis.load(cluster.genesis_path),
                read_key(home / "node_key.json"), read_key(home / "validator_key.json"))


def _height(node: Node) -> int:
    return node.height if getattr(node, "executor", None) is not None else -1


async def _wait(cond, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _stop(node: Node, task: asyncio.Task) -> None:
    node.request_stop()
    done, _ = await asyncio.wait({task}, timeout=30)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=10)


async def _fails_then_recovers(cluster: Cluster, full: dict, reason: str) -> None:
    """Run the node to height 3, turn the failure on, expect the node to stop with
    ``reason`` (and the disk's message) without running on; then turn it off, restart on
    the same home and expect the chain to continue, every height stored, none skipped."""
    node = _node(cluster)
    task = asyncio.create_task(node.run())
    try:
        await _wait(lambda: _height(node) >= 3, "height 3")
        full["on"] = True
        saved = node.height
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, f"the node kept running where it should have stopped ({reason})"
        with pytest.raises(NodeError) as err:
            task.result()
        assert reason in str(err.value)
        assert "No space left on device" in str(err.value)
        assert full["failed"] >= 1
        assert node.height <= saved + 1  # it did not run on past the failed block
    finally:
        if not task.done():
            await _stop(node, task)
    full["on"] = False

    again = _node(cluster)
    task = asyncio.create_task(again.run())
    try:
        target = saved + 3
        await _wait(lambda: _height(again) >= target, f"height {target} after the restart")
        store = again.store
        for h in range(1, target + 1):
            block = store.block(h)
            assert block is not None and block.height == h, h
            assert store.certificate(h) is not None, h
    finally:
        with contextlib.suppress(NodeError):
            await _stop(again, task)
            if task.done() and not task.cancelled():
                task.result()


async def test_a_full_disk_stops_the_node_and_a_restart_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    real_write = kvstore._LevelStore.raw_write
    full = {"on": False, "failed": 0}

    class FullBatch:  # what LevelDB answers once the disk is full
        def __init__(self, path: str) -> None:
            self.path = path

        def put(self, key: bytes, value: bytes) -> None:
            pass

        def delete(self, key: bytes) -> None:
            pass

        def write(self) -> None:
            full["failed"] += 1
            raise plyvel.IOError(b"IO error: " + self.path.encode() +
                                 b"/000042.ldb: No space left on device")

    def raw_write(self, ops, sync):  # type: ignore[no-untyped-def]
        if full["on"] and sync:  # the real code path, over a batch that fails to write
            disk = SimpleNamespace(write_batch=lambda sync: FullBatch(self.path))
            return real_write(SimpleNamespace(db=disk, path=self.path), ops, sync)
        return real_write(self, ops, sync)

    monkeypatch.setattr(kvstore._LevelStore, "raw_write", raw_write)
    await _fails_then_recovers(cluster, full, "the database failed")


async def test_a_wal_that_cannot_be_written_stops_the_node_and_a_restart_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    real_write_all = walmod.write_all
    full = {"on": False, "failed": 0}

    def write_all(fd: int, data: bytes) -> None:
        if full["on"]:
            full["failed"] += 1
            raise OSError(28, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(walmod, "write_all", write_all)
    await _fails_then_recovers(cluster, full, "the consensus WAL failed")
