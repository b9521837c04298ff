"""``mutual_missed_precommits_total``: a validator missed a height only if this node had no
precommit of it for that height when it moved on to the next height (docs/node.md,
"Metrics"). Uses the in-process harness of tests/test_driver_timing.py: the real
``Node.after_commit``, driver and consensus machine, signed votes fed by hand."""

from __future__ import annotations

from tests.test_driver_timing import NAMES, Harness


def missed(h: Harness) -> dict[str, float]:
    out = {name: 0.0 for name in NAMES}
    for metric in h.node.metrics.missed_votes.collect():
        for sample in metric.samples:
            if sample.name == "mutual_missed_precommits_total":
                out[sample.labels["validator"]] = sample.value
    return out


async def test_late_but_in_time_precommits_are_not_missed_a_silent_validator_is(
        tmp_path) -> None:
    h = Harness(tmp_path)
    h.ready = 1  # a transaction waits: the next height starts right after timeout_commit
    try:
        h.driver._begin_height(1)
        # height 1: v0..v4 close the certificate, v5's precommit comes during
        # timeout_commit (after the commit), v6 sends nothing
        block_1 = h.decide(1, range(5))
        h.precommit(5, 1, block_1)
        await h.pump_until(lambda: h.height == 2)
        assert missed(h) == {**dict.fromkeys(NAMES, 0.0), "v6": 1.0}

        # height 2: v2 precommits nil (it timed out on the prevote step: alive, voting),
        # v6 is still silent; v6's precommit of height 1 arriving now is too late
        h.precommit(6, 1, block_1)
        h.precommit(2, 2, None)
        h.decide(2, [0, 1, 3, 4, 5])
        await h.pump_until(lambda: h.height == 3)
        assert missed(h) == {**dict.fromkeys(NAMES, 0.0), "v6": 2.0}
    finally:
        h.close()


async def test_a_precommit_in_an_earlier_round_counts(tmp_path) -> None:
    h = Harness(tmp_path)
    h.ready = 1
    try:
        h.driver._begin_height(1)
        # round 0 fails: v6 precommits nil there and then goes quiet
        h.precommit(6, 1, None, round_=0)
        # round 1 decides without v6; v5 sends nothing at all
        block_1 = h.block(1)
        h.propose(1, block_1, round_=1)
        for v in range(5):
            h.precommit(v, 1, block_1, round_=1)
        assert h.node.executor.height == 1 and h.driver.machine.round == 1
        await h.pump_until(lambda: h.height == 2)
        assert missed(h) == {**dict.fromkeys(NAMES, 0.0), "v5": 1.0}
    finally:
        h.close()
