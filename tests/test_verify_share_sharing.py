"""``verify-share`` on the protected sharing basis (issue 15, item 7): a member still in
their waiting period at a notice does not share in it, and a certified member record whose
cohort breaks the rule is refused as inconsistent."""

from __future__ import annotations

import pytest

from audit.verify_share import ShareVerificationError, verify_share
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
