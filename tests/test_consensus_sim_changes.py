"""The simulator with validator-set changes (add, remove, power, key rotation, jailing)
under every fault family: a short run of a few hundred seeds, the schedule's rules, proof
that the changes take effect, and proof that the new checks can fail."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace

import pytest

from chain.vote import Vote, VoteType
from consensus.sim.__main__ import main
from consensus.sim.changes import (
    ChangeError,
    SetChange,
    SetSchedule,
    draw_changes,
    member_key,
)
from consensus.sim.checks import check_run
from consensus.sim.cluster import Cluster, validator_set
from consensus.sim.faults import FAMILIES, Scenario
from consensus.sim.runner import replay_command, run_scenario, scenario_for

SEEDS_PER_CASE = 8  # x 13 families x 2 sizes = 208 scenarios with changes, signatures off


@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("family", FAMILIES)
def test_seeds_with_set_changes_hold_every_invariant(family: str, n: int) -> None:
    changed = 0
    for seed in range(SEEDS_PER_CASE):
        sc = scenario_for(seed, [family], [n], heights=5, changes=True)
        changed += bool(sc.changes)
        res = run_scenario(sc, signatures=False)
        assert not res.violations, f"{sc.describe()}: {[str(v) for v in res.violations]}"
        assert res.heights >= 5
    assert changed == SEEDS_PER_CASE


@pytest.mark.parametrize("family", FAMILIES)
def test_set_changes_with_real_signatures(family: str) -> None:
    sc = scenario_for(2, [family], [4], heights=4, changes=True)
    assert sc.changes
    res = run_scenario(sc, signatures=True)
    assert not res.violations, f"{sc.describe()}: {[str(v) for v in res.violations]}"


def test_every_kind_of_change_is_drawn() -> None:
    kinds = Counter(c.kind for seed in range(120)
                    for c in scenario_for(seed, list(FAMILIES), [4, 7], 6, changes=True).changes)
    assert set(kinds) == {"add", "remove", "power", "rotate", "jail"}, kinds


def test_faults_of_a_seed_do_not_depend_on_changes() -> None:
    for seed in range(13):
        a = scenario_for(seed, list(FAMILIES), [4], 5)
        b = scenario_for(seed, list(FAMILIES), [4], 5, changes=True)
        assert (a.roles, a.events, a.conditions) == (b.roles, b.events, b.conditions)
        assert not a.changes


# ----------------------------------------------------------------- the schedule's rules


def test_schedule_gives_sets_keys_and_indices_per_height() -> None:
    sched = SetSchedule(4, (SetChange(1, "rotate", 3), SetChange(2, "remove", 1),
                            SetChange(3, "add", 4, 1)))
    assert sched.set_at(1) == sched.set_at(2) == validator_set(4)
    assert sched.key_of(3, 2) is member_key(3) and sched.key_of(3, 3) is member_key(3, 1)
    assert sched.members_at(3) == [0, 1, 2, 3]
    assert sched.set_at(3)[3].pub_key == member_key(3, 1).public_key.raw
    assert sched.members_at(4) == [0, 2, 3] and sched.index_of(3, 4) == 2
    assert sched.index_of(1, 4) is None and sched.member_of(1, 4) == 2
    assert sched.members_at(5) == [0, 2, 3, 4] and sched.change_heights() == [3, 4, 5]
    assert sched.rotations == [(3, member_key(3).public_key.raw, 3)]
    assert sched.added == [4] and sched.members == 5
    # a rotation in a set of three would move a third of the power at once
    with pytest.raises(ChangeError, match="a third or more"):
        SetSchedule(4, (SetChange(1, "remove", 1), SetChange(2, "rotate", 3)))


@pytest.mark.parametrize(("changes", "why"), [
    ((SetChange(1, "remove", 0),), "empty"),  # n = 1
    ((SetChange(1, "rotate", 0),), "a third or more"),  # n = 1: all the power moves
    ((SetChange(1, "add", 1, 1),), "a third or more"),  # 1 of 2 arrives
])
def test_schedule_refuses_changes_against_the_rules_for_one_validator(
        changes: tuple[SetChange, ...], why: str) -> None:
    with pytest.raises(ChangeError, match=why):
        SetSchedule(1, changes)


def test_schedule_refuses_changes_against_the_rules() -> None:
    bad = [
        ((SetChange(1, "power", 0, 3),), "a third or more"),  # 2 of 6 arrive
        ((SetChange(1, "add", 4, 3),), "a third or more"),
        ((SetChange(1, "remove", 0), SetChange(1, "remove", 1)), "one change per block"),
        ((SetChange(1, "remove", 9),), "not in the set"),
        ((SetChange(1, "add", 2, 1),), "already known"),
        ((SetChange(1, "jail", 2),), "only a faulty member"),
        ((SetChange(1, "power", 0, 1),), "not a new power"),
        ((SetChange(1, "meteor", 0),), "unknown change kind"),
    ]
    for changes, why in bad:
        with pytest.raises(ChangeError, match=why):
            SetSchedule(4, changes)
    # faulty members may not reach a third by a change: remove an honest one of 3 + 1 bad
    with pytest.raises(ChangeError, match="faulty members"):
        SetSchedule(4, (SetChange(1, "remove", 0),), frozenset({3}))
    # jailing is not held to the one-third bound, but never empties the set
    # (half of a two-validator set goes at once)
    halved = SetSchedule(2, (SetChange(1, "jail", 1),), frozenset({1}))
    assert halved.members_at(3) == [0]
    with pytest.raises(ChangeError, match="a third or more"):
        SetSchedule(2, (SetChange(1, "remove", 1),), frozenset({1}))
    with pytest.raises(ChangeError, match="empty"):
        SetSchedule(1, (SetChange(1, "jail", 0),), frozenset({0}))


def test_drawn_schedules_always_follow_the_rules() -> None:
    rng = random.Random(5)
    for _ in range(200):
        n = rng.choice((1, 2, 4, 7, 10))
        roles = tuple(rng.choice(("honest", "double_vote")) for _ in range(n))
        faulty = frozenset(i for i, r in enumerate(roles) if r != "honest")
        changes = draw_changes(n, rng.randint(1, 8), roles, faulty, rng)
        SetSchedule(n, changes, faulty)  # raises if a drawn change broke a rule
        assert all(c.decided >= 1 for c in changes)


# ----------------------------------------------------------------- changes take effect


def _run(changes: tuple[SetChange, ...], roles: tuple[str, ...] = ("honest",) * 4,
         signatures: bool = True, heights: int = 6):
    sc = Scenario(11, "none", len(roles), heights, roles, changes=changes)
    return Cluster(sc, signatures=signatures).run()


def test_changes_take_effect_at_h_plus_2_for_every_endpoint() -> None:
    changes = (SetChange(1, "add", 4, 1), SetChange(2, "rotate", 2), SetChange(3, "remove", 0))
    rec = _run(changes)
    assert check_run(rec) == []
    sched = rec.schedule
    signers_by_height: dict[int, set[bytes]] = {}
    for key, h, _ in rec.signed_keys:
        signers_by_height.setdefault(h, set()).add(key)
    new_member = member_key(4).public_key.raw
    old_key, new_key = member_key(2).public_key.raw, member_key(2, 1).public_key.raw
    removed = member_key(0).public_key.raw
    assert new_member not in signers_by_height[2] and new_member in signers_by_height[3]
    assert old_key in signers_by_height[3] and old_key not in signers_by_height[4]
    assert new_key not in signers_by_height[3] and new_key in signers_by_height[4]
    assert removed in signers_by_height[4] and removed not in signers_by_height[5]
    # every endpoint, the added one included, committed the same blocks with certificates
    # of each height's own set; the removed one follows as an observer
    assert len(rec.endpoints) == 5 and rec.endpoints[4] == 4
    for ep in range(5):
        assert max(rec.commits[ep]) >= 6
    for h in range(1, 7):
        cert = rec.commits[1][h].certificate
        assert {s.validator for s in cert.sigs} <= set(range(len(sched.set_at(h))))


def test_a_jailed_double_voter_stops_counting() -> None:
    roles = ("honest", "double_vote", "honest", "honest")
    rec = _run((SetChange(1, "jail", 1),), roles, signatures=False)
    assert check_run(rec) == []
    assert rec.schedule.members_at(3) == [0, 2, 3]
    assert {h for h, v in rec.equivocators} & {1, 2}
    # at height 3 and later, nobody signs as the jailed member (index 1 is member 2 now)
    assert all(key != member_key(1).public_key.raw for key, h, _ in rec.signed_keys if h >= 3)


# ----------------------------------------------------------------- the new checks can fail


def test_checks_use_the_set_of_each_height() -> None:
    rec = _run((SetChange(1, "rotate", 3), SetChange(2, "remove", 1)))
    assert check_run(rec) == []
    # judged against the genesis set alone, the same run looks wrong
    rec.schedule = SetSchedule(4)
    checks = {v.check for v in check_run(rec)}
    assert {"certificates", "membership"} <= checks


def test_an_old_key_signing_after_its_rotation_is_caught() -> None:
    sc = Scenario(12, "none", 4, 5, ("honest",) * 4, changes=(SetChange(1, "rotate", 2),))
    cluster = Cluster(sc, signatures=False)
    rec = cluster.run()
    assert check_run(rec) == []
    e = cluster.eps[2]
    old = member_key(2)
    # member 2's endpoint signs a vote of height 3 (the switch height) with its old key
    e.key, e.machine, e.height = old, None, 3
    cluster._log_signed(e, Vote(VoteType.PREVOTE, 3, 0, None, 1, 2))
    violations = check_run(cluster._record(False))
    assert any(v.check == "retired_key" and "height 3" in v.detail for v in violations)


def test_proposal_equivocation_yields_checked_evidence() -> None:
    found = 0
    for seed in range(12):
        res = run_scenario(scenario_for(seed, ["equivocate"], [4], 3, changes=True),
                           signatures=True)
        assert not res.violations
        found += sum(1 for _, ev in res.record.evidence if hasattr(ev, "proposal_a"))
    assert found > 0
    # a forged proposal evidence is refused by the checks
    rec = run_scenario(scenario_for(1, ["equivocate"], [4], 3), signatures=True).record
    idx = next(i for i, (_, ev) in enumerate(rec.evidence) if hasattr(ev, "proposal_a"))
    who, ev = rec.evidence[idx]
    rec.evidence[idx] = (who, replace(ev, proposal_b=replace(ev.proposal_b, sig=bytes(64))))
    assert any(v.check == "evidence" for v in check_run(rec))


# ----------------------------------------------------------------- command line


def test_cli_runs_with_changes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--validators", "4,7", "--seeds", "26", "--no-signatures", "--heights", "4",
                 "--changes"])
    out = capsys.readouterr().out
    last = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and last["violations"] == 0 and last["set_changes"] >= 26
    assert "set changes" in out
    sc = scenario_for(3, ["drop"], [4], 4, changes=True)
    assert replay_command(sc, False, None).endswith("--changes --no-signatures")
