"""A bounded LRU set of message hashes, so gossip is handled and relayed once per node.

Hand-written on purpose, not ``cachetools.LRUCache``: this check-and-insert runs for every
gossip frame from every peer, and at the real size (100 000 hashes of 32 bytes) cachetools
8.0 measured about 2.9 times slower per operation (insert and evict 1274 ns against 432 ns,
a hit 321 ns against 110 ns, one new message arriving from four peers 510 ns against 178 ns).
"""

from __future__ import annotations

from collections import OrderedDict


class SeenCache:
    """At most ``capacity`` hashes; the least recently seen is forgotten first."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("seen-cache capacity must be positive")
        self.capacity = capacity
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def add(self, digest: bytes) -> bool:
        """Record ``digest``; True if it was new, False if already seen (and refresh it)."""
        if digest in self._items:
            self._items.move_to_end(digest)
            return False
        self._items[digest] = None
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True

    def discard(self, digest: bytes) -> None:
        self._items.pop(digest, None)

    def __contains__(self, digest: object) -> bool:
        return digest in self._items

    def __len__(self) -> int:
        return len(self._items)
