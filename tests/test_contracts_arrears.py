"""Rule 8: arrears, removal at the deadline, payment, and claims filed in arrears."""

from __future__ import annotations

from chain.hashing import sha256
from tests.test_contracts_harness import REGISTRAR, Harness
from tests.test_contracts_settlement import notice, pay_claim, settlement, small_payouts

S = 1000


def setup(jurors: bool = False) -> tuple[Harness, list]:
    h = Harness(small_payouts())
    with h.block(h.g0 + S):
        keys = [h.join(i) for i in range(5)]
    if jurors:
        with h.block(h.g0 + 15 * S):
            for k in keys:
                h.ok(REGISTRAR, "approve_juror", {"member": k.public_key.raw,
                                                  "exam_ref": sha256(b"e")})
    pay_claim(h, keys[0], 2)
    h.tick(h.g0 + settlement(2))
    return h, keys


def arrears(h: Harness, k, n: int) -> str:
    return h.send(REGISTRAR, "record_arrears", {"member": k.public_key.raw, "period": n}).code


def payment(h: Harness, k, n: int) -> str:
    return h.send(REGISTRAR, "record_payment", {"member": k.public_key.raw, "period": n}).code


def test_arrears_preconditions() -> None:
    h, keys = setup()
    assert arrears(h, keys[1], 3) == "period_not_settled"
    assert arrears(h, keys[1], 0) == "period_not_settled"
    assert arrears(h, keys[1], 1) == "window_closed"         # its deadline has passed
    late = h.join(60)                                        # cohort 3: did not share in 2
    assert arrears(h, late, 2) == "nothing_owed"
    # the claimant paid out at settlement 2 was billed for period 2: its unpaid share is a
    # debt (issue 15 item 3), recorded below with the others
    assert payment(h, keys[1], 2) == "not_in_arrears"
    assert arrears(h, keys[1], 2) == "ok"
    assert arrears(h, keys[1], 2) == "already_in_arrears"
    m = h.app.get_member(keys[1].public_key.hex())
    assert m["in_arrears"] and m["arrears_fen"] == h.app.get_period(2)["share"]
    assert h.send(keys[1], "record_arrears", {"member": keys[1].public_key.raw,
                                              "period": 2}).code == "not_permitted"
    assert arrears(h, keys[0], 2) == "ok"
    assert h.app.get_member(keys[0].public_key.hex())["status"] == "paid_out"


def test_unpaid_arrears_remove_the_member_two_grace_before_next_deduction() -> None:
    h, keys = setup()
    assert arrears(h, keys[1], 2) == "ok"
    assert arrears(h, keys[2], 2) == "ok"
    assert payment(h, keys[2], 2) == "ok"
    deadline = h.g0 + settlement(3) - 5 * S
    h.tick(deadline - 1)
    assert h.app.get_member(keys[1].public_key.hex())["status"] == "active"
    ev = h.tick(deadline)
    assert [e.attrs["member"] for e in ev if e.type == "member_removed"] == [
        keys[1].public_key.hex()]
    m1 = h.app.get_member(keys[1].public_key.hex())
    # removed after notice 3, so period 3 is still billed to it
    assert m1["status"] == "removed" and m1["exit_period"] == 3 and m1["in_arrears"]
    assert h.app.get_member(keys[2].public_key.hex())["status"] == "active"
    assert arrears(h, keys[3], 2) == "window_closed"


def test_arrears_take_a_juror_out_of_the_pool_until_paid() -> None:
    h, keys = setup(jurors=True)
    assert h.app.get_member(keys[1].public_key.hex())["pool_index"] is not None
    arrears(h, keys[1], 2)
    assert h.app.get_member(keys[1].public_key.hex())["pool_index"] is None
    payment(h, keys[1], 2)
    assert h.app.get_member(keys[1].public_key.hex())["pool_index"] is not None


def test_claim_filed_in_arrears_is_paid_minus_what_is_owed() -> None:
    h, keys = setup()
    share = h.app.get_period(2)["share"]
    arrears(h, keys[1], 2)
    cid = pay_claim(h, keys[1], 3)
    assert h.app.get_claim(cid)["filed_in_arrears"] is True
    h.tick(h.g0 + settlement(3))
    c = h.app.get_claim(cid)
    assert c["status"] == "paid" and c["deduction"] == share and c["net"] == 1000 - share
    m = h.app.get_member(keys[1].public_key.hex())
    # removed at the period-2 deadline (before settlement 3), yet the claim still pays
    assert m["arrears"] == [] and m["status"] == "removed"


def test_arrears_deadline_waits_for_its_period_order() -> None:
    h, keys = setup()
    arrears(h, keys[1], 2)
    # one block far in the future runs every job in time order without skipping any
    h.tick(h.g0 + notice(8))
    assert h.app.get_member(keys[1].public_key.hex())["status"] == "removed"
    assert [h.app.get_period(n)["status"] for n in range(1, 8)] == ["settled"] * 7
    assert h.app.get_period(8)["status"] == "noticed"


def refused(h: Harness, code: str, tx: str, k, n: int) -> None:
    """``tx`` is refused with ``code`` and changes nothing."""
    with h.block(h.time):
        before = h.state.snapshot()
        r = h.send(REGISTRAR, tx, {"member": k.public_key.raw, "period": n})
        assert r.code == code, (r.code, r.reason)
        assert h.state.snapshot() == before


def test_billed_shares_of_members_who_left_or_were_removed_are_collectable() -> None:
    h = Harness(small_payouts())
    g = h.g0
    with h.block(g + S):
        keys = [h.join(i) for i in range(6)]
    pay_claim(h, keys[5], 2)
    h.tick(g + notice(2))
    h.ok(keys[4], "leave", {})                       # after notice 2: still billed for 2
    h.tick(g + settlement(2))
    p2 = h.app.get_period(2)
    share2 = p2["share"]
    assert p2["M"] == 6 and share2 > 0 and p2["uncollected"] == 0
    assert p2["collected"] == 6 * share2
    # a member who left after the notice owes that period: recorded as a debt
    assert arrears(h, keys[4], 2) == "ok"
    assert arrears(h, keys[1], 2) == "ok"            # active: removed at the deadline
    refused(h, "already_in_arrears", "record_arrears", keys[4], 2)
    p2 = h.app.get_period(2)
    assert p2["uncollected"] == 2 * share2 and p2["collected"] == 4 * share2
    assert p2["collected"] + p2["operator_covered"] + p2["uncollected"] == (
        p2["P"] + p2["F"] - p2["S"] + p2["surplus_new"])
    # the member's view of the period (what verify-share prints) shows both figures
    view = h.app.member_share(keys[4].public_key.hex(), 2)
    assert (view["collected"], view["uncollected"]) == (4 * share2, 2 * share2)
    pay_claim(h, keys[3], 3)                         # gives period 3 a charge
    with h.block(g + notice(3) + 10 * S):            # the defaulter's claim: noticed in 4
        assert h.claim(keys[1], g + notice(3) + 9 * S).code == "ok"
        cid = h.last_claim_id()
        assert h.assess(cid).code == "ok"
    h.tick(g + settlement(3) - 5 * S)                # period 2's deadline: removed
    m1 = h.app.get_member(keys[1].public_key.hex())
    assert m1["status"] == "removed" and m1["exit_period"] == 3
    h.tick(g + settlement(3))
    share3 = h.app.get_period(3)["share"]
    assert share3 > 0
    # the removed member's last period is collectable the same way
    assert arrears(h, keys[1], 3) == "ok"
    refused(h, "already_in_arrears", "record_arrears", keys[1], 3)
    refused(h, "nothing_owed", "record_arrears", keys[4], 3)     # left: not billed for 3
    refused(h, "not_in_arrears", "record_payment", keys[4], 3)
    assert h.app.get_period(3)["uncollected"] == share3
    # a debt paid later is collected after all
    assert payment(h, keys[4], 2) == "ok"
    p2 = h.app.get_period(2)
    assert p2["uncollected"] == share2 and p2["collected"] == 5 * share2
    m1 = h.app.get_member(keys[1].public_key.hex())
    assert m1["arrears"] == [[2, share2], [3, share3]]
    # the claim deduction covers every billed period still unpaid
    h.tick(g + settlement(4))
    c = h.app.get_claim(cid)
    assert c["status"] == "paid" and c["deduction"] == share2 + share3
    assert c["net"] == c["amount"] - share2 - share3
    m1 = h.app.get_member(keys[1].public_key.hex())
    assert m1["arrears"] == [] and m1["status"] == "removed"
    # the operator advanced the uncollected shares; the deduction repaid it, and the
    # periods' records keep what their members did not pay
    assert h.app.get_period(2)["uncollected"] == share2
    assert h.app.get_period(3)["uncollected"] == share3
