"""A deterministic in-memory network and a simulated clock for whole-cluster simulations.

Time is an integer count of simulated milliseconds. Everything that happens later (a
message delivery, a consensus timeout, the start of the next height, a fault) is an entry
in one priority queue ordered by ``(time, sequence number)``; the sequence number makes the
order of same-time entries the order in which they were scheduled, so a run is a pure
function of its seed. No wall clock, socket or thread is involved.

The network carries Python objects (signed ``Vote``/``Proposal`` values and the simulator's
own catch-up messages) between *endpoints*. Per message it draws, from the scenario's
seeded ``random.Random``, whether the message is dropped, how long it takes (which also
reorders messages) and whether it is duplicated; the current ``LinkConditions`` say how
likely each is. A partition assigns endpoints to groups: a message sent between two
groups is lost. Each endpoint has an *epoch* that a crash increments; a delivery scheduled
for an older epoch is discarded, so a crashed endpoint loses everything in flight to it.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Kinds of scheduled entries (small ints keep heap tuples cheap to compare and build).
DELIVER = 0
TIMER = 1
START_HEIGHT = 2
GOSSIP = 3
FAULT = 4


class Scheduler:
    """A priority queue of timed entries: ``(time_ms, seq, kind, endpoint, epoch, data)``."""

    __slots__ = ("now", "_queue", "_seq")

    def __init__(self) -> None:
        self.now = 0
        self._queue: list[tuple[int, int, int, int, int, Any]] = []
        self._seq = 0

    def at(self, time_ms: int, kind: int, endpoint: int, epoch: int, data: Any) -> None:
        """Schedule an entry at absolute ``time_ms`` (never before now)."""
        self._seq += 1
        heapq.heappush(self._queue,
                       (max(time_ms, self.now), self._seq, kind, endpoint, epoch, data))

    def pop(self) -> tuple[int, int, int, int, int, Any] | None:
        """Remove and return the earliest entry, advancing ``now``; None when empty."""
        if not self._queue:
            return None
        entry = heapq.heappop(self._queue)
        self.now = entry[0]
        return entry

    def peek_time(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)


@dataclass(frozen=True, slots=True)
class LinkConditions:
    """How messages behave right now. Probabilities are in [0, 1]; delays in ms.

    A message is dropped with ``drop``; otherwise it takes a delay uniform in
    ``[min_delay, max_delay]``, plus, with probability ``reorder``, an extra delay uniform
    in ``[0, reorder_delay]`` (so it overtakes nothing but is overtaken by later ones); with
    probability ``duplicate`` a second copy is sent with an independent delay.
    """

    min_delay: int = 1
    max_delay: int = 10
    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.min_delay <= self.max_delay:
            raise ValueError("need 0 <= min_delay <= max_delay")
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if self.reorder_delay < 0:
            raise ValueError("reorder_delay must be >= 0")


SYNCHRONOUS = LinkConditions()


class Network:
    """Endpoints, their partition groups and epochs, and message scheduling."""

    __slots__ = ("rng", "scheduler", "conditions", "group", "epoch", "up", "sent",
                 "dropped", "duplicated", "_simple")

    def __init__(self, rng: random.Random, scheduler: Scheduler, endpoints: int,
                 conditions: LinkConditions = SYNCHRONOUS) -> None:
        self.rng = rng
        self.scheduler = scheduler
        self.group = [0] * endpoints
        self.epoch = [0] * endpoints
        self.up = [True] * endpoints
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        self.set_conditions(conditions)

    def set_conditions(self, conditions: LinkConditions) -> None:
        self.conditions = conditions
        # the common case (no drops, dups, reorders) takes a shorter path in send()
        self._simple = (conditions.drop == 0.0 and conditions.duplicate == 0.0
                        and conditions.reorder == 0.0)

    # --- partitions -----------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split endpoints into groups; endpoints not named form one more group."""
        self.group = [-1] * len(self.group)
        for gid, members in enumerate(groups):
            for e in members:
                self.group[e] = gid
        rest = max(self.group) + 1
        self.group = [g if g >= 0 else rest for g in self.group]

    def heal(self) -> None:
        self.group = [0] * len(self.group)

    def connected(self, a: int, b: int) -> bool:
        return self.group[a] == self.group[b]

    # --- crashes ------------------------------------------------------------------------

    def crash(self, endpoint: int) -> None:
        """Take ``endpoint`` down: everything scheduled for it so far is discarded."""
        self.up[endpoint] = False
        self.epoch[endpoint] += 1

    def restart(self, endpoint: int) -> None:
        self.up[endpoint] = True
        self.epoch[endpoint] += 1

    # --- sending --------------------------------------------------------------------------

    def send(self, src: int, dst: int, message: Any) -> None:
        """Put ``message`` from ``src`` on the wire to ``dst`` under the current conditions."""
        self.sent += 1
        if not self.up[dst] or self.group[src] != self.group[dst]:
            self.dropped += 1
            return
        c = self.conditions
        rng = self.rng
        sched = self.scheduler
        if self._simple:
            delay = c.min_delay if c.min_delay == c.max_delay else rng.randint(
                c.min_delay, c.max_delay)
            sched.at(sched.now + delay, DELIVER, dst, self.epoch[dst], (src, message))
            return
        if c.drop and rng.random() < c.drop:
            self.dropped += 1
            return
        copies = 2 if c.duplicate and rng.random() < c.duplicate else 1
        if copies == 2:
            self.duplicated += 1
        for _ in range(copies):
            delay = rng.randint(c.min_delay, c.max_delay)
            if c.reorder and rng.random() < c.reorder:
                delay += rng.randint(0, c.reorder_delay)
            sched.at(sched.now + delay, DELIVER, dst, self.epoch[dst], (src, message))

    def broadcast(self, src: int, message: Any, endpoints: Iterable[int]) -> None:
        for dst in endpoints:
            if dst != src:
                self.send(src, dst, message)
