"""``verify-share`` on the protected sharing basis (issue 15, item 7): a member still in
their waiting period at a notice does not share in it, and a certified member record whose
cohort breaks the rule is refused as inconsistent."""

from __future__ import annotations

import pytest

from audit.verify_share import ShareVerificationError, render_share, verify_share
from client import Client
from contracts.rules import membership
from tests.test_audit_builder import MEMBERS, build_scenario
from tests.test_audit_node import FakeNode

PROTECTED = {"sharing_basis": "protected"}


def test_shares_on_the_protected_basis_match_the_rules() -> None:
    b, sc = build_scenario(PROTECTED)
    node = FakeNode(b)
    try:
        client = Client(node.url, timeout=5)
        seen = set()
        for i in range(MEMBERS):
            member = sc.m[i].public_key.hex()
            for n in (1, 2, 3):
                r = verify_share(client, b.genesis, member, n)
                want = b.ex.app.member_share(member, n)
                assert (r.shares, r.charge, r.M) == (want["shares"], want["charge"],
                                                      want["M"]), (i, n)
                seen.add(r.shares)
        assert seen == {True, False}
    finally:
        node.stop()


def test_a_cohort_that_ignores_the_waiting_period_is_inconsistent(monkeypatch) -> None:
    monkeypatch.setattr(membership, "sharing_cohort", lambda ctx, t: ctx.meta["next_notice"])
    b, sc = build_scenario(PROTECTED)
    node = FakeNode(b)
    try:
        with pytest.raises(ShareVerificationError) as info:
            verify_share(Client(node.url, timeout=5), b.genesis, sc.m[1].public_key.hex(), 1)
        assert info.value.kind == "inconsistent" and "member cohort" in info.value.reason
    finally:
        node.stop()


def test_an_aged_out_member_is_resolved_and_shares_only_before_the_upper_age() -> None:
    """Issue 15 item 5: the stored record of a member who reached 60 by notice 19 still
    says active; verify-share reads it aged_out (exit period 18), like the node."""
    from tests.test_audit_rules import aging_chain

    b, m = aging_chain()
    node = FakeNode(b)
    try:
        client = Client(node.url, timeout=5)
        member = m[5].public_key.hex()          # cohort 15: its own group in cap year 1
        r18 = verify_share(client, b.genesis, member, 18)
        assert (r18.shares, r18.status, r18.exit_period) == (True, "aged_out", 18)
        assert r18.charge == b.ex.app.member_share(member, 18)["charge"]
        r20 = verify_share(client, b.genesis, member, 20)
        assert (r20.shares, r20.charge, r20.status) == (False, 0, "aged_out")
        assert "reached the upper age" in render_share(r20)
        young = verify_share(client, b.genesis, m[1].public_key.hex(), 20)
        assert (young.shares, young.status) == (True, "active")
    finally:
        node.stop()


def test_a_wrong_age_out_period_is_inconsistent(monkeypatch) -> None:
    from tests.test_audit_rules import aging_chain

    original = membership.aging_period
    monkeypatch.setattr(membership, "aging_period", lambda ctx, birth: original(ctx, birth) + 1)
    b, m = aging_chain()
    node = FakeNode(b)
    try:
        with pytest.raises(ShareVerificationError) as info:
            verify_share(Client(node.url, timeout=5), b.genesis, m[5].public_key.hex(), 18)
        assert info.value.kind == "inconsistent" and "age_out_period" in info.value.reason
    finally:
        node.stop()
