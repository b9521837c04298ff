"""The audit's model of who shares (sharing_basis, docs/rules.md rule 6) names the field a
rule bug breaks, and passes an honest chain on either basis (issue 15, item 7)."""

from __future__ import annotations

from typing import Any

from audit import audit
from contracts.rules import membership, settlement
from tests.test_audit_builder import build_scenario

PROTECTED = {"sharing_basis": "protected"}


def _audit(b):
    return audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)


def test_honest_chain_on_the_protected_basis_passes() -> None:
    b, _ = build_scenario(PROTECTED)
    first = b.ex.app.get_period(1)
    joined = build_scenario()[0].ex.app.get_period(1)
    assert first["M"] < joined["M"]          # members still waiting do not share
    report = _audit(b)
    assert report.ok, report.first_error


def test_a_member_put_in_the_joined_cohort_is_named(monkeypatch) -> None:
    monkeypatch.setattr(membership, "sharing_cohort", lambda ctx, t: ctx.meta["next_notice"])
    b, _ = build_scenario(PROTECTED)
    report = _audit(b)
    assert not report.ok
    err = report.first_error
    assert err.field.startswith("member/") and err.field.endswith(".cohort")
    assert err.found == err.expected - 1


def test_a_snapshot_counting_waiting_members_is_named(monkeypatch) -> None:
    monkeypatch.setattr(settlement, "waiting_cohorts", lambda *a: range(0))
    b, _ = build_scenario(PROTECTED)
    report = _audit(b)
    assert not report.ok
    err = report.first_error
    assert err.field == "period/1.groups"
    found: Any = err.found
    assert sum(g["members"] for g in found) > sum(g["members"] for g in err.expected)
