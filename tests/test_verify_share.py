"""``mutual verify-share`` and ``audit.verify_share.verify_share``: a member checks their own
share from proof bundles and commit certificates, against their own genesis file.

The honest answers agree with ``Application.member_share`` for every member and period;
forged or stale proofs, short certificates, root or key mismatches, a JSON record that
is not the proven value, and a foreign validator set are each rejected with their kind.
"""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from audit.verify_share import (
    ShareReport,
    ShareVerificationError,
    main,
    render_share,
    verify_bundle,
    verify_share,
)
from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.crypto import PrivateKey
from chain.genesis import Genesis
from client import Client
from contracts.rules import settlement
from tests.test_audit_builder import MEMBERS, build_scenario
from tests.test_audit_node import FakeNode
from tests.test_audit_rules import ODD_PAYOUT, ended_arrears_chain, old_surplus_rule


@pytest.fixture(scope="module")
def world():
    b, sc = build_scenario()
    node = FakeNode(b)
    try:
        yield b, sc, node
    finally:
        node.stop()


@pytest.fixture()
def fake(world):
    _, _, node = world
    node.bundle_hook = None
    yield node
    node.bundle_hook = None


def _client(node: FakeNode) -> Client:
    return Client(node.url, timeout=5)


def _reject(world, member: str, period: int, kind: str) -> ShareVerificationError:
    b, _, node = world
    with pytest.raises(ShareVerificationError) as info:
        verify_share(_client(node), b.genesis, member, period)
    assert info.value.kind == kind, info.value
    return info.value


def test_every_members_share_matches_the_rules(world, fake) -> None:
    b, sc, _ = world
    seen_charge = False
    for i in range(MEMBERS):
        member = sc.m[i].public_key.hex()
        for n in (1, 2, 3):
            r = verify_share(_client(fake), b.genesis, member, n)
            want = b.ex.app.member_share(member, n)
            assert r.charge == want["charge"], (i, n)
            assert r.shares == want["shares"]
            for name in ("P", "F", "S", "M", "need", "share_raw", "case_cap", "share",
                         "annual_cap", "cases", "operator_covered", "surplus_new"):
                assert getattr(r, name) == want[name], (i, n, name)
            assert r.signed_power == 40 and r.height == b.height
            seen_charge = seen_charge or r.charge > 0
    assert seen_charge
    text = render_share(verify_share(_client(fake), b.genesis, sc.m[1].public_key.hex(), 1))
    assert "P = 30,000,000 fen" in text and "charge = min(share, cap - ytd) = 10" in text


def _edit(kind: str, ident: str | None, fn):
    def hook(k: str, i: str, bundle: dict) -> dict:
        return fn(dict(bundle)) if k == kind and (ident is None or i == ident) else bundle
    return hook


def test_forged_period_value(world, fake) -> None:
    _, sc, _ = world

    def forge(bundle: dict) -> dict:
        rec = encoding.decode(bytes.fromhex(bundle["value"]))
        rec["share"] -= 1
        bundle["value"] = encoding.encode(rec).hex()
        bundle["record"] = {**bundle["record"], "share": rec["share"]}
        return bundle

    fake.bundle_hook = _edit("periods", "1", forge)
    err = _reject(world, sc.m[1].public_key.hex(), 1, "proof")
    assert "forged or stale" in err.reason


def test_stale_proof_against_a_newer_header(world, fake) -> None:
    """A proof made against an older root, presented with the latest certified header."""
    b, sc, _ = world
    old_root = Block.decode(b.blocks[sc.settle_heights[0] + 1]).header.state_root
    _, tree = b.ex.view_at(old_root)
    member = sc.m[1].public_key.raw
    key = b"member/" + member

    def stale(bundle: dict) -> dict:
        bundle["value"] = tree.get(key).hex()
        bundle["proof"] = tree.prove(key).encode().hex()
        return bundle

    fake.bundle_hook = _edit("members", None, stale)
    _reject(world, member.hex(), 1, "proof")


def _bundle_at(b, height: int, key: bytes) -> dict:
    block = Block.decode(b.blocks[height - 1])
    _, tree = b.ex.view_at(block.header.state_root)
    value = tree.get(key)
    return {"record": None, "key": key.hex(), "value": None if value is None else value.hex(),
            "proof": tree.prove(key).encode().hex(),
            "state_root": block.header.state_root.hex(), "height": height,
            "header": block.header.encode().hex(), "certificate": b.certs[height].hex()}


def test_a_member_record_older_than_the_settlement_is_stale(world, fake) -> None:
    b, sc, _ = world
    member = sc.m[3].public_key.raw  # left after period 1: exit_period appears later
    fake.bundle_hook = _edit("members", None,
                             lambda _: _bundle_at(b, 3, b"member/" + member))
    err = _reject(world, member.hex(), 2, "stale")
    assert "before period 2 settled" in err.reason


def test_a_period_proven_before_its_settlement(world, fake) -> None:
    b, sc, _ = world
    h = sc.settle_heights[1]  # the header of block h holds the state before settlement 2
    fake.bundle_hook = _edit("periods", "2",
                             lambda _: _bundle_at(b, h, b"period/" + (2).to_bytes(8, "big")))
    err = _reject(world, sc.m[1].public_key.hex(), 2, "not_settled")
    assert "'noticed'" in err.reason


def test_a_certificate_short_of_two_thirds(world, fake) -> None:
    b, sc, _ = world

    def short(bundle: dict) -> dict:
        cert = CommitCertificate.decode(bytes.fromhex(bundle["certificate"]))
        two = b.certify(cert.height, cert.block_id, cert.sigs[0].timestamp, signers=[0, 1])
        bundle["certificate"] = two.encode().hex()
        return bundle

    fake.bundle_hook = _edit("members", None, short)
    err = _reject(world, sc.m[1].public_key.hex(), 1, "certificate")
    assert "not more than 2/3" in err.reason


def test_a_root_that_is_not_the_headers(world, fake) -> None:
    _, sc, _ = world
    fake.bundle_hook = _edit("periods", None, lambda bd: {**bd, "state_root": "ee" * 32})
    _reject(world, sc.m[1].public_key.hex(), 1, "root")


def test_a_proof_for_another_key(world, fake) -> None:
    b, sc, _ = world
    other = b"member/" + sc.m[2].public_key.raw
    fake.bundle_hook = _edit("members", None, lambda _: _bundle_at(b, b.height, other))
    _reject(world, sc.m[1].public_key.hex(), 1, "key")


def test_a_json_record_that_is_not_the_proven_value(world, fake) -> None:
    _, sc, _ = world

    def lie(bundle: dict) -> dict:
        bundle["record"] = {**bundle["record"], "share": 1}
        return bundle

    fake.bundle_hook = _edit("periods", "1", lie)
    err = _reject(world, sc.m[1].public_key.hex(), 1, "record")
    assert "share" in err.reason


def test_a_forged_claim_amount(world, fake) -> None:
    _, sc, _ = world

    def forge(bundle: dict) -> dict:
        rec = encoding.decode(bytes.fromhex(bundle["value"]))
        rec["amount"] += 100
        bundle["value"] = encoding.encode(rec).hex()
        bundle["record"] = None
        return bundle

    fake.bundle_hook = _edit("claims", "1", forge)
    _reject(world, sc.m[1].public_key.hex(), 1, "proof")


def test_another_validator_set_is_not_trusted(world, fake) -> None:
    b, sc, node = world
    doc = json.loads(json.dumps(b.genesis.doc))
    doc["validators"][1]["pub_key"] = PrivateKey(b"\x05" * 32).public_key.hex()
    doc["validators"][2]["pub_key"] = PrivateKey(b"\x06" * 32).public_key.hex()
    with pytest.raises(ShareVerificationError) as info:
        verify_share(_client(node), Genesis.from_doc(doc), sc.m[1].public_key.hex(), 1)
    # the chain's headers name a set that the member's genesis never led to
    assert info.value.kind == "validators"
    assert "leaves out a change between heights 2 and" in info.value.reason


def test_bad_input_and_unknown_member(world, fake) -> None:
    _, _, node = world
    _reject(world, "zz", 1, "malformed")
    _reject(world, PrivateKey(b"\x03" * 32).public_key.hex(), 1, "record")
    _reject(world, PrivateKey(b"\x03" * 32).public_key.hex(), 0, "malformed")


def test_command_accepts_and_rejects(world, fake, tmp_path) -> None:
    b, sc, node = world
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    args = SimpleNamespace(node=node.url, genesis=str(gpath),
                           member=sc.m[1].public_key.hex(), period=1, timeout=5.0)
    out, err = io.StringIO(), io.StringIO()
    assert main(args, out, err) == 0
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith(f"member {sc.m[1].public_key.hex()}, period 1: charge 10 fen")
    assert json.loads(lines[-1])["charge"] == 10
    # the scenario's set never changed: genesis' set, no change walked, genesis params
    assert any("followed from genesis through 0 change(s)" in line for line in lines)
    doc = json.loads(lines[-1])
    assert (doc["set_changes"], doc["params_version"]) == (0, 0)
    assert doc["validators_hash"] == b.genesis.validators.hash().hex()
    fake.bundle_hook = _edit("periods", None, lambda bd: {**bd, "state_root": "ee" * 32})
    out, err = io.StringIO(), io.StringIO()
    assert main(args, out, err) == 1
    assert "REJECTED (root)" in err.getvalue()
    assert json.loads(out.getvalue())["ok"] is False
    args.genesis = str(tmp_path / "missing.json")
    assert main(args, io.StringIO(), io.StringIO()) == 2


def test_command_bad_input_exits_2_with_one_line(world, fake, tmp_path) -> None:
    """A malformed member id or period is the caller's mistake, not a rejected share:
    exit 2 and one line (as ``mutual audit`` does), nothing asked of the node."""
    b, sc, node = world
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    before = node.requests
    for member, period, says in (("xyz", 1, "member id 'xyz' is not 64 hex"),
                                 (sc.m[1].public_key.hex(), 0, "period must be 1 or more"),
                                 (sc.m[1].public_key.hex(), -3, "period must be 1 or more")):
        args = SimpleNamespace(node=node.url, genesis=str(gpath), member=member,
                               period=period, timeout=5.0)
        out, err = io.StringIO(), io.StringIO()
        assert main(args, out, err) == 2, err.getvalue()
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mutual verify-share: error: ")
        assert says in lines[0] and "REJECTED" not in lines[0]
        assert out.getvalue() == ""
    assert node.requests == before
    # the library keeps its documented kind for the same input
    _reject(world, "xyz", 1, "malformed")


def test_command_against_a_url_that_is_not_the_api(world, tmp_path) -> None:
    from tests.test_audit_node import HANDSHAKE, GarbageServer

    b, sc, _ = world
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    server = GarbageServer(HANDSHAKE)
    try:
        args = SimpleNamespace(node=server.url, genesis=str(gpath),
                               member=sc.m[1].public_key.hex(), period=1, timeout=5.0)
        out, err = io.StringIO(), io.StringIO()
        assert main(args, out, err) == 1
    finally:
        server.stop()
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mutual verify-share: REJECTED (node)")
    assert "did not answer as the node's HTTP API" in lines[0]
    assert json.loads(out.getvalue())["kind"] == "node"


def _report(**changes) -> ShareReport:
    base = dict(member="ab" * 32, period=2, shares=False, charge=0, cohort=3,
                exit_period=None, group=None, P=100, F=8, fee_bps=800, S=0, need=108, M=2,
                cases=1, share_raw=54, case_cap=1000, share=54, annual_cap=5000,
                ytd_before=None, ytd_after=None, operator_covered=0, surplus_new=0,
                claims=[{"id": 1, "amount": 100}], height=9, block_id="cd" * 32,
                state_root="ef" * 32, signed_power=40, total_power=40)
    base.update(changes)
    return ShareReport(**base)


def test_render_a_member_who_does_not_share(world, fake) -> None:
    text = render_share(_report())
    line = [ln for ln in text.splitlines() if "does not share" in ln][0]
    assert "None" not in text
    assert line == ("  the member does not share in period 2 (cohort 3, sharing from period 3 "
                    "on; has not left): charge 0")
    left = render_share(_report(period=3, cohort=1, exit_period=2))
    assert "(cohort 1; left, sharing up to period 2): charge 0" in left
    # the member of the scenario who left after period 1, as proven from the node
    b, sc, _ = world
    r = verify_share(_client(fake), b.genesis, sc.m[3].public_key.hex(), 2)
    assert not r.shares and r.exit_period == 1
    assert "left, sharing up to period 1" in render_share(r)


def test_a_member_record_that_lags_its_payout_is_read_through_it(world, fake) -> None:
    """The settlement that paid claim 1 did not rewrite its claimant's record: the proven
    value still says active, and the claim and the period that paid it, proven too, end
    the membership at the payout (docs/rules.md, "Payouts")."""
    b, _, node = world
    claimant = b.ex.app.get_claim(1)["member"]
    shown = _client(node).member(claimant, proof=True)
    stored = encoding.decode(bytes.fromhex(shown["value"]))
    assert stored["status"] == "active" and stored["open_claim"] == 1
    assert shown["record"]["status"] == "paid_out"
    resolved = b.ex.app.get_member(claimant)
    r = verify_share(_client(fake), b.genesis, claimant, 3)
    assert r.exit_period == resolved["exit_period"] == 1 and not r.shares and r.charge == 0
    assert verify_share(_client(fake), b.genesis, claimant, 1).shares


def test_proven_records_that_do_not_fit_the_payout_rule_are_inconsistent(world, fake) -> None:
    b, sc, _ = world
    key = b"period/" + (1).to_bytes(8, "big")
    bundle = _bundle_at(b, b.height, key)
    with pytest.raises(ShareVerificationError) as info:
        verify_bundle(bundle, b.genesis, key, "period 1", lambda r: r["no such field"])
    assert info.value.kind == "inconsistent" and "payout rule" in info.value.reason


def test_a_recorded_refund_is_re_derived_from_the_proven_periods() -> None:
    """Issue 15 item 4: the refund on a barred member's record is what the proven period
    records say they were billed; one fen more is rejected."""
    from audit.verify_share import check_refund
    from contracts import records
    from contracts.rules import payout
    from tests.test_audit_rules import waiting_chain

    b, m = waiting_chain(refund=True)
    node = FakeNode(b)
    try:
        report = verify_share(_client(node), b.genesis, m[0].public_key.hex(), 1)
    finally:
        node.stop()
    assert (report.refund_fen, report.refund_arrears_fen, report.refundable) == (10, 0, False)
    assert report.charge == 10
    assert "refund recorded (waiting-period rule): 10 fen" in render_share(report)
    state = b.ex.app.state
    rec = payout.load_member(state, m[0].public_key.raw)
    load = payout.loader(state)
    check_refund(rec, load, b.ex.app.schedule, "member")
    with pytest.raises(ShareVerificationError) as info:
        check_refund({**rec, "refund_fen": 11}, load, b.ex.app.schedule, "member")
    assert info.value.kind == "inconsistent" and "refund_fen" in info.value.reason
    assert records.load(state, records.period_key(1))["status"] == "settled"


def test_an_operator_funded_rounding_surplus_is_inconsistent(monkeypatch) -> None:
    """A chain whose period 1 (case cap binding, need not a multiple of M) has the
    operator fund a rounding surplus too: the certified record breaks rule 6."""
    monkeypatch.setattr(settlement, "compute_shares",
                        old_surplus_rule(settlement.compute_shares))
    b, sc = build_scenario(ODD_PAYOUT)
    monkeypatch.undo()
    node = FakeNode(b)
    try:
        with pytest.raises(ShareVerificationError) as info:
            verify_share(_client(node), b.genesis, sc.m[1].public_key.hex(), 1)
    finally:
        node.stop()
    assert info.value.kind == "inconsistent"
    assert "operator_covered" in info.value.reason


def test_uncollected_shares_are_shown_and_checked() -> None:
    b, m = ended_arrears_chain()
    node = FakeNode(b)
    try:
        r = verify_share(_client(node), b.genesis, m[1].public_key.hex(), 2)
        assert r.shares and r.charge == r.share > 0
        assert r.uncollected == 2 * r.share
        assert f"billed but unpaid (advanced by the operator) {r.uncollected:,}" in (
            render_share(r))

        def forge(bundle: dict) -> dict:   # honest proof, dishonest JSON is caught
            bundle["record"] = {**bundle["record"], "uncollected": 0}
            return bundle

        node.bundle_hook = _edit("periods", "2", forge)
        with pytest.raises(ShareVerificationError) as info:
            verify_share(_client(node), b.genesis, m[1].public_key.hex(), 2)
        assert info.value.kind == "record"
    finally:
        node.stop()
