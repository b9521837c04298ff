"""The audit and verify-share follow the validator set through governance changes.

The shared scenario chain is built while three validator-set changes are committed: a
fifth validator added in block 3 (signs from 5), validator 1's consensus key rotated in
block 7 (the new key signs from 9), validator 0 removed in block 12 (gone from 14). The
changes are written into the state the way the contracts record a passed proposal
(``tests.test_audit_builder.set_changes``): every header commits to its set and the next,
every certificate is signed by the set of its height.

- ``mutual audit`` replays it, checks every certificate against the set of its height
  and reports the set history; a header committing to a forged next set, a certificate
  signed with a rotated-away key, an archive whose header was edited and a database whose
  set record was edited each fail, named with their height.
- ``verify-share`` follows the set from the member's genesis through the certified change
  list (one certificate per change); a forged, omitted or uncertified change is named.
- the cost of the walk per change is measured (``test_cost_of_following_the_set``).

A second chain is governed by real ``propose``/``vote_proposal`` transactions
(``build_governed``: an added validator, a key rotation by its own operator, a fee change
from period 1, a removal) and one by evidence (a jailing): the audit passes and reports
them, verify-share proves the period's parameter version, and a contracts bug in the
tally or in the parameters a settlement reads is named by the audit's own model.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from audit import DataSource, MemorySource, audit, lightclient, render_report
from audit.archive import read_archive, write_archive
from audit.lightclient import SetFollower
from audit.signatures import POOL_MIN_TXS, SigVerifier, check_certs, set_table
from audit.sources import NodeSource
from audit.verify_share import ShareVerificationError, render_share, verify_share
from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.validators import ValidatorSet
from chain.vote import Vote, VoteType
from client import Client
from contracts import records
from contracts.kv import MemoryKV
from tests.test_audit_builder import (
    CHAIN_ID,
    ChainBuilder,
    Scenario,
    add_validator,
    key,
    rechain,
    remove_validator,
    rotate_key,
    set_changes,
    with_header,
)
from tests.test_audit_data import STATE, _edit_record, node_home_with
from tests.test_audit_node import FakeNode

NEW_VALIDATOR = key("validator-4")
ROTATED = key("validator-1-rotated")
PLAN = {3: add_validator(NEW_VALIDATOR, 10, "v4"),
        7: rotate_key(1, ROTATED),
        12: remove_validator(0)}
STARTS = [1, 5, 9, 14]


def _build(kv=None) -> tuple[ChainBuilder, Scenario]:
    b = ChainBuilder(kv=kv)
    b.add_keys(NEW_VALIDATOR, ROTATED)
    return b, Scenario(b)


@pytest.fixture(scope="module")
def gov():
    with set_changes(PLAN):
        b, sc = _build()
        node = FakeNode(b)
        try:
            yield b, sc, node
        finally:
            node.stop()


@pytest.fixture()
def fake(gov):
    _, _, node = gov
    node.changes_hook = node.bundle_hook = None
    yield node
    node.changes_hook = node.bundle_hook = None
    node.inclusive_from = False


def _fail(b: ChainBuilder, blocks: list[bytes], certs: dict[int, bytes]):
    report = audit(b.genesis, MemorySource(blocks, certs), workers=0, verify_seconds=0.01)
    assert not report.ok, "the forged chain passed the audit"
    return report.first_error


# ---- the chain itself -----------------------------------------------------------------

def test_the_chain_changes_its_set_as_planned(gov) -> None:
    b, _, _ = gov
    app = b.ex.app
    assert app.validator_set_heights() == STARTS
    assert b.height > STARTS[-1] + 2
    assert len(app.validators_at(4)) == 4 and len(app.validators_at(5)) == 5
    assert app.validators_at(9)[1].pub_key == ROTATED.public_key.raw
    assert app.validators_at(8)[1].pub_key == key("validator-1").public_key.raw
    assert NEW_VALIDATOR.public_key.raw in [v.pub_key for v in app.validators_at(14).validators]
    assert key("validator-0").public_key.raw not in [
        v.pub_key for v in app.validators_at(14).validators]
    # headers commit to the set of their height and the next
    for h in (4, 8, 13):
        hdr = Block.decode(b.blocks[h - 1]).header
        assert hdr.validators_hash == app.validators_at(h).hash()
        assert hdr.next_validators_hash == app.validators_at(h + 1).hash()
        assert hdr.next_validators_hash != hdr.validators_hash


# ---- mutual audit -----------------------------------------------------------------------

def test_audit_follows_the_set_and_reports_its_history(gov) -> None:
    b, _, _ = gov
    report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert report.ok, report.first_error
    hist = report.validator_sets
    assert [e["height"] for e in hist] == STARTS
    assert [e["hash"] for e in hist] == [b.ex.app.validators_at(h).hash().hex()
                                         for h in STARTS]
    assert [e["validators"] for e in hist] == [4, 5, 5, 4]
    assert [c["kind"] for e in hist for c in e["changes"]] == ["add", "rotate_key", "remove"]
    assert hist[1]["committed_in"] == 3
    text = render_report(report)
    assert "3 change(s) of the set" in text
    assert f"from height 9      {hist[2]['hash'][:16]}" in text
    assert "rotate_key index 1" in text and "add name v4" in text
    assert report.to_json()["validator_sets"] == hist


def test_a_certificate_is_checked_against_the_set_of_its_height() -> None:
    # the same certificate of block 10 passes against the set of 10 and fails against
    # the genesis set (index 1 is another key there)
    with set_changes(PLAN):
        b, _ = _build()
    cert = b.certs[10]
    block_id = CommitCertificate.decode(cert).block_id
    now, then = b.ex.app.validators_at(10), b.genesis.validators
    jobs = [(("stored", 10), cert, 10, block_id, now.hash()),
            (("carried", 10), cert, 10, block_id, then.hash())]
    bad = check_certs(CHAIN_ID, set_table([now, then]), jobs)
    assert list(bad) == [("carried", 10)]
    assert "validator 1" in bad[("carried", 10)]


def test_a_header_committing_to_a_forged_next_set(gov) -> None:
    b, _, _ = gov
    forged = b.ex.app.validators_at(4)  # block 4 should commit to the 5-validator set
    blocks, certs = rechain(b, b.blocks, b.certs, 4,
                            lambda blk: with_header(blk, next_validators_hash=forged.hash()))
    err = _fail(b, blocks, certs)
    assert (err.height, err.field) == (4, "header.next_validators_hash")
    assert err.expected == b.ex.app.validators_at(5).hash().hex()
    assert err.found == forged.hash().hex()
    assert "forged validator change" in err.what


def test_a_rotated_away_key_signs_nothing_after_the_switch(gov) -> None:
    b, _, _ = gov
    h = 10
    block_id = Block.decode(b.blocks[h - 1]).block_id()
    vset = b.ex.app.validators_at(h)
    ts = CommitCertificate.decode(b.certs[h]).sigs[0].timestamp
    old_key = key("validator-1")
    votes = [Vote(VoteType.PRECOMMIT, h, 0, block_id, ts, i).signed(
        old_key if i == 1 else b.keys[vset[i].pub_key], CHAIN_ID) for i in range(len(vset))]
    forged = CommitCertificate.from_votes(votes).encode()
    blocks = list(b.blocks)
    raw = encoding.decode(blocks[h], max_size=1 << 24)  # block h+1 carries block h's
    raw["last_commit"] = encoding.decode(forged)
    blocks[h] = encoding.encode(raw)
    err = _fail(b, blocks, b.certs)
    assert (err.height, err.field) == (h, "last_commit")
    assert "validator 1" in err.what


def test_an_archive_whose_change_was_edited(gov, tmp_path) -> None:
    b, _, _ = gov
    path = tmp_path / "chain.archive"
    write_archive(path, ((h, b.blocks[h - 1], b.certs[h]) for h in range(1, b.height + 1)))
    recs = read_archive(path)
    # the forger points block 8's header at a set in which validator 1 keeps its key
    kept = b.ex.app.validators_at(8)
    blk = Block.decode(recs[7][1])
    recs[7] = (8, with_header(blk, next_validators_hash=kept.hash()).encode(), recs[7][2])
    write_archive(path, iter(recs))
    from audit.cli import _open_source

    source = _open_source(type("A", (), {"data": str(path), "node": None})())
    report = audit(b.genesis, source, workers=0, verify_seconds=0.01)
    assert not report.ok
    err = report.first_error
    assert (err.height, err.field) == (8, "header.next_validators_hash")
    assert err.expected == b.ex.app.validators_at(9).hash().hex()
    assert err.found == kept.hash().hex()


def test_a_database_whose_set_record_was_edited(tmp_path_factory) -> None:
    with set_changes(PLAN):
        home, (b, _) = node_home_with(tmp_path_factory, _build)
        # the database claims validator 1 kept its key at the rotation
        _edit_record(home, STATE + b"v" + records.vset_key(9), lambda r: r["validators"][1]
                     .update(pub_key=key("validator-1").public_key.raw))
        source = DataSource(home)
        try:
            report = audit(b.genesis, source, workers=0, verify_seconds=0.01)
        finally:
            source.close()
    assert not report.ok
    err = report.first_error
    assert err.field == "vset/9.validators[1].pub_key"
    assert "validator set from height 9" in err.what
    assert err.expected == ROTATED.public_key.raw.hex()


def test_audit_over_http_compares_the_served_change_list(gov, fake) -> None:
    b, _, node = gov
    report = audit(b.genesis, NodeSource(_client(node)), workers=0, verify_seconds=0.01)
    assert report.ok, report.first_error

    def forge(changes: list[dict]) -> list[dict]:
        changes[1]["hash"] = "00" * 32
        return changes

    node.changes_hook = forge
    report = audit(b.genesis, NodeSource(_client(node)), workers=0, verify_seconds=0.01)
    assert not report.ok
    err = report.first_error
    assert err.field == "validators/changes[1]" and err.height == 9
    assert err.found == {"height": 9, "hash": "00" * 32}


def test_the_signature_pool_checks_each_certificate_against_its_own_set() -> None:
    from chain.tx import Transaction

    with set_changes(PLAN):
        b, _ = _build()
    sender = key("pool-sender")
    txs = [Transaction.create(sender, CHAIN_ID, "leave", i + 1, {}).encode()
           for i in range(POOL_MIN_TXS)]
    cert = b.certs[10]
    block_id = CommitCertificate.decode(cert).block_id
    now, then = b.ex.app.validators_at(10), b.genesis.validators
    jobs = [(("stored", 10), cert, 10, block_id, now.hash()),
            (("carried", 10), cert, 10, block_id, then.hash())]
    verifier = SigVerifier(b.genesis, workers=1)
    try:
        tx_checks, bad = verifier.submit(txs, jobs, set_table([now, then])).result()
        assert verifier.used_pool
    finally:
        verifier.close()
    assert tx_checks == [None] * len(txs)
    assert list(bad) == [("carried", 10)]


# ---- verify-share -----------------------------------------------------------------------

def _client(node: FakeNode) -> Client:
    return Client(node.url, timeout=5)


def _reject(gov, kind: str = "validators") -> ShareVerificationError:
    b, sc, node = gov
    with pytest.raises(ShareVerificationError) as info:
        verify_share(_client(node), b.genesis, sc.m[1].public_key.hex(), 1)
    assert info.value.kind == kind, info.value
    return info.value


def test_verify_share_after_two_set_changes_and_a_key_rotation(gov, fake) -> None:
    b, sc, node = gov
    for member in (1, 2, 5):
        for period in (1, 2):
            mid = sc.m[member].public_key.hex()
            report = verify_share(_client(node), b.genesis, mid, period)
            want = b.ex.app.member_share(mid, period)
            assert report.charge == want["charge"], (member, period)
            assert report.set_changes == 3
            assert report.validators_hash == b.ex.app.validators_at(report.height).hash().hex()
            assert report.total_power == 40 and report.signed_power == 40
    text = render_share(report)
    assert "followed from genesis through 3 change(s), one certificate each" in text


@pytest.mark.parametrize("inclusive", [False, True])
def test_the_walk_pages_through_the_list(gov, fake, monkeypatch, inclusive) -> None:
    b, sc, node = gov
    monkeypatch.setattr(lightclient, "PAGE", 2)  # (a repeated entry needs room)
    node.inclusive_from = inclusive
    before = node.requests
    report = verify_share(_client(node), b.genesis, sc.m[1].public_key.hex(), 1)
    assert report.set_changes == 3
    walk_requests = node.requests - before - 4  # the proofs: period, member, claim, prev
    assert walk_requests >= 2  # more than one page


def test_a_forged_change_is_named(gov, fake) -> None:
    def forge(changes: list[dict]) -> list[dict]:
        # the node claims validator 1 kept its key (the rotation at 9 never happened)
        changes[1]["validators"][1]["pub_key"] = key("validator-1").public_key.hex()
        changes[1]["hash"] = None
        return changes

    fake.changes_hook = forge
    err = _reject(gov)
    assert "change at height 9" in err.reason and "forged" in err.reason


def test_an_omitted_change_is_named(gov, fake) -> None:
    fake.changes_hook = lambda changes: [c for c in changes if c["height"] != 5]
    err = _reject(gov)
    assert "change at height 9" in err.reason and "leaves out an earlier change" in err.reason


def test_an_omitted_last_change_is_named(gov, fake) -> None:
    fake.changes_hook = lambda changes: changes[:-1]
    err = _reject(gov)
    assert "leaves out a change between heights 10 and" in err.reason


def test_a_change_certified_by_a_short_certificate(gov, fake) -> None:
    b, _, _ = gov

    def short(changes: list[dict]) -> list[dict]:
        cert = CommitCertificate.decode(bytes.fromhex(changes[0]["certificate"]))
        m = cert.to_map()
        m["sigs"] = m["sigs"][:2]
        changes[0]["certificate"] = encoding.encode(m).hex()
        return changes

    fake.changes_hook = short
    err = _reject(gov)
    assert "change at height 5" in err.reason and "certificate of block 4" in err.reason


def test_an_uncertified_change_cannot_be_used(gov, fake) -> None:
    def uncertified(changes: list[dict]) -> list[dict]:
        changes[1]["header"] = changes[1]["certificate"] = None
        return changes

    fake.changes_hook = uncertified
    err = _reject(gov)
    assert "leaves out a change between heights 6 and" in err.reason


# ---- the cost of the walk ---------------------------------------------------------------

def measure_walk(changes: int) -> tuple[float, float, int]:
    """Build a chain with ``changes`` power changes, serve it, walk it as verify-share
    does; (ms per change walked including the HTTP fetch, ms per change checking, walked)."""
    def toggle(old):  # one validator's power 10 <-> 11: a real change, far under 1/3
        i = len(old.validators) and (old.total_power % 4)
        vals = list(old.validators)
        vals[i] = replace(vals[i], power=21 - vals[i].power)
        return ValidatorSet(vals), [{"kind": "power", "index": i, "power": vals[i].power}]

    plan = {h: toggle for h in range(1, changes + 1)}
    with set_changes(plan):
        b = ChainBuilder(kv=MemoryKV())
        for _ in range(changes + 3):
            b.commit()
        node = FakeNode(b)
        try:
            follower = SetFollower(b.genesis)
            client = _client(node)
            follower.walk(lambda start, limit: client.validator_changes(start, limit))
        finally:
            node.stop()
    return (follower.seconds * 1000 / follower.walked,
            follower.check_seconds * 1000 / follower.walked, follower.walked)


def test_cost_of_following_the_set(capsys) -> None:
    t0 = time.perf_counter()
    per_change, checking, walked = measure_walk(40)
    assert walked == 40
    # one certificate (4 signatures) per change: milliseconds, not seconds
    assert 0 < checking <= per_change < 250
    with capsys.disabled():
        print(f"\nverify-share set walk: {walked} changes, {per_change:.2f} ms per change "
              f"({checking:.2f} ms checking the certificate and hashes), built and walked "
              f"in {(time.perf_counter() - t0) * 1000:.0f} ms")



# ---- real governance transactions (contracts/rules/governance.py) ------------------------

OPS = [key(f"operator-{i}") for i in range(4)]
NEW_OPERATOR = key("operator-4")
G0 = 1_700_000_000_000
DL = G0 + 3_600_000


def build_governed(votes_for_add: tuple[int, ...] = (1, 2)) -> tuple[ChainBuilder, list]:
    """A chain governed by transactions: validator v4 added (proposed in block 2, signs
    from 4), validator 1's key rotated by its own operator (block 4, from 6), the fee
    raised to 10% from period 1 (block 5), validator 3 removed (block 7, from 9); then
    an accident claim is paid in period 1 under the new fee."""
    from tests.test_audit_builder import register_body

    b = ChainBuilder(operators=True)
    b.add_keys(NEW_VALIDATOR, ROTATED)
    m = [key(f"member-{i}") for i in range(7)]
    b.commit_at(G0, [b.tx(b.registrar, "register_member", register_body(k, i))
                     for i, k in enumerate(m)])
    add = {"kind": "add_validator", "deadline_ms": DL, "pub_key": NEW_VALIDATOR.public_key.raw,
           "power": 10, "node_key": key("node-4").public_key.raw, "name": "v4",
           "operator": NEW_OPERATOR.public_key.raw}
    b.commit([b.tx(OPS[0], "propose", add)]
             + [b.tx(OPS[i], "vote_proposal", {"proposal_id": 1, "yes": True})
                for i in votes_for_add])
    b.commit()
    b.commit([b.tx(OPS[1], "propose", {
        "kind": "rotate_key", "deadline_ms": DL, "pub_key": key("validator-1").public_key.raw,
        "new_pub_key": ROTATED.public_key.raw})])
    b.commit([b.tx(OPS[0], "propose", {"kind": "set_params", "deadline_ms": DL,
                                       "params": {"fee_bps": 1000}, "from_period": 1})]
             + [b.tx(OPS[i], "vote_proposal", {"proposal_id": 3, "yes": True})
                for i in (1, 2, 3)])
    b.commit()
    b.commit([b.tx(OPS[0], "propose", {"kind": "remove_validator", "deadline_ms": DL,
                                       "pub_key": key("validator-3").public_key.raw})]
             + [b.tx(op, "vote_proposal", {"proposal_id": 4, "yes": True})
                for op in (OPS[1], OPS[2], NEW_OPERATOR)])
    b.commit_at(G0 + 12_000, [b.tx(m[0], "file_claim", {
        "disease": "malignant_tumor", "diagnosed_ms": G0 + 5_000, "accident": True,
        "evidence_hash": b"\x01" * 32})])
    b.commit_at(G0 + 13_000, [b.tx(b.assessor, "assess_claim", {
        "claim_id": 1, "approve": True, "accident": True, "report_hash": b"\x02" * 32})])
    b.commit_at(G0 + 20_000)          # notice 1
    b.commit_at(G0 + 45_000)          # settlement 1 pays claim 1
    b.commit_at(G0 + 46_000)
    return b, m


@pytest.fixture(scope="module")
def governed():
    with set_changes({}):  # no test-only changes: only the transactions change the set
        b, m = build_governed()
        codes = [r.code for a in b.applied for r in a.receipts]
        assert set(codes) == {"ok"}, codes
        node = FakeNode(b)
        try:
            yield b, m, node
        finally:
            node.stop()


def test_audit_of_a_chain_governed_by_transactions(governed) -> None:
    b, _, _ = governed
    app = b.ex.app
    assert app.validator_set_heights() == [1, 4, 6, 9]
    assert app.get_period(1)["F"] == app.get_period(1)["P"] * 1000 // 10_000 > 0
    report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert report.ok, report.first_error
    hist = report.validator_sets
    assert [e["height"] for e in hist] == [1, 4, 6, 9]
    assert [c["kind"] for e in hist for c in e["changes"]] == [
        "add_validator", "rotate_key", "remove_validator"]
    assert [c["proposal"] for e in hist for c in e["changes"]] == [1, 2, 4]
    assert report.stats["fees_fen"] == app.get_period(1)["F"]


def test_verify_share_after_governed_changes_with_the_period_parameters(governed) -> None:
    b, m, node = governed
    node.params_hook = None
    report = verify_share(_client(node), b.genesis, m[1].public_key.hex(), 1)
    want = b.ex.app.member_share(m[1].public_key.hex(), 1)
    assert report.charge == want["charge"] and report.fee_bps == 1000
    assert (report.params_version, report.params_source) == (1, "proven")
    assert report.set_changes == 3
    assert "parameters of period 1: version 1 (proven from the state)" in render_share(report)


def test_verify_share_refuses_a_forged_parameter_version(governed) -> None:
    b, m, node = governed

    def forge(doc: dict) -> dict:
        bundle = next(p for p in doc["proofs"] if p["key"] != b"paramh".hex())
        rec = encoding.decode(bytes.fromhex(bundle["value"]))
        rec["params"]["fee_bps"] = 800
        bundle["value"] = encoding.encode(rec).hex()
        return doc

    node.params_hook = forge
    try:
        with pytest.raises(ShareVerificationError) as info:
            verify_share(_client(node), b.genesis, m[1].public_key.hex(), 1)
    finally:
        node.params_hook = None
    assert info.value.kind == "proof" and "parameter version 1" in info.value.reason


def test_a_proposal_the_contracts_pass_without_two_thirds_is_named(monkeypatch) -> None:
    from contracts.rules import governance

    real = governance.tally

    def generous(vset, prop):  # a bug: every yes vote counted twice
        yes, total = real(vset, prop)
        return 2 * yes, total

    monkeypatch.setattr(governance, "tally", generous)
    with set_changes({}):
        b, _ = build_governed(votes_for_add=(1,))   # 20 of 40: not more than 2/3
        report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert not report.ok
    err = report.first_error
    assert (err.height, err.field) == (2, "prop/1.status")
    assert (err.expected, err.found) == ("open", "passed")


def test_a_period_settled_with_the_wrong_parameters_is_named(monkeypatch) -> None:
    from contracts.rules import paramhist

    # a bug: settlement reads the genesis parameters whatever the history says
    monkeypatch.setattr(paramhist.ParamHistory, "params_at",
                        lambda self, state, n: self.genesis)
    with set_changes({}):
        b, _ = build_governed()
        report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert not report.ok
    err = report.first_error
    assert err.field == "period/1.F"
    assert err.expected == err.found * 1000 // 800


def test_a_jailing_from_block_evidence_is_audited() -> None:
    from chain.evidence import DuplicateVoteEvidence

    with set_changes({}):
        b = ChainBuilder(operators=True)
        for _ in range(3):
            b.commit()
        # validator 2 precommitted two blocks at height 2, round 0
        blk = Block.decode(b.blocks[1])
        ts = CommitCertificate.decode(b.certs[2]).sigs[0].timestamp
        votes = [Vote(VoteType.PRECOMMIT, 2, 0, bid, ts, 2).signed(key("validator-2"), CHAIN_ID)
                 for bid in (blk.block_id(), b"\x07" * 32)]
        ev = DuplicateVoteEvidence.create(*votes)
        b.commit(evidence=(ev,))                     # block 4: jailed from 6
        for _ in range(3):
            b.commit()
        assert b.ex.app.validator_set_heights() == [1, 6]
        report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert report.ok, report.first_error
    jail = report.validator_sets[1]
    assert (jail["height"], jail["validators"], jail["committed_in"]) == (6, 3, 4)
    assert jail["changes"] == [{"kind": "jail", "pub_key": key("validator-2").public_key.hex(),
                                "evidence": ev.hash().hex(), "offence_height": 2}]
    assert "jail pub_key" in render_report(report)


def test_a_long_set_history_is_shortened_in_the_readable_report() -> None:
    from audit.report import SETS_SHOWN, render_validator_sets

    hist = [{"height": 1 + 3 * i, "hash": f"{i:064x}", "validators": 4, "total_power": 40,
             "committed_in": max(0, 3 * i - 1),
             "changes": [] if i == 0 else [{"kind": "set_power", "proposal": i}]}
            for i in range(SETS_SHOWN + 11)]
    lines = render_validator_sets(hist)
    assert lines[0].startswith(f"  validators    {SETS_SHOWN + 10} change(s)")
    assert "genesis" in lines[1] and "10 earlier change(s)" in lines[2]
    assert len(lines) == 3 + SETS_SHOWN
    assert lines[-1].startswith(f"    from height {hist[-1]['height']}")
    assert "set_power proposal" in lines[-1]
