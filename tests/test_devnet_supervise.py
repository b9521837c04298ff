"""``devnet up`` keeps the network running when a node exits, and says whether it can
still commit (devnet/__main__.py, supervise). A scripted stand-in for the cluster: no
processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from devnet.__main__ import supervise


@dataclass
class FakeNode:
    index: int
    exits_at_poll: int | None  # None: runs throughout
    polls: list[int] = field(default_factory=lambda: [0])

    @property
    def proc(self) -> SimpleNamespace:
        return SimpleNamespace(returncode=-9)

    @property
    def log_path(self) -> Path:
        return Path(f"/tmp/devnet/node{self.index}/node.log")

    def alive(self) -> bool:
        return self.exits_at_poll is None or self.polls[0] < self.exits_at_poll


def _cluster(exits: list[int | None]) -> tuple[SimpleNamespace, list[int]]:
    vset = ValidatorSet([Validator(PrivateKey(sha256(b"v%d" % i)).public_key.raw, 10, f"v{i}")
                         for i in range(len(exits))])
    polls = [0]
    nodes = [FakeNode(i, e, polls) for i, e in enumerate(exits)]

    def voting_power(indices: list[int]) -> tuple[int, int]:
        return vset.power_of([i for i in indices if i < len(vset)]), vset.total_power

    return SimpleNamespace(genesis=SimpleNamespace(validators=vset), nodes=nodes,
                           voting_power=voting_power), polls


def _run(exits: list[int | None], max_polls: int,
         on_poll: object = None) -> tuple[int, list[str]]:
    cluster, polls = _cluster(exits)
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)

    import devnet.__main__ as mod
    real_sleep = mod.time.sleep

    def tick(_: float) -> None:
        polls[0] += 1

    mod.time.sleep = tick  # type: ignore[assignment]
    try:
        rc = supervise(cluster, say, poll_s=0, max_polls=max_polls,  # type: ignore[arg-type]
                       on_poll=on_poll)  # type: ignore[arg-type]
    finally:
        mod.time.sleep = real_sleep  # type: ignore[assignment]
    return rc, lines


def test_one_of_four_exits_and_the_rest_keep_committing() -> None:
    rc, lines = _run([None, None, None, 2], max_polls=5)
    assert rc == 0  # still supervising when the polls ran out
    assert lines[0] == "devnet: node3 exited (code -9); its log: /tmp/devnet/node3/node.log"
    assert "nodes [0, 1, 2] keep running and hold 30 of 40" in lines[1]
    assert "the chain goes on" in lines[1]
    assert len(lines) == 2  # reported once


def test_losing_the_quorum_is_said_and_all_gone_ends() -> None:
    rc, lines = _run([None, 3, 2, 5], max_polls=50)
    assert "hold 30 of 40" in lines[1]
    assert "hold only 20 of 40" in lines[3] and "no block commits" in lines[3]
    assert "nodes [0] keep running but hold only 10 of 40" in lines[5]
    assert rc == 0 and len(lines) == 6  # node0 never exits


def test_every_node_gone_returns_1() -> None:
    rc, lines = _run([1, 1, 2, 2], max_polls=50)
    assert rc == 1
    assert lines[-1] == "devnet: no node is left"
    assert sum("exited" in line for line in lines) == 4


def test_a_node_stopped_on_purpose_is_not_reported_as_an_exit() -> None:
    # node3 "exits" at poll 2 because on_poll stopped it (remove-validator): no report
    calls: list[int] = []

    def on_poll() -> list[int]:
        calls.append(1)
        return [3] if len(calls) >= 2 else []

    rc, lines = _run([None, None, None, 2], max_polls=5, on_poll=on_poll)
    assert rc == 0 and lines == []
    assert len(calls) == 5  # every poll
