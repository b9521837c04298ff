"""The audit's independent model of the rules catches a bug in ``contracts``.

A replay alone cannot: the auditor runs the same ``contracts`` code, so a buggy rule
produces the same state roots on every node and in the replay. These tests inject a bug
into the rules while the chain is built *and* while it is audited, and check that the
audit's own recomputation (settlement formula, notice snapshot, jury verdict, panel draw)
names the wrong figure. Panel-mode juries are built here too (the devnet profile uses open
juries), so the draw recheck is exercised on both of its branches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from audit import AuditFailure, audit
from audit.report import ABSENT
from chain.hashing import sha256
from contracts import rules
from contracts.params import profile
from contracts.rules import arrears, claims, jury, settlement, waiting
from tests.test_audit_builder import (
    GENESIS_MS,
    ChainBuilder,
    build_scenario,
    key,
    register_body,
    tags_of,
)

S = 1000


def _audit(b: ChainBuilder):
    return audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)


def _fail(b: ChainBuilder) -> AuditFailure:
    report = _audit(b)
    assert not report.ok, "the audit missed the injected rule bug"
    assert report.first_error is not None
    return report.first_error


def _bump_settlement_figure(monkeypatch, name: str) -> None:
    """Make every settlement record one fen more in ``name`` than the rules compute."""
    original = settlement.compute_shares

    def buggy(*args: Any) -> dict:
        out = original(*args)
        out[name] += 1
        return out

    monkeypatch.setattr(settlement, "compute_shares", buggy)


def test_settlement_share_bug(monkeypatch) -> None:
    _bump_settlement_figure(monkeypatch, "share")
    b, sc = build_scenario()
    err = _fail(b)
    assert err.height == sc.settle_heights[0] and err.field == "period/1.share"
    assert err.found == err.expected + 1


def test_settlement_fee_bug(monkeypatch) -> None:
    original = settlement.compute_shares

    def buggy(P: int, fee_bps: int, *rest: Any) -> dict:
        return original(P, fee_bps + 100, *rest)

    monkeypatch.setattr(settlement, "compute_shares", buggy)
    b, sc = build_scenario()
    err = _fail(b)
    assert err.height == sc.settle_heights[0] and err.field == "period/1.F"


def test_settlement_collected_bug_breaks_conservation(monkeypatch) -> None:
    """Every figure the formula names is right, but the record claims one fen collected
    that no member was charged: only the audit's conservation identity can see it."""
    _bump_settlement_figure(monkeypatch, "collected")
    b, sc = build_scenario()
    err = _fail(b)
    assert err.height == sc.settle_heights[0]
    assert err.field == "period/1 conservation (collected + operator_covered + uncollected)"
    assert err.found == err.expected + 1


# a lump sum that makes period 1's need (32,400,001) no multiple of its 6 members
ODD_PAYOUT = {"payout_bands": [{"max_age": 39, "fen": 30_000_001},
                               {"max_age": 59, "fen": 10_000_000}]}


def old_surplus_rule(original: Any) -> Any:
    """Issue 15 item 1's bug: the surplus from the uncapped share, the operator covering
    M x raw - collected, so a binding cap made the operator fund a rounding surplus."""
    def buggy(*args: Any) -> dict:
        out = original(*args)
        if out["need"] > 0 and out["M"] > 0:
            out["surplus_new"] = out["M"] * out["share_raw"] - out["need"]
            out["operator_covered"] = out["M"] * out["share_raw"] - out["collected"]
        return out
    return buggy


def test_operator_funding_a_rounding_surplus_is_caught(monkeypatch) -> None:
    # period 1: 6 sharing members, need 32,400,001 (not a multiple of 6), the case
    # cap binds: the old rule had the operator fund a surplus of 6 x 5,400,001 - need = 5
    b, sc = build_scenario(ODD_PAYOUT)
    honest = b.ex.app.get_period(1)
    assert honest["operator_covered"] == honest["need"] - honest["collected"] > 0
    assert honest["surplus_new"] == 0 and _audit(b).ok
    monkeypatch.setattr(settlement, "compute_shares",
                        old_surplus_rule(settlement.compute_shares))
    b, sc = build_scenario(ODD_PAYOUT)
    err = _fail(b)
    assert err.height == sc.settle_heights[0]
    assert err.field == "period/1.operator_covered"
    assert (err.expected, err.found) == (honest["operator_covered"],
                                         honest["operator_covered"] + 5)


def test_notice_snapshot_bug(monkeypatch) -> None:
    original = settlement.snapshot_groups

    def buggy(ctx: Any, n: int) -> list:
        groups = original(ctx, n)
        groups[0] = {**groups[0], "members": groups[0]["members"] - 1}
        return groups

    monkeypatch.setattr(settlement, "snapshot_groups", buggy)
    b, _ = build_scenario()
    err = _fail(b)
    assert err.field == "period/1.groups"


def test_jury_verdict_bug(monkeypatch) -> None:
    monkeypatch.setattr(jury, "verdict", lambda ctx, j, *claim: "pay")
    b, _ = build_scenario()
    err = _fail(b)
    # claim 1's jury really voted pay; claim 4's appeal jury had 2 of 3 votes: no quorum
    assert err.field == "claim/4.jury.verdict"
    assert (err.expected, err.found) == ("no_quorum", "pay")


def _panel_chain(jurors: int) -> tuple[ChainBuilder, list]:
    """A denied claim appealed to a drawn panel of 3 that votes to pay."""
    params = profile("devnet")
    b = ChainBuilder({"jury": {**params["jury"], "mode": "panel", "panel_size": 3,
                               "panel_min_votes": 2}})
    g = GENESIS_MS
    m = [key(f"panel-member-{i}") for i in range(jurors + 1)]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 100 + i))
                    for i, k in enumerate(m)])
    b.commit_at(g + 11 * S, [b.tx(b.registrar, "approve_juror",
                                  {"member": k.public_key.raw, "exam_ref": bytes(32)})
                             for k in m[1:]])
    b.commit_at(g + 36 * S, [b.tx(m[0], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 35 * S, "accident": False,
        "evidence_hash": bytes(32)})])
    b.commit_at(g + 37 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": False, "report_hash": bytes(32)})])
    b.commit_at(g + 38 * S, [b.tx(m[0], "appeal_claim", {"claim_id": 1,
                                                         "reason_hash": bytes(32)})])
    b.commit_at(g + 39 * S)  # the panel is drawn with this block's seed
    panel = b.ex.app.get_claim(1)["jury"]["panel"]
    assert len(panel) == 3
    voters = [k for k in m if k.public_key.hex() in panel][:2]
    b.commit_at(g + 40 * S, [b.tx(k, "jury_vote", {"claim_id": 1, "pay": True})
                             for k in voters])
    b.commit_at(g + 60 * S)  # the window (15 s from the draw) has closed
    b.commit_at(g + 110 * S)  # settlement 2 pays it
    return b, m


@pytest.mark.parametrize("jurors", [5, 9], ids=["shuffle-small-pool", "attempts-big-pool"])
def test_panel_jury_is_rechecked(jurors: int) -> None:
    b, _ = _panel_chain(jurors)
    claim = b.ex.app.get_claim(1)
    assert claim["jury"]["verdict"] == "pay" and claim["status"] == "paid"
    report = _audit(b)
    assert report.ok, report.first_error
    assert report.stats["panels"] == 1 and report.verdicts == {"pay": 1}


def test_panel_draw_bug(monkeypatch) -> None:
    original = jury.draw_panel
    monkeypatch.setattr(jury, "draw_panel",
                        lambda ctx, c, seed, *a: original(ctx, c, seed, *a)[::-1])
    b, _ = _panel_chain(9)
    err = _fail(b)
    assert err.field == "claim/1.jury.panel"
    assert err.found == err.expected[::-1]


def waiting_chain(refund: bool = False, kv: Any = None) -> tuple[ChainBuilder, list]:
    """Issue 15: m1's accident inside the waiting period is confirmed and paid in period 1;
    m0's is denied as no accident at g+50 s, final (rule 3) when the appeal window closes at
    g+70 s, after m0 shared period 1. ``kv``: build on this store (a node's database)."""
    b = ChainBuilder(kv=kv)
    g = GENESIS_MS
    m = [key(f"waiting-member-{i}") for i in range(4)]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 200 + i))
                    for i, k in enumerate(m)])
    b.commit_at(g + 10 * S, [b.tx(m[i], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 5 * S, "accident": True,
        "evidence_hash": bytes([i]) * 32}) for i in (0, 1)])
    b.commit_at(g + 11 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 2, "approve": True, "accident": True, "report_hash": bytes(32)})])
    b.commit_at(g + 46 * S)  # notice 1, window closes, settlement 1 pays claim 2
    b.commit_at(g + 50 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": False, "accident": False, "report_hash": bytes(32)})])
    b.commit_at(g + 69 * S)
    b.commit_at(g + 70 * S)  # the appeal window closes: rule 3
    if refund:
        b.commit_at(g + 71 * S, [b.tx(b.operator, "record_refund", {
            "member": m[0].public_key.raw, "payment_ref": sha256(b"transfer")})])
        b.commit_at(g + 72 * S)  # its state root is in this header: provable
    return b, m


def test_rule_3_for_a_member_who_had_left_is_rechecked() -> None:
    """m0 leaves after its accident claim was denied as no accident; the appeal window
    then closes: rule 3 applies to the ended membership (refundable, identity barred)."""
    b = ChainBuilder()
    g = GENESIS_MS
    m = [key(f"left-waiting-{i}") for i in range(3)]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 500 + i))
                    for i, k in enumerate(m)])
    b.commit_at(g + 10 * S, [b.tx(m[0], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 5 * S, "accident": True,
        "evidence_hash": bytes(32)})])
    b.commit_at(g + 11 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": False, "accident": False, "report_hash": bytes(32)})])
    b.commit_at(g + 12 * S, [b.tx(m[0], "leave", {})])
    b.commit_at(g + 32 * S)  # the appeal window closes: rule 3 on the ended membership
    b.commit_at(g + 33 * S)
    codes = [r.code for a in b.applied for r in a.receipts]
    assert codes == ["ok"] * 6, codes
    member = b.ex.app.get_member(m[0].public_key.hex())
    assert member["status"] == "left" and member["refund"]
    report = _audit(b)
    assert report.ok, report.first_error


def test_waiting_accident_decided_after_filing_is_rechecked() -> None:
    b, m = waiting_chain(refund=True)
    assert b.ex.app.get_claim(1)["status"] == "rejected_waiting"
    assert b.ex.app.get_claim(2)["status"] == "paid"
    assert b.ex.app.get_member(m[0].public_key.hex())["status"] == "barred"
    report = _audit(b)
    assert report.ok, report.first_error
    assert report.stats["waiting_rejections"] == 1
    assert report.stats["refunds"] == 1 and report.stats["refunded_fen"] == 10


def test_waiting_rule_not_applied_at_the_appeal_close_bug(monkeypatch) -> None:
    monkeypatch.setattr(waiting, "reject", lambda ctx, c, m: None)
    b, _ = waiting_chain()
    err = _fail(b)
    assert err.height == b.height and err.field == "claim/1.status"
    assert (err.expected, err.found) == ("rejected_waiting", "denied")


def test_accident_finding_not_recorded_bug(monkeypatch) -> None:
    original = claims.assess_claim

    def buggy(ctx: Any, sender: bytes, body: dict) -> None:
        original(ctx, sender, body)
        c = ctx.claim(body["claim_id"])
        c.pop("accident_confirmed", None)
        ctx.put_claim(c)

    monkeypatch.setitem(rules.HANDLERS, "assess_claim", buggy)
    b, _ = waiting_chain()
    err = _fail(b)
    assert err.field == "claim/2.accident_confirmed"
    assert (err.expected, err.found) == (True, None)


def test_refund_amount_bug(monkeypatch) -> None:
    """The rules refund one fen too much: the audit names the member's refund_fen."""
    original = settlement.member_billed
    monkeypatch.setattr(waiting, "member_billed", lambda *a: original(*a) + 1)
    b, m = waiting_chain(refund=True)
    err = _fail(b)
    assert err.height == b.height - 1 and err.tx == 0
    assert err.field == f"member/{m[0].public_key.hex()}.refund_fen"
    assert (err.expected, err.found) == (10, 11)


def _panel_arrears_chain() -> tuple[ChainBuilder, list, int]:
    """A panel is drawn for an appeal after settlement 2 (which billed every member); one
    panelist is then put in arrears for period 2 and tries to vote, with another one."""
    params = profile("devnet")
    b = ChainBuilder({"jury": {**params["jury"], "mode": "panel", "panel_size": 3,
                               "panel_min_votes": 2}})
    g = GENESIS_MS
    m = [key(f"arrears-panel-{i}") for i in range(8)]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 200 + i))
                    for i, k in enumerate(m)])
    b.commit_at(g + 11 * S, [b.tx(b.registrar, "approve_juror",
                                  {"member": k.public_key.raw, "exam_ref": bytes(32)})
                             for k in m[1:7]])
    b.commit_at(g + 31 * S, [b.tx(m[7], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 30 * S, "accident": False,
        "evidence_hash": bytes(32)})])
    b.commit_at(g + 32 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": True, "report_hash": bytes(32)})])
    b.commit_at(g + 106 * S, [b.tx(m[0], "file_claim", {   # claim 1 paid at g + 105 s
        "disease": "deafness", "diagnosed_ms": g + 100 * S, "accident": False,
        "evidence_hash": bytes(32)})])
    b.commit_at(g + 107 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 2, "approve": False, "report_hash": bytes(32)})])
    b.commit_at(g + 108 * S, [b.tx(m[0], "appeal_claim", {"claim_id": 2,
                                                         "reason_hash": bytes(32)})])
    b.commit_at(g + 109 * S)  # the panel is drawn with this block's seed
    panel = b.ex.app.get_claim(2)["jury"]["panel"]
    seated = [k for k in m if k.public_key.hex() in panel]
    b.commit_at(g + 110 * S, [b.tx(b.registrar, "record_arrears",
                                   {"member": seated[0].public_key.raw, "period": 2})])
    b.commit_at(g + 111 * S, [b.tx(k, "jury_vote", {"claim_id": 2, "pay": True})
                              for k in seated[:2]])
    vote_height = b.height
    b.commit_at(g + 130 * S)  # the window (15 s from the draw) has closed
    return b, seated, vote_height


def test_a_panelist_in_arrears_voting_is_caught(monkeypatch) -> None:
    b, seated, vote_height = _panel_arrears_chain()
    codes = [r.code for r in b.applied[vote_height - 1].receipts]
    assert codes == ["not_a_juror", "ok"]
    assert _audit(b).ok
    # the bug: a panel seat alone lets a juror vote, eligible or not
    monkeypatch.setattr(jury, "eligible_juror", lambda m: True)
    b, seated, vote_height = _panel_arrears_chain()
    assert [r.code for r in b.applied[vote_height - 1].receipts] == ["ok", "ok"]
    err = _fail(b)
    assert err.height == vote_height and err.field == "juror"
    assert seated[0].public_key.hex() in err.what


def ended_arrears_chain() -> tuple[ChainBuilder, list]:
    """Period 2 pays m0's claim; m1 leaves after notice 2; after settlement 2 the shares
    of m1 (left), m0 (paid out) and m2 (active, pays later) are recorded unpaid."""
    b = ChainBuilder()
    g = GENESIS_MS
    m = [key(f"ended-arrears-{i}") for i in range(4)]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 300 + i))
                    for i, k in enumerate(m)])
    b.commit_at(g + 31 * S, [b.tx(m[0], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 30 * S, "accident": False,
        "evidence_hash": bytes(32)})])
    b.commit_at(g + 32 * S, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": True, "report_hash": bytes(32)})])
    b.commit_at(g + 85 * S, [b.tx(m[1], "leave", {})])
    b.commit_at(g + 106 * S, [b.tx(b.registrar, "record_arrears",
                                   {"member": k.public_key.raw, "period": 2})
                              for k in m[:3]])
    b.commit_at(g + 107 * S, [b.tx(b.registrar, "record_payment",
                                   {"member": m[2].public_key.raw, "period": 2})])
    b.commit_at(g + 170 * S)
    return b, m


def test_uncollected_shares_of_ended_members_are_rechecked(monkeypatch) -> None:
    b, m = ended_arrears_chain()
    assert {r.code for a in b.applied for r in a.receipts} == {"ok"}
    p2 = b.ex.app.get_period(2)
    assert p2["uncollected"] == 2 * p2["share"] > 0
    assert p2["collected"] == p2["M"] * p2["share"] - p2["uncollected"]
    report = _audit(b)
    assert report.ok, report.first_error
    # the bug: arrears recorded on the member but not counted in the period record
    monkeypatch.setattr(arrears, "_uncollected", lambda ctx, n, amount: None)
    b, _ = ended_arrears_chain()
    err = _fail(b)
    assert err.field == "period/2.uncollected"
    assert (err.expected, err.found) == (3 * p2["share"], 0)   # three in one block


def _minor_chain(guardian: bool) -> tuple[ChainBuilder, Any]:
    """A child (8 years old at genesis) joins, with or without a guardian's attestation."""
    b = ChainBuilder()
    child = key("minor-0")
    body = register_body(child, 400, birth="2015-06-01")
    if guardian:
        body["guardian_tag"] = tags_of(9400)[0][1]   # the parent's tag under key 1
    b.commit_at(GENESIS_MS + S, [b.tx(b.registrar, "register_member", body)])
    return b, child


def test_a_minor_admitted_without_a_guardian_is_caught(monkeypatch) -> None:
    b, _ = _minor_chain(guardian=True)
    assert [r.code for r in b.applied[-1].receipts] == ["ok"]
    assert _audit(b).ok
    # the bug: the rules forget the guardian rule (as if the genesis had no adult age)
    # and take the child's own attestation; the auditor's model reads the real genesis
    real = rules.membership.register_member

    def forgetful(ctx: Any, sender: bytes, body: dict[str, Any]) -> None:
        params = ctx.params
        ctx.params = dataclasses.replace(params, adult_age_years=None)
        try:
            real(ctx, sender, body)
        finally:
            ctx.params = params

    monkeypatch.setitem(rules.HANDLERS, "register_member", forgetful)
    b, child = _minor_chain(guardian=False)
    assert [r.code for r in b.applied[-1].receipts] == ["ok"]
    err = _fail(b)
    assert err.height == b.applied[-1].height
    assert err.field == f"member/{child.public_key.hex()}.guardian_tag"


# the upper age (rule 1, "Upper age"; issue 15 item 5) -------------------------------------

HOURLY = {"kind": "interval", "period_ms": 3_600_000, "notice_offset_ms": 20_000,
          "settlement_offset_ms": 45_000, "periods_per_year": 12}
# genesis is 2023-11-15 06:13:20 CST: born 1963-11-16, 60 at g + 64,000 s, after notice 18
# (g + 17 h + 20 s) and by notice 19 (g + 18 h + 20 s), so exit period 18
AGES_AT_19 = "1963-11-16"


def aging_chain() -> tuple[ChainBuilder, list]:
    """m0 (a juror) and m5 (cohort 15, its own group in cap year 1) reach 60 by notice 19.
    After it m0 claims for a diagnosis before the birthday (paid in period 20) and m4's
    appeal draws a panel from a pool still holding m0, who is skipped and leaves the pool."""
    params = profile("devnet")
    b = ChainBuilder({"schedule": HOURLY,
                      "jury": {**params["jury"], "mode": "panel", "panel_size": 3,
                               "panel_min_votes": 2}})
    g = GENESIS_MS
    h = 3_600_000
    m = [key(f"aging-{i}") for i in range(6)]
    births = [AGES_AT_19, "1990-01-01", "1991-01-01", "1992-01-01", "1993-01-01", AGES_AT_19]
    b.commit_at(g, [b.tx(b.registrar, "register_member", register_body(k, 400 + i, births[i]))
                    for i, k in enumerate(m[:5])])
    b.commit_at(g + 11 * S, [b.tx(b.registrar, "approve_juror",
                                  {"member": k.public_key.raw, "exam_ref": bytes(32)})
                             for k in m[:4]])
    b.commit_at(g + 13 * h + 30 * S, [b.tx(b.registrar, "register_member",
                                           register_body(m[5], 405, births[5]))])
    b.commit_at(g + 18 * h + 30 * S, [
        b.tx(m[0], "file_claim", {"disease": "deafness", "diagnosed_ms": g + 63_000 * S,
                                  "accident": False, "evidence_hash": bytes(32)}),
        b.tx(m[4], "file_claim", {"disease": "deafness", "diagnosed_ms": g + 18 * h,
                                  "accident": False, "evidence_hash": bytes(32)})])
    b.commit_at(g + 18 * h + 31 * S, [
        b.tx(b.assessor, "assess_claim", {"claim_id": 1, "approve": True,
                                          "report_hash": bytes(32)}),
        b.tx(b.assessor, "assess_claim", {"claim_id": 2, "approve": False,
                                          "report_hash": bytes(32)})])
    b.commit_at(g + 18 * h + 32 * S, [b.tx(m[4], "appeal_claim", {"claim_id": 2,
                                                                 "reason_hash": bytes(32)})])
    b.commit_at(g + 18 * h + 33 * S)  # the draw
    b.commit_at(g + 18 * h + 34 * S, [b.tx(k, "jury_vote", {"claim_id": 2, "pay": True})
                                      for k in m[:3]])
    b.commit_at(g + 19 * h + 50 * S)  # notice 20 and settlement 20 pay both claims
    b.commit_at(g + 19 * h + 51 * S)  # its state root is in this header: provable
    return b, m


def test_aging_chain_is_rechecked_by_the_audit() -> None:
    b, m = aging_chain()
    codes = [[r.code for r in a.receipts] for a in b.applied if a.receipts]
    assert ["member_not_active", "ok", "ok"] in codes          # m0 may not vote
    assert {r.code for a in b.applied for r in a.receipts} == {"ok", "member_not_active"}
    app = b.ex.app
    assert app.get_period(18)["members"] == 6 and app.get_period(19)["members"] == 4
    for k in (m[0], m[5]):
        rec = app.get_member(k.public_key.hex())
        assert (rec["status"], rec["exit_period"]) == ("aged_out", 18)
    assert app.get_claim(1)["status"] == "paid" and app.get_claim(2)["status"] == "paid"
    report = _audit(b)
    assert report.ok, report.first_error
    assert report.stats["aged_out"] == 2 and report.stats["panels"] == 1


def test_aged_out_exit_period_bug(monkeypatch) -> None:
    """The rules read an aged-out member as sharing the aging period too."""
    from contracts.rules import payout

    monkeypatch.setattr(payout, "mark_member_aged", lambda m, period: m.update(
        status="aged_out", ended_ms=period["notice_ms"], exit_period=period["n"]))
    b, m = aging_chain()
    err = _fail(b)
    assert err.field == f"member/{m[0].public_key.hex()}.exit_period"
    assert (err.expected, err.found) == (18, 19)


def test_age_out_period_recorded_wrong_bug(monkeypatch) -> None:
    from contracts.rules import membership

    original = membership.aging_period
    monkeypatch.setattr(membership, "aging_period", lambda ctx, birth: original(ctx, birth) + 1)
    b, m = aging_chain()
    err = _fail(b)
    assert err.height == 1 and err.field == f"member/{m[0].public_key.hex()}.age_out_period"
    assert (err.expected, err.found) == (19, 20)


def test_aged_out_members_left_in_m_bug(monkeypatch) -> None:
    from contracts.rules import membership

    monkeypatch.setattr(membership, "age_out", lambda ctx, n: 0)
    b, _ = aging_chain()
    err = _fail(b)
    assert err.field == "members_aged_out (period 19).count"
    assert (err.expected, err.found) == (2, 0)


def test_claim_after_the_upper_age_accepted_bug(monkeypatch) -> None:
    """A diagnosis at 60 of a disease with a lump sum at any age is accepted."""
    monkeypatch.setattr(claims, "aging_ms", lambda ctx, birth: None)

    def late(b: ChainBuilder) -> None:
        m5 = key("aging-5")
        b.commit_at(b.next_time + 1000, [b.tx(m5, "file_claim", {
            "disease": "thyroid_cancer", "diagnosed_ms": GENESIS_MS + 64_000 * S,
            "accident": False, "evidence_hash": bytes(32)})])

    b, _ = aging_chain()
    late(b)
    err = _fail(b)
    assert err.field == "claim/3.diagnosed_ms"


# identity tags and the credit attestation (issue 19, docs/privacy.md) ----------------------

TWO_KEYS = {"identity_key_ids": [1, 2]}


def _reg(b: ChainBuilder, k: Any, i: int, key_ids: tuple[int, ...] = (1,),
         birth: str = "1990-01-01", **extra: Any):
    """``register_member`` of identity ``i`` (tags under ``key_ids``); ``extra`` fields
    replace or add to the body."""
    return b.tx(b.registrar, "register_member",
                {**register_body(k, i, birth, key_ids=key_ids), **extra})


def _commit(b: ChainBuilder, time_ms: int, txs: list) -> list[str]:
    """Commit ``txs`` at ``time_ms``; a refused transaction does not use its nonce, so the
    sender's next one reuses it. Returns the receipts' codes."""
    applied = b.commit_at(time_ms, txs)
    for tx, r in zip(txs, applied.receipts, strict=True):
        if not r.ok:
            b.nonces[tx.sender] -= 1
    return [r.code for r in applied.receipts]


def _ident(b: ChainBuilder, tag: bytes) -> dict | None:
    from contracts import records
    return records.load(b.ex.app.state, records.identity_key(tag))


def _identity_chain() -> tuple[ChainBuilder, list]:
    """Two identity keys in use. m0 (identity 600) files an illness inside its waiting
    period: rule 3 bars both its tags. m1 (601) leaves and the same identity rejoins with
    a new key; the barred identity and a live one are refused."""
    b = ChainBuilder(TWO_KEYS)
    g = GENESIS_MS
    m = [key(f"ident-{i}") for i in range(5)]
    codes = [_commit(b, g, [_reg(b, m[0], 600, (1, 2)), _reg(b, m[1], 601, (1, 2)),
                            _reg(b, m[2], 602, (1, 2))])]
    codes.append(_commit(b, g + 5 * S, [b.tx(m[0], "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 4 * S, "accident": False,
        "evidence_hash": sha256(b"salt|evidence")}), b.tx(m[1], "leave", {})]))
    codes.append(_commit(b, g + 6 * S, [_reg(b, m[3], 601, (1, 2)),    # rejoins after leaving
                                        _reg(b, m[4], 600, (1, 2))]))  # barred by rule 3
    codes.append(_commit(b, g + 7 * S, [_reg(b, key("ident-again"), 602, (1, 2))]))  # live
    return b, m, codes


def test_identity_rules_on_keyed_tags_audit_clean() -> None:
    b, m, codes = _identity_chain()
    assert codes == [["ok"] * 3, ["ok", "ok"], ["ok", "identity_barred"],
                     ["identity_in_use"]], codes
    pk0, pk3 = m[0].public_key.raw, m[3].public_key.raw
    for _, tag in tags_of(600, (1, 2)):
        assert _ident(b, tag) == {"member": pk0, "status": "barred"}
    for _, tag in tags_of(601, (1, 2)):
        assert _ident(b, tag) == {"member": pk3, "status": "live"}
    report = _audit(b)
    assert report.ok, report.first_error
    assert report.stats["waiting_rejections"] == 1


def _register_with(monkeypatch, bug: Any) -> None:
    """Run ``register_member`` through ``bug(real, ctx, sender, body)`` while the chain is
    built and while it is audited (the replay runs the same contracts)."""
    real = rules.HANDLERS["register_member"]
    monkeypatch.setitem(rules.HANDLERS, "register_member",
                        lambda ctx, sender, body: bug(real, ctx, sender, body))


def test_an_admission_without_credit_passed_is_caught(monkeypatch) -> None:
    # the bug: the rules take any attestation, passed or not
    _register_with(monkeypatch, lambda real, ctx, sender, body:
                   real(ctx, sender, {**body, "credit_passed": True}))
    b = ChainBuilder()
    b.commit_at(GENESIS_MS + S, [_reg(b, key("no-credit"), 610, credit_passed=False)])
    assert [r.code for r in b.applied[-1].receipts] == ["ok"]
    err = _fail(b)
    assert (err.height, err.tx, err.field) == (b.applied[-1].height, 0, "tx.credit_passed")
    assert (err.expected, err.found) == (True, False)


def test_a_tag_missing_for_a_key_id_is_caught(monkeypatch) -> None:
    # the bug: the rules check the tags against the first identity key only
    def first_key_only(real: Any, ctx: Any, sender: bytes, body: dict) -> None:
        params = ctx.params
        ctx.params = dataclasses.replace(params, identity_key_ids=params.identity_key_ids[:1])
        try:
            real(ctx, sender, body)
        finally:
            ctx.params = params

    _register_with(monkeypatch, first_key_only)
    b = ChainBuilder(TWO_KEYS)
    k = key("one-tag")
    b.commit_at(GENESIS_MS + S, [_reg(b, k, 611, (1,))])
    assert [r.code for r in b.applied[-1].receipts] == ["ok"]
    err = _fail(b)
    assert err.field == f"member/{k.public_key.hex()}.identity_tags (key ids)"
    assert (err.expected, err.found) == ([1, 2], [1])


def _forget_idents(status: str) -> Any:
    """A bug: the rules do not see ``ident/`` records of ``status`` (barred or live)."""
    from contracts import records

    def bug(real: Any, ctx: Any, sender: bytes, body: dict) -> None:
        for _, tag in body["identity_tags"]:
            ikey = records.identity_key(bytes(tag))
            if (records.load(ctx.state, ikey) or {}).get("status") == status:
                ctx.state.delete(ikey)
        real(ctx, sender, body)
    return bug


def test_a_barred_tag_admitted_is_caught(monkeypatch) -> None:
    _register_with(monkeypatch, _forget_idents("barred"))
    b, m, codes = _identity_chain()
    assert codes[2] == ["ok", "ok"]   # m4 admitted: the bug
    err = _fail(b)
    tag1 = tags_of(600, (1, 2))[0][1]
    assert err.tx == 1
    assert (err.field, err.expected, err.found) == (f"ident/{tag1.hex()}.status", ABSENT,
                                                    "barred")
    assert m[0].public_key.hex() in err.what


def test_a_live_identity_admitted_twice_is_caught(monkeypatch) -> None:
    _register_with(monkeypatch, _forget_idents("live"))
    b, m, codes = _identity_chain()
    assert codes[3] == ["ok"]   # 602 admitted twice: the bug
    err = _fail(b)
    tag1 = tags_of(602, (1, 2))[0][1]
    assert err.height == b.applied[-1].height
    assert (err.field, err.expected, err.found) == (
        f"ident/{tag1.hex()}.member", m[2].public_key.hex(),
        key("ident-again").public_key.hex())


def test_rule_3_barring_only_one_tag_is_caught(monkeypatch) -> None:
    from contracts import records
    from contracts.rules import membership

    # the bug: rule 3 bars the identity's first tag and leaves the others live
    def first_tag_only(ctx: Any, pk: bytes, m: dict) -> None:
        tag = m["identity_tags"][0][1]
        records.store(ctx.state, records.identity_key(tag), {"member": pk, "status": "barred"})

    monkeypatch.setattr(membership, "bar_identity", first_tag_only)
    monkeypatch.setattr(waiting, "bar_identity", first_tag_only)
    b = ChainBuilder(TWO_KEYS)
    g = GENESIS_MS
    k = key("barred-once")
    b.commit_at(g, [_reg(b, k, 620, (1, 2))])
    b.commit_at(g + 5 * S, [b.tx(k, "file_claim", {
        "disease": "deafness", "diagnosed_ms": g + 4 * S, "accident": False,
        "evidence_hash": sha256(b"salt|evidence")})])
    assert b.ex.app.get_member(k.public_key.hex())["status"] == "barred"
    err = _fail(b)
    tag2 = tags_of(620, (1, 2))[1][1]
    assert (err.height, err.field) == (b.applied[-1].height, f"ident/{tag2.hex()}")
    pk = k.public_key.hex()
    assert (err.expected, err.found) == ({"member": pk, "status": "barred"},
                                         {"member": pk, "status": "live"})


def test_a_guardian_tag_equal_to_the_members_own_is_caught(monkeypatch) -> None:
    # the bug: the rules compare the guardian's tag with something else than the member's
    # tags (here: they are shown another tag, and the record keeps the one sent)
    def blind(real: Any, ctx: Any, sender: bytes, body: dict) -> None:
        real(ctx, sender, {**body, "guardian_tag": sha256(b"someone else")})
        m = ctx.member(body["member"])
        m["guardian_tag"] = body["guardian_tag"]
        ctx.put_member(body["member"], m)

    _register_with(monkeypatch, blind)
    b = ChainBuilder()
    child = key("own-guardian")
    own = tags_of(630)[0][1]
    b.commit_at(GENESIS_MS + S, [_reg(b, child, 630, birth="2015-06-01", guardian_tag=own)])
    assert [r.code for r in b.applied[-1].receipts] == ["ok"]
    err = _fail(b)
    assert err.field == f"member/{child.public_key.hex()}.guardian_tag"
    assert err.found == own.hex()


def test_a_second_identity_key_by_governance_and_a_refused_reorder() -> None:
    """set_params adds key 2 (identity_key_ids [1] -> [1, 2]); a second proposal opened
    before it passed ([1] -> [1, 3]) fails when its votes arrive, because it would drop
    key 2: the contracts and the audit's governance model agree. Registrations after the
    change carry both tags; the identity admitted under key 1 alone is still found."""
    from tests.test_audit_governance import OPS

    b = ChainBuilder(operators=True)
    g, dl = GENESIS_MS, GENESIS_MS + 3_600_000
    m = [key(f"rotation-{i}") for i in range(4)]
    codes = [_commit(b, g, [_reg(b, m[0], 640)])]
    codes.append(_commit(b, g + S, [
        b.tx(OPS[0], "propose", {"kind": "set_params", "deadline_ms": dl,
                                 "params": {"identity_key_ids": [1, 2]}, "from_period": 1}),
        b.tx(OPS[1], "propose", {"kind": "set_params", "deadline_ms": dl,
                                 "params": {"identity_key_ids": [1, 3]}, "from_period": 1})]))
    codes.append(_commit(b, g + 2 * S, [
        b.tx(OPS[i], "vote_proposal", {"proposal_id": 1, "yes": True}) for i in (1, 2)]))
    codes.append(_commit(b, g + 3 * S, [
        b.tx(OPS[i], "vote_proposal", {"proposal_id": 2, "yes": True}) for i in (0, 2)]))
    codes.append(_commit(b, g + 4 * S, [_reg(b, m[3], 642, (1, 2)),
                                        _reg(b, m[1], 640, (1, 2))]))  # live via key 1's tag
    codes.append(_commit(b, g + 5 * S, [_reg(b, m[2], 641, (1,))]))   # key 2's tag missing
    assert codes == [["ok"], ["ok", "ok"], ["ok", "ok"], ["ok", "ok"],
                     ["ok", "identity_in_use"], ["identity_keys_mismatch"]], codes
    assert b.ex.app.identity_key_ids() == [1, 2]
    from contracts import records
    prop2 = records.load(b.ex.app.state, records.proposal_key(2))
    assert (prop2["status"], prop2["code"]) == ("failed", "bad_params")
    assert [k for k, _ in b.ex.app.get_member(m[3].public_key.hex())["identity_tags"]] == [1, 2]
    report = _audit(b)
    assert report.ok, report.first_error
