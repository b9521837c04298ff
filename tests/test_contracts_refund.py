"""Issue 15 item 4: ``record_refund`` records, once, the refund of the shares a member
barred by the waiting-period rule (rule 3) paid. Devnet timeline as in
tests/test_contracts_claims.py: notice 1 at g+20 s, settlement 1 at g+45 s, waiting 30 s,
appeal window 20 s."""

from __future__ import annotations

from chain.hashing import sha256
from tests.test_contracts_harness import ASSESSOR, OPERATOR, REGISTRAR, Harness

S = 1000
REF = sha256(b"bank transfer 42")


def _assess(h: Harness, cid: int, approve: bool, accident: bool) -> None:
    h.ok(ASSESSOR, "assess_claim", {"claim_id": cid, "approve": approve,
                                    "accident": accident, "report_hash": sha256(b"r")})


def _chain() -> tuple[Harness, list]:
    """m1's confirmed accident is paid in period 1 (every member is charged 10 fen); m0's
    accident claim is denied as no accident and m0 is barred at g+70 s (exit period 1);
    m4 is barred at filing before any notice (exit period 0)."""
    h = Harness()
    g = h.g0
    with h.block(g + S):
        keys = [h.join(i) for i in range(5)]
    with h.block(g + 10 * S):
        for k in keys[:2]:
            assert h.claim(k, g + 5 * S, accident=True).code == "ok"
    _assess(h, 2, approve=True, accident=True)
    h.tick(g + 46 * S)
    _assess(h, 1, approve=False, accident=False)
    h.tick(g + 70 * S)
    return h, keys


def refund(h: Harness, k, sender=OPERATOR) -> object:
    return h.send(sender, "record_refund", {"member": k.public_key.raw, "payment_ref": REF})


def test_refund_is_recorded_once_with_the_amount_the_index_gives() -> None:
    h, keys = _chain()
    pk = keys[0].public_key.hex()
    m = h.app.get_member(pk)
    assert m["status"] == "barred" and m["refundable"] and not m["refunded"]
    assert m["refundable_fen"] == m["billed_fen"] == 10
    r = refund(h, keys[0])
    assert r.code == "ok", r.reason
    assert r.events[0].type == "refund_recorded"
    assert r.events[0].attrs == {"member": pk, "amount": 10, "billed": 10, "arrears": 0,
                                 "payment_ref": REF.hex()}
    m = h.app.get_member(pk)
    assert m["refunded"] and not m["refundable"] and m["refundable_fen"] == 0
    assert (m["refund_fen"], m["refund_arrears_fen"], m["refund_ref"]) == (10, 0, REF.hex())
    with h.block(h.time + S):
        before = h.state.snapshot()
        assert refund(h, keys[0], REGISTRAR).code == "already_refunded"
        # the refund settled the billed shares: no arrears can be recorded afterwards
        r = h.send(REGISTRAR, "record_arrears", {"member": keys[0].public_key.raw,
                                                 "period": 1})
        assert r.code == "already_refunded", r.reason
        assert h.state.snapshot() == before


def test_refund_refusals() -> None:
    h, keys = _chain()
    g = h.g0
    assert refund(h, keys[2]).code == "not_refundable"            # active
    assert refund(h, keys[2], keys[3]).code == "not_permitted"    # a member may not
    assert refund(h, keys[2], ASSESSOR).code == "not_permitted"
    h.tick(g + 80 * S)                                            # notice 2
    assert h.claim(keys[4], g + 10 * S).code == "ok"              # barred at filing, exit 2
    assert h.app.get_member(keys[4].public_key.hex())["exit_period"] == 2
    assert refund(h, keys[4]).code == "refund_not_due"            # period 2 not settled
    h.tick(g + 105 * S)                                           # settlement 2 (charge 0)
    r = refund(h, keys[4])
    assert r.code == "ok" and r.events[0].attrs["amount"] == 10
    h2 = Harness()
    with h2.block(h2.g0 + S):
        k = h2.join(0)
    h2.tick(h2.g0 + 10 * S)
    assert h2.claim(k, h2.g0 + 5 * S).code == "ok"                 # barred, exit period 0
    assert refund(h2, k).code == "nothing_to_refund"
    h2.tick(h2.g0 + 20 * S)
    assert refund(h2, k).code == "nothing_to_refund"
