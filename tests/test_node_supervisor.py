"""Every task of the node runs under one supervisor: a task that fails (a service, a short
fire-and-forget task, a peer-to-peer task) stops the node with its reason; a cancelled
task never does; stopping cancels and awaits what is left.

The unit tests drive ``node.supervisor.Supervisor`` directly; the two node tests run one
validator in-process on loopback ports and break one task of each kind. Every wait is
bounded and the node is stopped.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from devnet.cluster import Cluster, free_base_port
from node.driver import ConsensusDriver
from node.node import Node, NodeError
from node.supervisor import Supervisor
from tests.test_node_storage_failure import _node


async def _boom(after_s: float = 0.0) -> None:
    await asyncio.sleep(after_s)
    raise ValueError("boom")


async def test_a_failing_task_is_the_failure_and_wakes_the_waiter() -> None:
    sup = Supervisor()
    sup.spawn(_boom(0.01), "short one")
    await asyncio.wait_for(sup.wait_failure(), 2)
    assert sup.failure == "task short one failed: boom"
    # the first failure is the reason: a later one does not overwrite it
    sup.spawn(_boom(), "second")
    await asyncio.sleep(0.02)
    assert sup.failure == "task short one failed: boom"


async def test_a_service_that_ends_by_itself_is_a_failure_a_short_task_is_not() -> None:
    sup = Supervisor()
    sup.spawn(asyncio.sleep(0), "short")
    await asyncio.sleep(0.02)
    assert sup.failure is None and sup.running == 0
    sup.spawn(asyncio.sleep(0.01), "consensus", service=True)
    await asyncio.wait_for(sup.wait_failure(), 2)
    assert sup.failure == "service consensus ended"


async def test_cancelled_tasks_are_no_failure_and_close_ends_the_rest() -> None:
    sup = Supervisor()
    forever = sup.spawn(asyncio.sleep(3600), "forever", service=True)
    other = asyncio.get_running_loop().create_task(asyncio.sleep(3600), name="watched")
    sup.watch(other)
    other.cancel()
    await asyncio.sleep(0.01)
    assert sup.failure is None and sup.running == 1
    started = time.monotonic()
    await sup.close(timeout_s=2)
    assert forever.cancelled() and time.monotonic() - started < 2
    assert sup.failure is None  # cancelling at close is not a failure of the service
    sup.report("p2p task x", ValueError("late"))  # after close: the node is stopping anyway
    assert sup.failure is None


async def _run_until_stopped(node: Node, breaker, what: str) -> str:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(node.run())
    try:
        deadline = time.monotonic() + 30
        while getattr(node, "executor", None) is None or node.height < 2:
            assert time.monotonic() < deadline and not task.done(), "the node did not start"
            await asyncio.sleep(0.05)
        breaker(node)
        done, _ = await asyncio.wait({task}, timeout=20)
        assert done, f"the node kept running after {what} failed"
        with pytest.raises(NodeError) as err:
            task.result()
        return str(err.value)
    finally:
        if not task.done():
            node.request_stop()
            done, _ = await asyncio.wait({task}, timeout=20)
            if not done:
                task.cancel()


async def test_a_failing_p2p_task_stops_the_node_with_its_reason(tmp_path: Path) -> None:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))

    def break_p2p(node: Node) -> None:
        # a task of the network (as a dialer or a connection would be) that hits a bug
        node.network._spawn(_boom())

    reason = await _run_until_stopped(_node(cluster), break_p2p, "a p2p task")
    assert reason.startswith("p2p task ") and reason.endswith("failed: boom"), reason


async def test_a_failing_gossip_task_stops_the_node_with_its_reason(tmp_path: Path) -> None:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))

    def break_gossip(node: Node) -> None:
        async def broken(*args: object) -> None:
            raise ValueError("boom")

        node._broadcast = broken  # type: ignore[method-assign]
        node.gossip("status", {"height": 1})

    reason = await _run_until_stopped(_node(cluster), break_gossip, "a gossip task")
    assert reason == "task gossip status failed: boom", reason


async def test_a_failing_driver_service_stops_the_node_with_its_reason(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(2))
    broken = asyncio.Event()

    async def rebroadcast_loop(self: ConsensusDriver) -> None:
        await broken.wait()
        raise ValueError("boom")

    # the driver's second long-lived task, beside the consensus loop itself
    monkeypatch.setattr(ConsensusDriver, "_rebroadcast_loop", rebroadcast_loop)
    reason = await _run_until_stopped(_node(cluster), lambda node: broken.set(),
                                      "the rebroadcast loop")
    assert reason == "service rebroadcast failed: boom", reason
