"""Fan-out of node events (new blocks, transaction results) to API subscribers.

Each subscriber gets a bounded queue; a subscriber that falls behind is dropped (it gets
``None`` and its stream ends) rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

QUEUE_SIZE = 1000


class EventHub:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._subs: set[asyncio.Queue[dict[str, Any] | None]] = set()
        self._queue_size = queue_size

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self._queue_size + 1)
        self._subs.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subs.discard(q)

    def publish(self, item: dict[str, Any]) -> None:
        for q in list(self._subs):
            if q.qsize() >= self._queue_size:
                self._subs.discard(q)
                q.put_nowait(None)
            else:
                q.put_nowait(item)

    def close(self) -> None:
        for q in list(self._subs):
            q.put_nowait(None)
        self._subs.clear()

    def __len__(self) -> int:
        return len(self._subs)
