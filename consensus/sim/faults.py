"""Fault families: how a scenario's faults are drawn from its seed.

A ``Scenario`` is plain data: the cluster size, which validators are Byzantine and how,
the initial link conditions and a time-ordered list of fault operations, ending with the
moment everything heals (``heal_at``, the simulated GST). ``make_scenario`` draws one from
a family name and a seeded ``random.Random``; the same seed gives the same scenario.

Families (``FAMILIES``):

==============  ==============================================================================
none            a clean synchronous network, no faults (the baseline)
drop            messages lost with probability 5-50% until heal
delay           long random delays (up to 400 ms) and reordering (up to 2 s extra) until heal
duplicate       10-50% of messages delivered twice, with reordering, until heal
partition       a sequence of random partitions (split, isolate one, minority/majority)
crash           honest validators crash (losing in-flight messages and timers) and restart
                from their signer state, half of the time also from their saved round state
equivocate      F Byzantine proposers send two different valid blocks to two halves
double_vote     F Byzantine validators send conflicting prevotes/precommits to two halves
silent          F validators never send anything
twins           F validators run as two honest copies with the same key
invalid         F Byzantine proposers propose blocks that fail validation
amnesia         F validators crash and restart with a wiped signer and no round state
mixed           random Byzantine kinds for the F validators plus a random network fault
==============  ==============================================================================

F is ``byzantine`` if given, else f = (n - 1) // 3.

With ``changes`` every family also gets a schedule of validator-set changes (add, remove,
power change, key rotation, jailing; ``consensus.sim.changes``), drawn from its own PRNG
so the faults of a seed are the same with and without changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from consensus.sim.changes import SetChange, draw_changes
from consensus.sim.network import SYNCHRONOUS, LinkConditions

NETWORK_FAMILIES = ("drop", "delay", "duplicate", "partition", "crash")
BYZANTINE_KINDS = ("equivocate", "double_vote", "silent", "twins", "invalid", "amnesia")
FAMILIES = ("none", *NETWORK_FAMILIES, *BYZANTINE_KINDS, "mixed")

HONEST = "honest"


class ScenarioError(ValueError):
    """A scenario cannot be built from these parameters."""


@dataclass
class Scenario:
    """Everything a run needs besides the seed-driven network randomness."""

    seed: int
    family: str
    n: int
    heights: int
    roles: tuple[str, ...]  # per validator: "honest" or a BYZANTINE_KINDS entry
    conditions: LinkConditions = SYNCHRONOUS
    # (time_ms, op, args) with op in: conditions, partition, heal, crash, restart
    events: list[tuple[int, str, tuple[Any, ...]]] = field(default_factory=list)
    heal_at: int = 0
    # validator-set changes (empty: the genesis set for the whole run)
    changes: tuple[SetChange, ...] = ()

    @property
    def faulty(self) -> frozenset[int]:
        return frozenset(i for i, r in enumerate(self.roles) if r != HONEST)

    def describe(self) -> str:
        byz = {i: r for i, r in enumerate(self.roles) if r != HONEST}
        return (f"seed={self.seed} family={self.family} n={self.n} heights={self.heights} "
                f"byzantine={byz or '{}'} heal_at={self.heal_at}ms "
                f"fault_ops={len(self.events)}"
                + (f" changes=[{', '.join(c.describe() for c in self.changes)}]"
                   if self.changes else ""))


def faulty_members(sc: Scenario) -> frozenset[int]:
    """Validators that count against f: the Byzantine roles, and honest validators whose
    restart loses their WAL or signer state ("signer" and "wipe" restarts)."""
    lossy = {args[0] for _, op, args in sc.events
             if op == "restart" and args[1] in ("signer", "wipe")}
    return sc.faulty | frozenset(lossy)


def max_faulty(n: int) -> int:
    return (n - 1) // 3


def make_scenario(family: str, n: int, heights: int, rng: random.Random, seed: int,
                  byzantine: int | None = None, changes: bool = False) -> Scenario:
    """Draw a scenario of ``family`` for ``n`` validators from ``rng`` (and, with
    ``changes``, a validator-set change schedule from a PRNG of its own)."""
    sc = _make_faults(family, n, heights, rng, seed, byzantine)
    if changes:
        crng = random.Random(f"changes:{seed}:{family}:{n}:{byzantine}")
        sc.changes = draw_changes(n, heights, sc.roles, faulty_members(sc), crng)
    return sc


def _make_faults(family: str, n: int, heights: int, rng: random.Random, seed: int,
                 byzantine: int | None) -> Scenario:
    if family not in FAMILIES:
        raise ScenarioError(f"unknown fault family {family!r}; known: {', '.join(FAMILIES)}")
    if n < 1 or heights < 1:
        raise ScenarioError("need at least one validator and one height")
    f = max_faulty(n) if byzantine is None else byzantine
    if not 0 <= f <= n:
        raise ScenarioError(f"byzantine count {f} out of range for n={n}")
    roles = [HONEST] * n
    sc = Scenario(seed, family, n, heights, tuple(roles))
    if family == "none":
        return sc
    if family in NETWORK_FAMILIES:
        _network_fault(family, sc, rng, lossy_restarts=f)
        return sc
    bad = sorted(rng.sample(range(n), f)) if f else []
    for i in bad:
        roles[i] = family if family != "mixed" else rng.choice(BYZANTINE_KINDS)
    sc.roles = tuple(roles)
    # mild jitter so the two halves of an equivocation see different orders
    sc.conditions = LinkConditions(1, rng.choice((5, 20, 60)))
    if family == "mixed":
        _network_fault(rng.choice(NETWORK_FAMILIES), sc, rng)
    for i in bad:
        if roles[i] == "amnesia":
            _amnesia(sc, i, rng)
    return sc


def _network_fault(kind: str, sc: Scenario, rng: random.Random,
                   lossy_restarts: int = 0) -> None:
    heal = rng.randint(500, 4000)
    sc.heal_at = max(sc.heal_at, heal)
    if kind == "drop":
        sc.conditions = LinkConditions(1, rng.choice((5, 20, 50)),
                                       drop=rng.uniform(0.05, 0.5))
    elif kind == "delay":
        sc.conditions = LinkConditions(1, rng.randint(20, 400), reorder=rng.uniform(0.05, 0.5),
                                       reorder_delay=rng.randint(100, 2000))
    elif kind == "duplicate":
        sc.conditions = LinkConditions(1, rng.choice((10, 50)),
                                       duplicate=rng.uniform(0.1, 0.5), reorder=0.2,
                                       reorder_delay=300)
    elif kind == "partition":
        _partitions(sc, heal, rng)
    elif kind == "crash":
        _crashes(sc, heal, rng, lossy_restarts)
    sc.events.append((heal, "heal", ()))
    sc.events.sort(key=lambda e: e[0])


def _partitions(sc: Scenario, heal: int, rng: random.Random) -> None:
    t = rng.randint(0, 300)
    while t < heal:
        nodes = list(range(sc.n))
        rng.shuffle(nodes)
        shape = rng.choice(("split", "isolate", "three"))
        if shape == "isolate" or sc.n < 3:
            groups: list[list[int]] = [nodes[:1], nodes[1:]]
        elif shape == "split":
            cut = rng.randint(1, sc.n - 1)
            groups = [nodes[:cut], nodes[cut:]]
        else:
            a, b = sorted(rng.sample(range(1, sc.n), 2))
            groups = [nodes[:a], nodes[a:b], nodes[b:]]
        sc.events.append((t, "partition", (tuple(tuple(g) for g in groups),)))
        t += rng.randint(100, 1500)
        if rng.random() < 0.4 and t < heal:
            sc.events.append((t, "heal", ()))
            t += rng.randint(50, 500)


def _crashes(sc: Scenario, heal: int, rng: random.Random, lossy: int) -> None:
    """1-3 crashes of honest validators. A restart replays the WAL ("wal"; "wal+state"
    also resumes the saved RoundState) or, for at most ``lossy`` distinct validators, has
    only the signer state ("signer": a lost WAL makes the validator faulty for liveness,
    so it counts against f)."""
    honest = [i for i, r in enumerate(sc.roles) if r == HONEST]
    if not honest:
        return
    down_until = {i: 0 for i in honest}
    lossy_set: set[int] = set()
    for _ in range(rng.randint(1, 3)):
        i = rng.choice(honest)
        start = max(down_until[i] + 1, rng.randint(0, max(0, heal - 100)))
        if start >= heal:
            continue
        end = min(heal, start + rng.randint(50, 2000))
        mode = rng.choice(("wal", "wal+state", "signer"))
        if mode == "signer" and i not in lossy_set:
            if len(lossy_set) < lossy:
                lossy_set.add(i)
            else:
                mode = "wal"
        sc.events.append((start, "crash", (i,)))
        sc.events.append((end, "restart", (i, mode)))
        down_until[i] = end


def _amnesia(sc: Scenario, i: int, rng: random.Random) -> None:
    heal = rng.randint(300, 3000)
    sc.heal_at = max(sc.heal_at, heal)
    start = rng.randint(0, heal - 50)
    end = min(heal, start + rng.randint(10, 1000))
    sc.events.append((start, "crash", (i,)))
    sc.events.append((end, "restart", (i, "wipe")))
    sc.events.sort(key=lambda e: e[0])
