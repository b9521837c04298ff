"""Validator-set changes in the simulator: a schedule drawn per scenario, and the sets,
keys and members it gives at every height.

The simulator's blocks are opaque ids, so a scenario fixes its changes in advance as
"decided in block H" (every honest node commits the same block H, so every node derives
the same sets); each takes effect at **H+2**, as governance changes do
(docs/governance.md). A schedule follows the real rules:

* every change but a jailing moves less than a third of the power
  (``chain.validators.transition_error`` between the sets of H+1 and H+2);
* no set is ever empty, and no consensus key is ever used twice (a rotated or added key
  is fresh);
* at most one change is decided per block.

And, for the run to be a fair test, the faulty validators of the scenario (Byzantine roles
and validators whose restarts lose their WAL) keep less than a third of every set's power
(or no more than they had in genesis, when the scenario gives them more on purpose).

*Members* are the simulated operators: members ``0..n-1`` are the genesis validators,
members ``n, n+1, ...`` are added later (they run from the start as observers and become
validators at their effective height). A member keeps its identity across key rotations;
its validator *index* is its position in the set of a height and moves when a validator
before it leaves.

Kinds: ``add`` (a new member with ``power``), ``remove``, ``power`` (new ``power``),
``rotate`` (a fresh consensus key: the member signs with it from the effective height,
and its old key signs nothing from then), ``jail`` (a Byzantine double-voter removed, not
held to the one-third bound).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet, transition_error

KINDS = ("add", "remove", "power", "rotate", "jail")
# Byzantine roles a jailing may remove (they sign conflicting messages)
JAILABLE = frozenset({"double_vote", "equivocate"})
MAX_POWER = 3
DELAY = 2  # a change decided in block H applies at H + DELAY

_KEYS: dict[tuple[int, int], PrivateKey] = {}


class ChangeError(ValueError):
    """A change schedule breaks the rules above."""


def member_key(member: int, generation: int = 0) -> PrivateKey:
    """Member ``member``'s consensus key after ``generation`` rotations (generation 0 is
    the simulator's fixed key of validator ``member``)."""
    key = _KEYS.get((member, generation))
    if key is None:
        seed = b"sim-validator-key" + member.to_bytes(4, "big")
        if generation:
            seed += b"/rotated/" + generation.to_bytes(4, "big")
        key = _KEYS[(member, generation)] = PrivateKey(sha256(seed))
    return key


@dataclass(frozen=True)
class SetChange:
    """One change, decided in block ``decided`` and effective at ``decided + 2``."""

    decided: int
    kind: str
    member: int
    power: int = 0

    @property
    def effective(self) -> int:
        return self.decided + DELAY

    def describe(self) -> str:
        extra = f" power={self.power}" if self.kind in ("add", "power") else ""
        return f"{self.kind} m{self.member}{extra} @h{self.decided}->h{self.effective}"


class SetSchedule:
    """The validator set, member keys and indices at every height of one scenario."""

    def __init__(self, n: int, changes: tuple[SetChange, ...] = (),
                 faulty: frozenset[int] = frozenset()) -> None:
        """Check ``changes`` against the rules (``ChangeError`` if one breaks them) and
        precompute the set of every height a change starts. ``faulty``: the members the
        scenario makes faulty, whose power share must stay bounded."""
        self.n = n
        self.changes = tuple(sorted(changes, key=lambda c: c.decided))
        members: list[tuple[int, int]] = [(m, 1) for m in range(n)]  # (member, power)
        generation: dict[int, int] = {m: 0 for m in range(n)}
        used = {member_key(m).public_key.raw for m in range(n)}
        self._members: list[tuple[int, list[int]]] = []  # (from height, members in order)
        self._sets: list[tuple[int, ValidatorSet]] = []
        self._gen_from: dict[int, list[tuple[int, int]]] = {m: [(1, 0)] for m in range(n)}
        self.rotations: list[tuple[int, bytes, int]] = []  # (member, old key, switch height)
        self.added: list[int] = []
        current = self._build(members, generation)
        self._record(1, members, current)
        genesis_bad = self._faulty_power(members, faulty)
        decided_at: set[int] = set()
        for c in self.changes:
            if c.decided < 1 or c.decided in decided_at:
                raise ChangeError(f"{c.describe()}: one change per block, from block 1")
            decided_at.add(c.decided)
            if c.kind not in KINDS:
                raise ChangeError(f"unknown change kind {c.kind!r}")
            pos = next((i for i, (m, _) in enumerate(members) if m == c.member), None)
            new = list(members)
            if c.kind == "add":
                if pos is not None or c.member in generation:
                    raise ChangeError(f"{c.describe()}: member already known")
                if not 1 <= c.power <= MAX_POWER:
                    raise ChangeError(f"{c.describe()}: power out of range")
                generation[c.member] = 0
                self._gen_from[c.member] = [(1, 0)]
                key = member_key(c.member).public_key.raw
                if key in used:
                    raise ChangeError(f"{c.describe()}: key already used")
                used.add(key)
                new.append((c.member, c.power))
                self.added.append(c.member)
            elif pos is None:
                raise ChangeError(f"{c.describe()}: member is not in the set")
            elif c.kind in ("remove", "jail"):
                if c.kind == "jail" and c.member not in faulty:
                    raise ChangeError(f"{c.describe()}: only a faulty member is jailed")
                del new[pos]
            elif c.kind == "power":
                if not 1 <= c.power <= MAX_POWER or c.power == members[pos][1]:
                    raise ChangeError(f"{c.describe()}: not a new power in 1..{MAX_POWER}")
                new[pos] = (c.member, c.power)
            else:  # rotate
                old_key = member_key(c.member, generation[c.member]).public_key.raw
                generation[c.member] += 1
                key = member_key(c.member, generation[c.member]).public_key.raw
                if key in used:
                    raise ChangeError(f"{c.describe()}: key already used")
                used.add(key)
                self._gen_from[c.member].append((c.effective, generation[c.member]))
                self.rotations.append((c.member, old_key, c.effective))
            if not new:
                raise ChangeError(f"{c.describe()}: the set would be empty")
            nxt = self._build(new, generation)
            if c.kind != "jail":
                why = transition_error(current, nxt)
                if why is not None:
                    raise ChangeError(f"{c.describe()}: {why}")
            bad = self._faulty_power(new, faulty)
            genesis_total = self._sets[0][1].total_power
            # a third or more is tolerated only if genesis had that share already
            if 3 * bad >= nxt.total_power and bad * genesis_total > genesis_bad * nxt.total_power:
                raise ChangeError(f"{c.describe()}: faulty members would hold a third or "
                                  "more of the power")
            members, current = new, nxt
            self._record(c.effective, members, current)

    @staticmethod
    def _faulty_power(members: list[tuple[int, int]], faulty: frozenset[int]) -> int:
        return sum(p for m, p in members if m in faulty)

    def _build(self, members: list[tuple[int, int]],
               generation: dict[int, int]) -> ValidatorSet:
        return ValidatorSet(Validator(member_key(m, generation[m]).public_key.raw, p, f"v{m}")
                            for m, p in members)

    def _record(self, height: int, members: list[tuple[int, int]], vs: ValidatorSet) -> None:
        self._members.append((height, [m for m, _ in members]))
        self._sets.append((height, vs))

    @staticmethod
    def _at(entries: list, height: int):
        found = entries[0][1]
        for start, value in entries:
            if start > height:
                break
            found = value
        return found

    def set_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` (which signs its commit certificate)."""
        return self._at(self._sets, height)

    def members_at(self, height: int) -> list[int]:
        """The members in the set of ``height``, in set (index) order."""
        return self._at(self._members, height)

    def index_of(self, member: int, height: int) -> int | None:
        """``member``'s validator index at ``height``, or None when it is not in the set."""
        members = self.members_at(height)
        return members.index(member) if member in members else None

    def member_of(self, index: int, height: int) -> int | None:
        members = self.members_at(height)
        return members[index] if 0 <= index < len(members) else None

    def key_of(self, member: int, height: int) -> PrivateKey:
        """The consensus key ``member`` signs with at ``height``."""
        return member_key(member, self._at(self._gen_from[member], height))

    @property
    def members(self) -> int:
        """Number of members (genesis validators and validators added later)."""
        return self.n + len(self.added)

    def change_heights(self) -> list[int]:
        """Heights from which the set differs from the height before."""
        return [h for h, _ in self._sets[1:]]


def draw_changes(n: int, heights: int, roles: tuple[str, ...], faulty: frozenset[int],
                 rng: random.Random) -> tuple[SetChange, ...]:
    """1-3 changes decided in distinct blocks 1..heights-2 (so each applies within the
    run), each drawn among the kinds the rules allow at that point; none when the run is
    too short."""
    if heights < 3:
        return ()
    slots = list(range(1, heights - 1))
    count = min(len(slots), rng.randint(1, 3))
    decided = sorted(rng.sample(slots, count))
    out: list[SetChange] = []
    next_member = n
    for h in decided:
        sched = SetSchedule(n, tuple(out), faulty)
        members = sched.members_at(h + DELAY)
        candidates: list[SetChange] = []
        for kind in KINDS:
            if kind == "add":
                candidates.append(SetChange(h, kind, next_member, rng.randint(1, MAX_POWER)))
            elif kind == "jail":
                candidates += [SetChange(h, kind, m) for m in members
                               if m < n and roles[m] in JAILABLE]
            elif kind == "power":
                m = rng.choice(members)
                candidates.append(SetChange(h, kind, m, rng.randint(1, MAX_POWER)))
            else:
                candidates.append(SetChange(h, kind, rng.choice(members)))
        rng.shuffle(candidates)
        for c in candidates:
            try:
                SetSchedule(n, (*out, c), faulty)
            except ChangeError:
                continue
            out.append(c)
            if c.kind == "add":
                next_member += 1
            break
    return tuple(out)
