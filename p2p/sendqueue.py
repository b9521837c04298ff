"""A per-peer send queue bounded in messages and bytes, drained in priority order.

Memory never grows without bound: when the queue is full, a droppable (gossip) message is
dropped; a non-droppable one first evicts queued gossip, oldest first, and if it still
does not fit the caller must disconnect the peer, which is too slow to keep up.
"""

from __future__ import annotations

from collections import deque
from enum import Enum

from p2p.messages import Priority


class Push(Enum):
    QUEUED = "queued"
    DROPPED = "dropped"  # a droppable message did not fit and was discarded
    OVERFLOW = "overflow"  # a non-droppable message did not fit: the peer is too slow


class SendQueue:
    def __init__(self, max_messages: int = 4096, max_bytes: int = 32 * 1024 * 1024) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("queue bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._queues: list[deque[bytes]] = [deque() for _ in Priority]
        self._count = 0
        self.bytes = 0
        self.evicted = 0  # gossip evicted to make room for higher priority messages

    def __len__(self) -> int:
        return self._count

    def _fits(self, size: int) -> bool:
        return self._count < self.max_messages and self.bytes + size <= self.max_bytes

    def push(self, priority: Priority, item: bytes) -> Push:
        size = len(item)
        if not self._fits(size):
            if priority is Priority.GOSSIP:
                return Push.DROPPED
            gossip = self._queues[Priority.GOSSIP]
            while gossip and not self._fits(size):
                old = gossip.popleft()
                self._count -= 1
                self.bytes -= len(old)
                self.evicted += 1
            if not self._fits(size):
                return Push.OVERFLOW
        self._queues[priority].append(item)
        self._count += 1
        self.bytes += size
        return Push.QUEUED

    def pop(self) -> bytes | None:
        """The oldest message of the most urgent non-empty priority, or None."""
        if not self._count:
            return None
        for q in self._queues:
            if q:
                item = q.popleft()
                self._count -= 1
                self.bytes -= len(item)
                return item
        return None  # pragma: no cover - count and queues agree

    def clear(self) -> None:
        for q in self._queues:
            q.clear()
        self._count = 0
        self.bytes = 0
