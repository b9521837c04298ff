"""One supervised group for every task of the node process.

Long-lived services (the consensus driver and its rebroadcast loop, block sync, the
peer-to-peer listener, dialers and connections) and the short tasks the node fires and
forgets (a gossip send, an ``async``-mode admission) all run under one ``Supervisor``. A
task that raises, or a service that ends while the node is not stopping, is a failure:
the first one is recorded as the node's stop reason and wakes ``Node.run``, which then
stops every service in order. A cancelled task is never a failure (that is how stopping
works). Holding every task here also keeps the short ones referenced until they finish
(asyncio keeps only a weak reference to a running task).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("node")


class Supervisor:
    """Tasks spawned or watched here stop the node (``failure``) when they fail."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._services: set[asyncio.Task] = set()
        self._failed = asyncio.Event()
        self._closing = False
        self.failure: str | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *,
              service: bool = False) -> asyncio.Task:
        """Run ``coro`` as a task of the group; a ``service`` must not end by itself."""
        return self.watch(asyncio.get_running_loop().create_task(coro, name=name),
                          service=service)

    def watch(self, task: asyncio.Task, *, service: bool = False) -> asyncio.Task:
        """Supervise a task another component created (it keeps cancelling it itself)."""
        self._tasks.add(task)
        if service:
            self._services.add(task)
        task.add_done_callback(self._done)
        return task

    def report(self, what: str, exc: BaseException | None) -> None:
        """A failure seen outside a task of the group (e.g. a peer-to-peer task): the
        first one becomes the stop reason."""
        if self._closing or self.failure is not None:
            return
        self.failure = f"{what} failed: {exc}" if exc is not None else f"{what} ended"
        log.error("stopping: %s", self.failure)
        self._failed.set()

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        service = task in self._services
        self._services.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.report(f"service {task.get_name()}" if service else f"task {task.get_name()}",
                        exc)
        elif service:
            self.report(f"service {task.get_name()}", None)

    async def wait_failure(self) -> None:
        await self._failed.wait()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def stopping(self) -> None:
        """The node has begun to stop: what ends or fails from now on is part of stopping
        (a service cancelled, a connection cut), not a reason."""
        self._closing = True

    async def close(self, timeout_s: float = 5.0) -> None:
        """The node is stopping (its services were stopped in order first): cancel what is
        left of the group and wait for it, at most ``timeout_s``."""
        self._closing = True
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(tasks, timeout=timeout_s)
