"""Payouts read from the settled period (docs/rules.md, "Payouts"): a settlement writes no
claim, member or identity record, and every reader sees what writing them would have."""

from __future__ import annotations

from typing import Any

from chain.hashing import sha256
from contracts import records
from contracts.rules import payout
from tests.test_contracts_harness import REGISTRAR, Harness, member_key, register_body
from tests.test_contracts_settlement import pay_claim, settlement, small_payouts

S = 1000


class CountingState:
    """Wraps a state and records every key written."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.written: set[bytes] = set()

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.written.add(key)
        self.inner.set(key, value)

    def delete(self, key: bytes) -> None:
        self.written.add(key)
        self.inner.delete(key)


def setup(jurors: int = 0) -> tuple[Harness, list]:
    h = Harness(small_payouts())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(6)]
    if jurors:
        with h.block(h.g0 + 15 * S):
            for k in keys[:jurors]:
                h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                                  "exam_ref": sha256(b"e")})
    return h, keys


def stored(h: Harness, key: bytes) -> bytes | None:
    return h.app.state.get(key)


def test_settlement_writes_the_period_not_the_claims_members_or_identities() -> None:
    h, keys = setup()
    cids = [pay_claim(h, k, 2) for k in keys[:3]]
    h.tick(h.g0 + settlement(2) - S)            # notice and objection close: now payable
    watched = ([records.claim_key(c) for c in cids]
               + [records.member_key(k.public_key.raw) for k in keys[:3]]
               + [records.identity_key(register_body(k, i)["identity_tags"][0][1])
                  for i, k in enumerate(keys[:3])])
    before = {k: stored(h, k) for k in watched}
    counting = CountingState(h.app.state)
    h.app.state = counting
    try:
        h.tick(h.g0 + settlement(2))
    finally:
        h.app.state = counting.inner
    assert not counting.written & set(watched)
    assert {k: stored(h, k) for k in watched} == before
    # every claim still reads as paid, every claimant as paid out
    rec = h.app.get_period(2)
    assert rec["status"] == "settled" and rec["claims"] == cids
    assert rec["deductions"] == [0, 0, 0] and rec["payout_exit_period"] == 2
    for cid in cids:
        c = h.app.get_claim(cid)
        assert c["status"] == "paid" and c["paid_ms"] == rec["settled_ms"]
        assert c["deduction"] == 0 and c["net"] == c["amount"]
    for k in keys[:3]:
        m = h.app.get_member(k.public_key.hex())
        assert m["status"] == "paid_out" and m["open_claim"] == 0
        assert m["ended_ms"] == rec["settled_ms"] and m["exit_period"] == 2
    meta = records.load(h.app.state, records.META_KEY)
    assert meta["active"] == 3
    # the stored records lag: exactly what a light client resolves with proofs
    raw = records.load(h.app.state, records.claim_key(cids[0]))
    assert raw["status"] == "payable" and raw["net"] is None
    assert records.load(h.app.state, records.member_key(keys[0].public_key.raw))[
        "status"] == "active"


def test_views_apply_a_deduction_and_clear_the_arrears() -> None:
    h, keys = setup()
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2))
    share = h.app.get_period(2)["share"]
    h.ok(REGISTRAR, "record_arrears", {"member": keys[1].public_key.raw, "period": 2})
    cid = pay_claim(h, keys[1], 3)
    h.tick(h.g0 + settlement(3))
    rec = h.app.get_period(3)
    assert rec["deductions"] == [share]
    c = h.app.get_claim(cid)
    assert c["deduction"] == share and c["net"] == c["amount"] - share
    m = h.app.get_member(keys[1].public_key.hex())
    assert m["arrears"] == [] and m["arrears_fen"] == 0 and m["open_claim"] == 0
    # nothing left to pay: the view is what the rules act on
    assert h.send(REGISTRAR, "record_payment", {"member": keys[1].public_key.raw,
                                                "period": 2}).code == "not_in_arrears"
    # removed at period 2's deadline, before settlement 3: the payout keeps that status
    # and does not count the member out of the active total a second time
    assert m["status"] == "removed" and m["exit_period"] == 3
    meta = records.load(h.app.state, records.META_KEY)
    assert meta["active"] == 4


def test_an_identity_is_free_once_its_member_reads_as_paid_out() -> None:
    h, keys = setup()
    pay_claim(h, keys[0], 2)
    body = register_body(keys[0], 0)
    newcomer = {**register_body(member_key(99), 99), "identity_tags": body["identity_tags"]}
    assert h.send(REGISTRAR, "register_member", newcomer).code == "identity_in_use"
    h.tick(h.g0 + settlement(2))
    # the identity record still names the old member, who reads as paid out
    ident = records.load(h.app.state, records.identity_key(body["identity_tags"][0][1]))
    assert ident == {"member": keys[0].public_key.raw, "status": "live"}
    assert h.send(REGISTRAR, "register_member", newcomer).code == "ok"
    assert h.app.get_member(member_key(99).public_key.hex())["status"] == "active"


def test_a_juror_paid_out_leaves_the_pool_at_the_settlement() -> None:
    h, keys = setup(jurors=3)
    meta = records.load(h.app.state, records.META_KEY)
    assert meta["pool"] == 3
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2))
    meta = records.load(h.app.state, records.META_KEY)
    assert meta["pool"] == 2
    pooled = {records.load(h.app.state, records.pool_key(i))["member"] for i in range(2)}
    assert pooled == {keys[1].public_key.raw, keys[2].public_key.raw}
    # the pool needed the member record rewritten, so it is stored resolved
    raw = records.load(h.app.state, records.member_key(keys[0].public_key.raw))
    assert raw["status"] == "paid_out" and raw["pool_index"] is None
    assert raw["open_claim"] == 0 and raw["exit_period"] == 2
    for k in keys[1:3]:
        m = h.app.get_member(k.public_key.hex())
        assert m["pool_index"] is not None
        assert records.load(h.app.state, records.pool_key(m["pool_index"]))[
            "member"] == k.public_key.raw


def test_views_leave_unsettled_and_terminal_records_alone() -> None:
    h, keys = setup()
    cid = pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2) - S)
    load = payout.loader(h.app.state)
    c = records.load(h.app.state, records.claim_key(cid))
    assert c["status"] == "payable"
    assert payout.paying_period(load, c) is None            # period 2 not settled yet
    assert payout.claim_view(load, dict(c)) == c
    m = records.load(h.app.state, records.member_key(keys[0].public_key.raw))
    assert payout.member_view(load, dict(m)) == m
    assert payout.member_view(load, None) is None and payout.claim_view(load, None) is None
    m2 = records.load(h.app.state, records.member_key(keys[1].public_key.raw))
    assert m2["open_claim"] == 0 and payout.member_view(load, dict(m2)) == m2


def test_jurors_paid_in_one_settlement_leave_the_pool_whatever_their_slots() -> None:
    # the first payout moves the last pool slot's juror, itself paid in this settlement,
    # into the freed slot: the second payout must remove it from there
    h, keys = setup(jurors=4)
    cids = [pay_claim(h, k, 2) for k in (keys[1], keys[3])]
    h.tick(h.g0 + settlement(2))
    meta = records.load(h.app.state, records.META_KEY)
    assert meta["pool"] == 2
    pooled = [records.load(h.app.state, records.pool_key(i))["member"] for i in range(2)]
    assert sorted(pooled) == sorted([keys[0].public_key.raw, keys[2].public_key.raw])
    for k in keys[:4]:
        m = h.app.get_member(k.public_key.hex())
        in_pool = m["pool_index"] is not None
        assert in_pool == (m["status"] == "active")
        if in_pool:
            assert pooled[m["pool_index"]] == k.public_key.raw
    assert [h.app.get_claim(c)["status"] for c in cids] == ["paid", "paid"]
