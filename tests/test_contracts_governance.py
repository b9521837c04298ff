"""Governance in the rules: proposals, votes, validator-set changes at H+2, jailing, roles
and rule parameters from the state (docs/governance.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import ValidatorSet, transition_error
from contracts import errors, records
from contracts.rules.governance import MAX_DEADLINE_MS, MAX_OPEN_PROPOSALS
from tests.test_contracts_harness import (
    ASSESSOR,
    OPERATOR,
    REGISTRAR,
    Harness,
    devnet_params,
    genesis_doc,
    member_key,
    register_body,
)

DAY = 86_400_000


def key(label: str) -> PrivateKey:
    return PrivateKey(sha256(label.encode()))


VAL = [key(f"validator {i}") for i in range(4)]
OPS = [key(f"operator {i}") for i in range(4)]
NODES = [key(f"node {i}") for i in range(4)]


class GovHarness(Harness):
    """The contracts harness over ``n`` validators of power ``powers`` with operators."""

    def __init__(self, powers: tuple[int, ...] = (10, 10, 10, 10),
                 params: dict[str, Any] | None = None) -> None:
        doc = genesis_doc(params or devnet_params(), "2024-01-01T00:00:00+00:00")
        doc["validators"] = [
            {"name": f"v{i}", "pub_key": VAL[i].public_key.hex(), "power": p,
             "node_key": NODES[i].public_key.hex(),
             "operator_account": OPS[i].public_key.hex()}
            for i, p in enumerate(powers)]
        super().__init__(doc=doc)
        self.tick(self.time + 1)

    def propose(self, op: int | PrivateKey, kind: str, deadline: int | None = None,
                **fields: Any) -> Any:
        k = OPS[op] if isinstance(op, int) else op
        body = {"kind": kind, "deadline_ms": deadline or self.time + DAY, **fields}
        return self.send(k, "propose", body)

    def vote(self, op: int | PrivateKey, pid: int, yes: bool = True) -> Any:
        k = OPS[op] if isinstance(op, int) else op
        return self.send(k, "vote_proposal", {"proposal_id": pid, "yes": yes})

    def last_pid(self) -> int:
        return [e for e in self.events if e.type == "proposal_opened"][-1].attrs["proposal_id"]

    def keys_at(self, height: int) -> list[bytes]:
        return [v.pub_key for v in self.app.validators_at(height).validators]

    def refused(self, k: PrivateKey, type_: str, body: dict[str, Any], code: str) -> None:
        """``body`` is refused with ``code`` and the state does not change at all."""
        self.begin(self.time)
        before = self.state.snapshot()
        r = self.app.deliver_tx(self.make_tx(k, type_, body))
        after = self.state.snapshot()
        self.end()
        assert r.code == code, (r.code, r.reason)
        assert before == after

    def passes(self, kind: str, voters: tuple[int, ...] = (1, 2), **fields: Any) -> int:
        """Propose from operator 0 and have ``voters`` vote yes; returns the height of the
        block that passed it."""
        self.propose(0, kind, **fields)
        pid = self.last_pid()
        for op in voters:
            r = self.vote(op, pid)
            assert r.ok, (r.code, r.reason)
        prop = self.app.get_proposal(pid)
        assert prop["status"] == "passed", prop
        return self.height


def pk(k: PrivateKey) -> bytes:
    return k.public_key.raw


def add_fields(i: int, power: int = 10) -> dict[str, Any]:
    return {"pub_key": pk(key(f"new validator {i}")), "power": power,
            "node_key": pk(key(f"new node {i}")), "name": f"new{i}",
            "operator": pk(key(f"new operator {i}"))}


# every kind ------------------------------------------------------------------------------

def test_add_validator_passes_at_two_thirds_and_applies_at_h_plus_2() -> None:
    h = GovHarness()
    fields = add_fields(0)
    h.propose(0, "add_validator", **fields)
    pid = h.last_pid()
    assert h.app.get_proposal(pid)["status"] == "open"
    h.vote(1, pid)
    p = h.app.get_proposal(pid)
    # 20 of 40 is not more than two thirds
    assert p["status"] == "open" and p["yes_power"] == 20 and p["needed"] == 27
    h.vote(2, pid)
    H = h.height
    p = h.app.get_proposal(pid)
    assert p["status"] == "passed" and p["applies_height"] == H + 2
    assert h.keys_at(H + 1) == [pk(v) for v in VAL]
    assert h.keys_at(H + 2) == [pk(v) for v in VAL] + [fields["pub_key"]]
    new = h.app.validators_at(H + 2)[4]
    assert (new.operator, new.node_key, new.name) == (fields["operator"], fields["node_key"],
                                                       "new0")
    changes = h.app.validator_changes()
    assert [c["height"] for c in changes] == [1, H + 2]
    assert changes[-1]["changes"] == [{"kind": "add_validator", "proposal": pid,
                                       **{k: (v.hex() if isinstance(v, bytes) else v)
                                          for k, v in fields.items()}}]
    types = [e.type for e in h.events]
    assert "proposal_passed" in types and "validator_set_changed" in types
    # the new validator's operator may govern once its validator is in the executing set
    h.tick(h.time + 1)
    h.tick(h.time + 1)
    assert h.height >= H + 2
    assert h.propose(key("new operator 0"), "grant_role", account=pk(key("acct")),
                     role="assessor").ok
    assert h.app.get_proposal(h.last_pid())["proposer"] == pk(key("new operator 0")).hex()


def test_remove_set_power_and_rotate() -> None:
    h = GovHarness()
    H = h.passes("remove_validator", pub_key=pk(VAL[3]))
    assert h.keys_at(H + 1) == [pk(v) for v in VAL]
    assert h.keys_at(H + 2) == [pk(v) for v in VAL[:3]]
    h.tick(h.time + 1)
    h.tick(h.time + 1)
    H = h.passes("set_power", pub_key=pk(VAL[1]), power=13)
    assert [v.power for v in h.app.validators_at(H + 2).validators] == [10, 13, 10]
    # rotation by the validator's own operator passes at once, keeping its index
    h.tick(h.time + 1)
    h.tick(h.time + 1)
    new_key = pk(key("rotated 2"))
    h.propose(2, "rotate_key", pub_key=pk(VAL[2]), new_pub_key=new_key,
              new_node_key=pk(key("rotated node 2")))
    H = h.height
    assert h.app.get_proposal(h.last_pid())["status"] == "passed"
    vs = h.app.validators_at(H + 2)
    assert vs[2].pub_key == new_key and vs[2].operator == pk(OPS[2]) and vs[2].power == 10
    assert vs[2].node_key == pk(key("rotated node 2"))
    assert h.app.validators_at(H + 1)[2].pub_key == pk(VAL[2])
    # the old key, now used, can never come back
    h.tick(h.time + 1)
    h.tick(h.time + 1)
    h.refused(OPS[0], "propose", {"kind": "add_validator", "deadline_ms": h.time + DAY,
                                  **{**add_fields(5, 3), "pub_key": pk(VAL[2])}},
              errors.KEY_USED)


def test_rotation_by_another_operator_needs_votes() -> None:
    h = GovHarness()
    h.propose(0, "rotate_key", pub_key=pk(VAL[1]), new_pub_key=pk(key("r1")))
    assert h.app.get_proposal(h.last_pid())["status"] == "open"


def test_two_changes_in_one_block_build_on_each_other_under_one_bound() -> None:
    h = GovHarness()
    h.propose(0, "add_validator", **add_fields(0, 5))
    a = h.last_pid()
    h.propose(0, "add_validator", **add_fields(1, 5))
    b = h.last_pid()
    h.propose(0, "add_validator", **add_fields(2, 10))
    c = h.last_pid()
    with h.block(h.time + 1):
        for pid in (a, b, c):
            for op in (1, 2):
                assert h.vote(op, pid).ok
    H = h.height
    # a and b both apply at H+2 (one record, two changes); c would add 20 of 60 at once
    assert len(h.keys_at(H + 2)) == 6
    assert [ch["proposal"] for ch in h.app.validator_changes()[-1]["changes"]] == [a, b]
    pc = h.app.get_proposal(c)
    assert pc["status"] == "failed" and pc["code"] == errors.POWER_SHIFT_TOO_LARGE


def test_roles_from_state_grant_and_revoke() -> None:
    h = GovHarness()
    new_reg = key("new registrar")
    body = register_body(member_key(1), 1)
    h.refused(new_reg, "register_member", body, errors.NOT_PERMITTED)
    h.passes("grant_role", account=pk(new_reg), role="registrar")
    assert h.app.get_account(pk(new_reg))["roles"] == ["registrar"]
    h.ok(new_reg, "register_member", body)
    h.passes("revoke_role", account=pk(new_reg), role="registrar")
    assert h.app.get_account(pk(new_reg))["roles"] == []
    h.refused(new_reg, "register_member", register_body(member_key(2), 2),
              errors.NOT_PERMITTED)
    # revoking a genesis role works the same
    h.passes("revoke_role", account=pk(ASSESSOR), role="assessor")
    h.refused(ASSESSOR, "assess_claim", {"claim_id": 1, "approve": True,
                                         "report_hash": sha256(b"r")}, errors.NOT_PERMITTED)
    assert h.app.get_account(pk(OPS[0]))["operator_of"] == pk(VAL[0]).hex()


def test_role_cache_follows_a_rejected_transaction() -> None:
    """A grant inside a transaction that is then refused leaves no role behind."""
    h = GovHarness(powers=(10,))
    acct = key("acct")
    h.begin(h.time + 1)
    # the single validator passes at once; a refused tx afterwards by the same key
    r = h.app.deliver_tx(h.make_tx(OPS[0], "propose", {
        "kind": "grant_role", "deadline_ms": h.time + DAY, "account": pk(acct),
        "role": "registrar"}))
    assert r.ok
    assert h.app.get_account(pk(acct))["roles"] == ["registrar"]
    h.end()
    # revoke, then roll the state back by hand (what a node does with a failed block)
    snap = dict(h.state.data)
    with h.block(h.time + 1):
        assert h.send(OPS[0], "propose", {"kind": "revoke_role", "deadline_ms": h.time + DAY,
                                          "account": pk(acct), "role": "registrar"}).ok
    assert h.app.get_account(pk(acct))["roles"] == []
    h.state.data.clear()
    h.state.data.update(snap)
    assert h.app.get_account(pk(acct))["roles"] == ["registrar"]


# refusals --------------------------------------------------------------------------------

def test_every_refusal_has_its_code_and_changes_nothing() -> None:
    h = GovHarness()
    t = h.time

    def prop(op: int | PrivateKey, code: str, **fields: Any) -> None:
        body = {"deadline_ms": t + DAY, **fields}
        h.refused(OPS[op] if isinstance(op, int) else op, "propose", body, code)

    prop(key("stranger"), errors.NOT_PERMITTED, kind="remove_validator", pub_key=pk(VAL[0]))
    prop(REGISTRAR, errors.NOT_PERMITTED, kind="remove_validator", pub_key=pk(VAL[0]))
    prop(0, errors.BAD_BODY, kind="remove_validator")
    prop(0, errors.BAD_BODY, kind="remove_validator", pub_key=pk(VAL[0]), power=3)
    prop(0, errors.BAD_BODY, kind="grant_role", account=pk(VAL[0]), role="member")
    prop(0, errors.BAD_DEADLINE, kind="remove_validator", pub_key=pk(VAL[0]),
         deadline_ms=t)
    prop(0, errors.BAD_DEADLINE, kind="remove_validator", pub_key=pk(VAL[0]),
         deadline_ms=t + MAX_DEADLINE_MS + 1)
    prop(0, errors.UNKNOWN_VALIDATOR, kind="remove_validator", pub_key=pk(key("nobody")))
    prop(0, errors.UNKNOWN_VALIDATOR, kind="set_power", pub_key=pk(key("nobody")), power=1)
    prop(0, errors.UNKNOWN_VALIDATOR, kind="rotate_key", pub_key=pk(key("nobody")),
         new_pub_key=pk(key("x")))
    prop(0, errors.POWER_SHIFT_TOO_LARGE, kind="add_validator", **add_fields(0, 20))
    prop(0, errors.POWER_SHIFT_TOO_LARGE, kind="set_power", pub_key=pk(VAL[0]), power=40)
    prop(0, errors.POWER_SHIFT_TOO_LARGE, kind="set_power", pub_key=pk(VAL[0]), power=30)
    prop(0, errors.KEY_USED, kind="add_validator", **{**add_fields(0), "pub_key": pk(VAL[1])})
    prop(0, errors.KEY_USED, kind="add_validator", **{**add_fields(0), "pub_key": pk(OPS[1])})
    prop(0, errors.KEY_USED, kind="rotate_key", pub_key=pk(VAL[0]), new_pub_key=pk(VAL[3]))
    prop(0, errors.NODE_KEY_IN_USE, kind="add_validator",
         **{**add_fields(0), "node_key": pk(NODES[2])})
    prop(0, errors.NODE_KEY_IN_USE, kind="rotate_key", pub_key=pk(VAL[0]),
         new_pub_key=pk(key("fresh")), new_node_key=pk(NODES[1]))
    prop(0, errors.BAD_OPERATOR, kind="add_validator",
         **{**add_fields(0), "operator": pk(VAL[2])})
    prop(0, errors.BAD_OPERATOR, kind="add_validator",
         **{**add_fields(0), "operator": add_fields(0)["pub_key"]})
    prop(0, errors.BAD_VALIDATOR, kind="set_power", pub_key=pk(VAL[0]), power=0)
    prop(0, errors.ROLE_HELD, kind="grant_role", account=pk(REGISTRAR), role="registrar")
    prop(0, errors.ROLE_NOT_HELD, kind="revoke_role", account=pk(REGISTRAR), role="assessor")
    prop(0, errors.BAD_PARAMS, kind="set_params", params={"fee_bps": -1}, from_period=5)
    prop(0, errors.BAD_PARAMS, kind="set_params", params={"no_such": 1}, from_period=5)
    prop(0, errors.BAD_PARAMS, kind="set_params", params={}, from_period=5)
    prop(0, errors.PARAM_NOT_CHANGEABLE, kind="set_params",
         params={"waiting_ms": 1}, from_period=5)
    prop(0, errors.PARAM_NOT_CHANGEABLE, kind="set_params",
         params={"jury": {"window_ms": 99_000}}, from_period=5)
    prop(0, errors.BAD_FROM_PERIOD, kind="set_params", params={"fee_bps": 1},
         from_period=10_000)
    vote = {"proposal_id": 99, "yes": True}
    h.refused(OPS[0], "vote_proposal", vote, errors.UNKNOWN_PROPOSAL)
    h.refused(key("stranger"), "vote_proposal", vote, errors.NOT_PERMITTED)


def test_single_validator_cannot_empty_the_set() -> None:
    h = GovHarness(powers=(10,))
    h.refused(OPS[0], "propose", {"kind": "remove_validator", "deadline_ms": h.time + DAY,
                                  "pub_key": pk(VAL[0])}, errors.EMPTY_VALIDATOR_SET)


def test_vote_refusals_expiry_and_bound_on_open_proposals() -> None:
    h = GovHarness()
    h.propose(0, "grant_role", deadline=h.time + 5_000, account=pk(key("a")), role="assessor")
    pid = h.last_pid()
    h.refused(OPS[0], "vote_proposal", {"proposal_id": pid, "yes": True},
              errors.ALREADY_VOTED_PROPOSAL)
    assert h.vote(1, pid, yes=False).ok
    assert h.app.get_proposal(pid)["status"] == "open"  # a no never closes it
    ev = h.tick(h.time + 5_000)
    assert [e.attrs["proposal_id"] for e in ev if e.type == "proposal_expired"] == [pid]
    assert h.app.get_proposal(pid)["status"] == "expired"
    h.refused(OPS[2], "vote_proposal", {"proposal_id": pid, "yes": True},
              errors.PROPOSAL_EXPIRED)
    assert h.app.list_proposals(status="open") == []
    # a passed proposal is closed
    h.passes("grant_role", account=pk(key("b")), role="assessor")
    h.refused(OPS[3], "vote_proposal", {"proposal_id": h.last_pid(), "yes": True},
              errors.PROPOSAL_CLOSED)
    # the bound on open proposals
    for i in range(MAX_OPEN_PROPOSALS):
        assert h.propose(0, "grant_role", account=pk(key(f"acct{i}")), role="assessor").ok
    h.refused(OPS[0], "propose", {"kind": "grant_role", "deadline_ms": h.time + DAY,
                                  "account": pk(key("one more")), "role": "assessor"},
              errors.TOO_MANY_PROPOSALS)
    assert len(h.app.list_proposals(status="open", limit=500)) == MAX_OPEN_PROPOSALS
    page = h.app.list_proposals(after_id=2, limit=3)
    assert [p["id"] for p in page] == [3, 4, 5]


def test_a_change_refused_at_apply_fails_and_the_vote_is_ok() -> None:
    h = GovHarness()
    fields = add_fields(0)
    h.propose(0, "add_validator", **fields)
    a = h.last_pid()
    h.propose(1, "add_validator", **{**fields, "node_key": pk(key("other node"))})
    b = h.last_pid()
    h.vote(1, a)
    h.vote(2, a)
    assert h.app.get_proposal(a)["status"] == "passed"
    h.vote(0, b)
    h.vote(2, b)
    # the block after next runs on the five-validator set: 30 of 50 is not enough yet
    assert h.app.get_proposal(b)["status"] == "open"
    r = h.vote(3, b)
    assert r.ok
    p = h.app.get_proposal(b)
    assert p["status"] == "failed" and p["code"] == errors.KEY_USED
    assert any(e.type == "proposal_failed" for e in r.events)


def test_power_is_counted_against_the_set_at_the_last_vote() -> None:
    h = GovHarness()
    h.propose(0, "grant_role", account=pk(key("acct")), role="assessor")
    p1 = h.last_pid()
    h.vote(3, p1)  # 20 of 40
    H = h.passes("remove_validator", pub_key=pk(VAL[3]))
    while h.height < H + 2:
        h.tick(h.time + 1)
    # validator 3 left: its operator may not vote, and its earlier yes counts nothing
    h.refused(OPS[3], "vote_proposal", {"proposal_id": 1, "yes": True}, errors.NOT_PERMITTED)
    assert h.app.get_proposal(p1)["yes_power"] == 10
    h.vote(1, p1)
    p = h.app.get_proposal(p1)
    assert p["status"] == "open" and p["yes_power"] == 20 and p["total_power"] == 30
    h.vote(2, p1)
    assert h.app.get_proposal(p1)["status"] == "passed"


# jailing ---------------------------------------------------------------------------------

def test_jailing_at_h_plus_2_and_restore_by_proposal() -> None:
    h = GovHarness()
    ev_hash = sha256(b"evidence 1")
    H = h.height + 1
    h.app.begin_block(H, h.time + 1, sha256(b"s"), [(H - 1, pk(VAL[1]), ev_hash)])
    h.app.end_block()
    h.height, h.time = H, h.time + 1
    assert h.keys_at(H + 1) == [pk(v) for v in VAL]
    assert h.keys_at(H + 2) == [pk(VAL[0]), pk(VAL[2]), pk(VAL[3])]
    jail = records.load(h.state, records.jail_key(pk(VAL[1])))
    assert jail["evidence"] == ev_hash and jail["jailed_height"] == H + 2
    assert h.app.validator_changes()[-1]["changes"][0]["kind"] == "jail"
    # jailed twice: a no-op (recorded as skipped)
    h.height += 1
    h.time += 1
    ev = h.app.begin_block(h.height, h.time, sha256(b"t"),
                           [(H - 1, pk(VAL[1]), sha256(b"evidence 2"))])
    h.app.end_block()
    assert [e.attrs["reason"] for e in ev if e.type == "validator_jail_skipped"] == [
        "already jailed"]
    assert len(h.app.validator_changes()) == 2
    while h.height < H + 2:
        h.tick(h.time + 1)
    # only a set_power proposal restores it: appended, with its recorded name and keys
    h.tick(h.time + 1)
    H2 = h.passes("set_power", voters=(2, 3), pub_key=pk(VAL[1]), power=5)
    vs = h.app.validators_at(H2 + 2)
    assert vs[3].pub_key == pk(VAL[1]) and vs[3].power == 5 and vs[3].name == "v1"
    assert vs[3].operator == pk(OPS[1]) and vs[3].node_key == pk(NODES[1])
    assert records.load(h.state, records.jail_key(pk(VAL[1])))["restored_height"] == H2 + 2


def test_jailing_never_empties_the_set() -> None:
    h = GovHarness(powers=(10,))
    ev = h.app.begin_block(h.height + 1, h.time, sha256(b"s"),
                           [(h.height, pk(VAL[0]), sha256(b"e"))])
    h.app.end_block()
    assert [e.attrs["reason"] for e in ev if e.type == "validator_jail_skipped"] == [
        "it is the last validator"]
    assert h.app.validator_set_heights() == [1]


# rule parameters -------------------------------------------------------------------------

def test_param_change_applies_from_its_period_only() -> None:
    h = GovHarness()
    sch = h.app.schedule
    nxt = records.load(h.state, records.META_KEY)["next_notice"]
    assert nxt == 1
    # period 1's notice runs: period 1 is in notice and may no longer change
    h.tick(sch.notice_ms(1))
    h.refused(OPS[0], "propose", {"kind": "set_params", "deadline_ms": h.time + DAY,
                                  "params": {"fee_bps": 1000}, "from_period": 1},
              errors.BAD_FROM_PERIOD)
    h.passes("set_params", params={"fee_bps": 1000, "jury": {"mode": "panel"}},
             from_period=3)
    assert [e["from_period"] for e in h.app.params_history()] == [1, 3]
    assert h.app.params_at(2).fee_bps == 800 and h.app.params_at(3).fee_bps == 1000
    assert h.app.params_at(99).jury.mode == "panel"
    # a later change may not go before it
    h.refused(OPS[0], "propose", {"kind": "set_params", "deadline_ms": h.time + DAY,
                                  "params": {"fee_bps": 5}, "from_period": 2},
              errors.BAD_FROM_PERIOD)


def test_a_filed_claim_keeps_its_jury_parameters() -> None:
    h = GovHarness()
    members = [h.join(i) for i in range(4)]
    h.tick(h.time + 40_000)  # past the waiting period
    nxt = records.load(h.state, records.META_KEY)["next_notice"]
    h.claim(members[0], h.time - 1)
    before = h.last_claim_id()
    # from the current period (not in notice yet): new transactions use it at once
    h.passes("set_params", params={"jury": {"mode": "panel"}}, from_period=nxt)
    assert records.load(h.state, records.META_KEY)["next_notice"] == nxt
    h.claim(members[1], h.time - 1)
    after = h.last_claim_id()
    assert "params_v" not in records.load(h.state, records.claim_key(before))
    assert records.load(h.state, records.claim_key(after))["params_v"] == 1
    with h.block(h.time + 1):
        for cid in (before, after):
            assert h.send(ASSESSOR, "assess_claim", {"claim_id": cid, "approve": False,
                                                     "report_hash": sha256(b"r")}).ok
    with h.block(h.time + 1):
        assert h.send(members[0], "appeal_claim", {"claim_id": before,
                                                   "reason_hash": sha256(b"a")}).ok
        assert h.send(members[1], "appeal_claim", {"claim_id": after,
                                                   "reason_hash": sha256(b"a")}).ok
    # the claim filed before the change keeps genesis' open jury; the later one a panel
    assert h.app.get_claim(before)["jury"]["mode"] == "open"
    assert h.app.get_claim(after)["jury"]["mode"] == "panel"


def test_param_fee_applies_to_a_paid_claim_period() -> None:
    h = GovHarness()
    sch = h.app.schedule
    members = [h.join(i) for i in range(5)]
    h.passes("set_params", params={"fee_bps": 2500}, from_period=2)
    # an accident inside the waiting period, confirmed: paid in period 1 (old fee)
    h.tick(h.time + 1)
    assert h.claim(members[4], h.time - 1, accident=True).ok
    first = h.last_claim_id()
    h.ok(ASSESSOR, "assess_claim", {"claim_id": first, "approve": True, "accident": True,
                                    "report_hash": sha256(b"r")})
    assert h.app.get_claim(first)["notice_period"] == 1
    # wait out the waiting period, then claim and get approved into period 2's notice
    t = sch.notice_ms(1) + 1
    while h.time < t:
        h.tick(min(t, h.time + 5_000))
    h.tick(h.g0 + 31_000 if h.time < h.g0 + 31_000 else h.time + 1)
    assert h.claim(members[0], h.time - 1).ok
    cid = h.last_claim_id()
    h.assess(cid)
    assert h.app.get_claim(cid)["notice_period"] == 2
    t = sch.settlement_ms(2)
    while h.time < t:
        h.tick(min(t, h.time + 5_000))
    p1, p2 = h.app.get_period(1), h.app.get_period(2)
    assert p1["P"] > 0 and p1["F"] == p1["P"] * 800 // 10_000
    assert p2["P"] > 0 and p2["F"] == p2["P"] * 2500 // 10_000
    assert h.app.member_share(members[1].public_key.hex(), 1)["fee_bps"] == 800
    share = h.app.member_share(members[1].public_key.hex(), 2)
    assert share["fee_bps"] == 2500


def test_params_history_and_merged_validation() -> None:
    h = GovHarness()
    # max_join_age_years must stay below max_age_years (merged params are validated)
    h.refused(OPS[0], "propose", {"kind": "set_params", "deadline_ms": h.time + DAY,
                                  "params": {"max_join_age_years": 70}, "from_period": 2},
              errors.BAD_PARAMS)
    # identity keys are only ever added (docs/privacy.md)
    h.refused(OPS[0], "propose", {"kind": "set_params", "deadline_ms": h.time + DAY,
                                  "params": {"identity_key_ids": [2]}, "from_period": 2},
              errors.BAD_PARAMS)
    h.passes("set_params", params={"identity_key_ids": [1, 2]}, from_period=1)
    # period 1 is not in notice: joins now carry a tag under each key
    assert h.app.params_history()[-1]["params"]["identity_key_ids"] == [1, 2]
    assert h.app.identity_key_ids() == [1, 2]
    h.refused(REGISTRAR, "register_member", register_body(member_key(9), 9),
              errors.IDENTITY_KEYS_MISMATCH)
    h.ok(REGISTRAR, "register_member", register_body(member_key(9), 9, key_ids=(1, 2)))


# the property test -------------------------------------------------------------------------

ACTIONS = st.lists(st.tuples(st.sampled_from(["add", "remove", "power", "rotate", "jail",
                                              "vote", "rally", "tick"]),
                             st.integers(0, 7), st.integers(1, 25), st.booleans()),
                   min_size=5, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_random_governance_keeps_sets_sound(actions: list[tuple[str, int, int, bool]]) -> None:
    h = GovHarness()
    ops = {pk(o): o for o in OPS}
    counter = [0]

    def current_ops() -> list[PrivateKey]:
        vs = h.app.validators_at(h.height + 1)
        return [ops[v.operator] for v in vs.validators if v.operator in ops]

    for act, i, n, flag in actions:
        known = h.app.validators_at(h.height + 2)
        keys = [v.pub_key for v in known.validators]
        gov = current_ops()
        proposer = gov[i % len(gov)] if gov else None
        if act == "tick":
            h.tick(h.time + n * 1000)
            continue
        if act == "jail":
            target = keys[i % len(keys)]
            h.height += 1
            h.time += 1
            h.app.begin_block(h.height, h.time, sha256(bytes([i, n])),
                              [(h.height - 1, target, sha256(bytes([i, n, 1])))])
            h.app.end_block()
            continue
        if proposer is None:
            continue
        if act in ("vote", "rally"):
            open_ = h.app.list_proposals(status="open")
            if open_:
                pid = open_[i % len(open_)]["id"]
                # a rally: every current operator votes yes in one block
                with h.block(h.time + 1):
                    for op in (gov if act == "rally" else [proposer]):
                        h.send(op, "vote_proposal", {"proposal_id": pid,
                                                     "yes": flag or act == "rally"})
            continue
        counter[0] += 1
        c = counter[0]
        if act == "add":
            fields: dict[str, Any] = {
                "kind": "add_validator", "pub_key": pk(key(f"p{c}")), "power": n,
                "node_key": pk(key(f"pn{c}")), "name": f"p{c}",
                "operator": pk(OPS[i % 4])}
            if flag and keys:  # sometimes try an old key
                fields["pub_key"] = keys[i % len(keys)]
        elif act == "remove":
            fields = {"kind": "remove_validator", "pub_key": keys[i % len(keys)]}
        elif act == "power":
            fields = {"kind": "set_power", "pub_key": keys[i % len(keys)], "power": n}
        else:
            fields = {"kind": "rotate_key", "pub_key": keys[i % len(keys)],
                      "new_pub_key": pk(VAL[i % 4]) if flag else pk(key(f"r{c}"))}
        h.send(proposer, "propose", {"deadline_ms": h.time + 20_000, **fields})

    heights = h.app.validator_set_heights()
    seen: set[bytes] = set()
    prev: ValidatorSet | None = None
    for height in heights:
        rec = records.load(h.state, records.vset_key(height))
        vs = ValidatorSet.from_maps(rec["validators"])  # never empty (raises if it were)
        assert len(vs) >= 1
        kinds = {ch["kind"] for ch in rec["changes"]}
        if prev is not None and "jail" not in kinds:
            assert transition_error(prev, vs) is None
        for ch in rec["changes"]:
            if ch["kind"] == "add_validator":
                assert ch["pub_key"] not in seen
            if ch["kind"] == "rotate_key":
                assert ch["new_pub_key"] not in seen
        seen |= set(vs._index)
        prev = vs


def test_check_tx_admits_governance_by_the_next_heights_set() -> None:
    h = GovHarness()
    tx = h.make_tx(OPS[0], "vote_proposal", {"proposal_id": 1, "yes": True})
    assert h.app.check_tx(tx).ok
    tx = h.make_tx(OPERATOR, "vote_proposal", {"proposal_id": 1, "yes": True})
    assert h.app.check_tx(tx).code == errors.NOT_PERMITTED


@pytest.mark.parametrize("kind", ["add_validator", "set_params"])
def test_proposal_view_is_json(kind: str) -> None:
    import json
    h = GovHarness()
    if kind == "add_validator":
        h.propose(0, kind, **add_fields(0))
    else:
        h.propose(0, kind, params={"fee_bps": 900}, from_period=2)
    p = h.app.get_proposal(h.last_pid())
    json.dumps(p)
    assert p["votes"][0] == {"operator": pk(OPS[0]).hex(), "yes": True, "height": h.height,
                             "power": 10}
    json.dumps(h.app.validator_changes())
    json.dumps(h.app.params_history())


def test_txjson_forms_of_the_governance_types() -> None:
    from client.txjson import body_from_json, kind_fields_help
    body = body_from_json("propose", {"kind": "set_params", "deadline_ms": 5,
                                      "params": '{"fee_bps": 1}', "from_period": 3})
    assert body["params"] == {"fee_bps": 1}
    body = body_from_json("propose", {"kind": "remove_validator", "deadline_ms": 5,
                                      "pub_key": pk(VAL[0]).hex()})
    assert body["pub_key"] == pk(VAL[0])
    with pytest.raises(ValueError, match="needs"):
        body_from_json("propose", {"kind": "grant_role", "deadline_ms": 5})
    with pytest.raises(ValueError, match="JSON object"):
        body_from_json("propose", {"kind": "set_params", "deadline_ms": 5,
                                   "params": "{oops", "from_period": 3})
    assert body_from_json("vote_proposal", {"proposal_id": 2, "yes": "false"}) == {
        "proposal_id": 2, "yes": False}
    assert kind_fields_help()["rotate_key"] == (
        "pub_key:bin32, new_pub_key:bin32, [new_node_key:bin32]")


def test_jailing_is_not_held_to_the_bound_and_skips_unknown_keys() -> None:
    h = GovHarness(powers=(30, 10, 10))
    H = h.height + 1
    ev = h.app.begin_block(H, h.time + 1, sha256(b"s"),
                           [(H - 1, pk(VAL[0]), sha256(b"e0")),
                            (H - 1, pk(key("stranger")), sha256(b"e1"))])
    h.app.end_block()
    # the 30 of 50 validator leaves at once: jailing ignores the one-third bound
    assert [v.pub_key for v in h.app.validators_at(H + 2).validators] == [pk(VAL[1]),
                                                                          pk(VAL[2])]
    assert [e.attrs["reason"] for e in ev if e.type == "validator_jail_skipped"] == [
        "not in the latest known set"]
    assert [e.attrs["pub_key"] for e in ev if e.type == "validator_jailed"] == [
        pk(VAL[0]).hex()]


def test_a_param_change_whose_period_went_into_notice_fails_at_apply() -> None:
    h = GovHarness()
    h.propose(0, "set_params", params={"fee_bps": 100}, from_period=1)
    pid = h.last_pid()
    h.vote(1, pid)
    h.tick(h.app.schedule.notice_ms(1))  # period 1 is in notice now
    r = h.vote(2, pid)
    assert r.ok
    p = h.app.get_proposal(pid)
    assert p["status"] == "failed" and p["code"] == errors.BAD_FROM_PERIOD
    assert len(h.app.params_history()) == 1
    assert h.app.params_at(1).fee_bps == 800
