"""Tampered and forged chains: the audit fails and names the height and the item.

Each test takes the shared scenario chain (tests/test_audit_builder.py), changes one thing
the way an attacker or a damaged disk would, and checks the first error the audit reports.
"""

from __future__ import annotations

import copy
import io
import json
from types import SimpleNamespace

import pytest

from audit import AuditFailure, MemorySource, audit, render_report
from audit.cli import run_audit as main
from chain import encoding
from chain.block import Block, txs_hash
from chain.certificate import CommitCertificate
from chain.genesis import Genesis
from chain.hashing import sha256
from tests.test_audit_builder import (
    ChainBuilder,
    build_scenario,
    key,
    rebuild_block,
    rechain,
    with_header,
)


@pytest.fixture(scope="module")
def chain() -> tuple[ChainBuilder, object]:
    return build_scenario()


def _run(b: ChainBuilder, blocks: list[bytes], certs: dict[int, bytes],
         genesis: Genesis | None = None) -> AuditFailure:
    report = audit(genesis or b.genesis, MemorySource(blocks, certs), workers=0,
                   verify_seconds=0.01)
    assert not report.ok, "the tampered chain passed the audit"
    assert report.first_error is not None
    return report.first_error


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _block_with_txs(b: ChainBuilder) -> int:
    return next(h for h, a in enumerate(b.applied, 1) if len(a.receipts) >= 2)


def test_one_byte_of_a_transaction_signature(chain) -> None:
    b, _ = chain
    h = _block_with_txs(b)
    blocks = list(b.blocks)
    tx = Block.decode(blocks[h - 1]).txs[1]
    sig_at = tx.find(b"\xc4\x40") + 2 + 10  # bin8 header of the 64-byte signature
    bad_tx = _flip(tx, sig_at)
    blocks[h - 1] = blocks[h - 1].replace(tx, bad_tx)
    err = _run(b, blocks, b.certs)
    assert (err.height, err.tx, err.field) == (h, 1, "sig")
    assert err.tx_hash == sha256(bad_tx).hex()
    assert "signature does not verify" in err.what


def test_a_jurors_vote_flipped_in_the_block(chain) -> None:
    b, sc = chain
    h = sc.jury_vote_heights[0]
    blocks = list(b.blocks)
    raw = blocks[h - 1]
    txs = Block.decode(raw).txs
    # juror m3 voted pay=True: turn it into pay=False (msgpack true 0xc3 -> false 0xc2)
    i, vote = next((i, t) for i, t in enumerate(txs)
                   if sc.m[3].public_key.raw in t and b"\xa3pay\xc3" in t)
    forged = vote.replace(b"\xa3pay\xc3", b"\xa3pay\xc2")
    blocks[h - 1] = raw.replace(vote, forged)
    err = _run(b, blocks, b.certs)
    assert (err.height, err.tx, err.field) == (h, i, "sig")


def test_a_transaction_that_no_longer_decodes(chain) -> None:
    b, _ = chain
    h = _block_with_txs(b)

    def edit(m: dict) -> None:
        m["txs"][0] = m["txs"][0] + b"\x00"

    blocks = list(b.blocks)
    blocks[h - 1] = rebuild_block(blocks[h - 1], edit)
    err = _run(b, blocks, b.certs)
    assert (err.height, err.tx, err.field) == (h, 0, "encoding")


def test_a_certificate_signature_carried_in_the_next_block(chain) -> None:
    b, _ = chain
    h = 5

    def edit(m: dict) -> None:
        sig = m["last_commit"]["sigs"][2][2]
        m["last_commit"]["sigs"][2][2] = _flip(sig, 7)

    blocks = list(b.blocks)
    blocks[h] = rebuild_block(blocks[h], edit)  # block h+1 carries block h's certificate
    err = _run(b, blocks, b.certs)
    assert err.height == h and err.field == "last_commit"
    assert "bad signature from validator 2" in err.what


def test_the_stored_certificate_of_the_last_block(chain) -> None:
    b, _ = chain
    tip = b.height
    cert = CommitCertificate.decode(b.certs[tip])
    m = cert.to_map()
    m["sigs"][0][2] = _flip(m["sigs"][0][2], 0)
    certs = dict(b.certs)
    certs[tip] = encoding.encode(m)
    err = _run(b, b.blocks, certs)
    assert err.height == tip and err.field == "certificate"
    assert "bad signature from validator 0" in err.what


def test_a_certificate_short_of_two_thirds(chain) -> None:
    b, _ = chain
    tip = b.height
    old = CommitCertificate.decode(b.certs[tip])
    short = b.certify(tip, old.block_id, old.sigs[0].timestamp, signers=[0, 3])
    certs = dict(b.certs)
    certs[tip] = short.encode()
    err = _run(b, b.blocks, certs)
    assert err.height == tip and err.field == "certificate"
    assert "not more than 2/3" in err.what


def test_a_stored_certificate_below_the_tip_is_checked_too(chain) -> None:
    b, _ = chain
    old = CommitCertificate.decode(b.certs[3])
    certs = dict(b.certs)
    certs[3] = b.certify(3, old.block_id, old.sigs[0].timestamp, signers=[1]).encode()
    err = _run(b, b.blocks, certs)
    assert err.height == 3 and err.field == "certificate"


def test_a_missing_certificate_for_the_last_block(chain) -> None:
    b, _ = chain
    certs = {h: c for h, c in b.certs.items() if h != b.height}
    err = _run(b, b.blocks, certs)
    assert err.height == b.height and "no commit certificate" in err.what


def test_forged_state_root_resigned_by_every_validator(chain) -> None:
    """All validator keys cannot make a wrong state root pass: the replay recomputes it."""
    b, sc = chain
    k = sc.settle_heights[0] + 1  # the header right after settlement 1 commits its result
    bogus = sha256(b"a better share for the operator")
    blocks, certs = rechain(b, b.blocks, b.certs, k,
                            lambda blk: with_header(blk, state_root=bogus))
    err = _run(b, blocks, certs)
    assert err.height == k and err.field == "header.state_root"
    assert err.found == bogus.hex()
    assert err.expected == b.store.state_root_after(k - 1).hex()


def test_forged_chain_dropping_a_transaction_without_the_keys(chain) -> None:
    """Removing a transaction and fixing the header changes the block id, so the next
    block's certificate no longer certifies it."""
    b, sc = chain
    h = sc.jury_vote_heights[0]
    blk = Block.decode(b.blocks[h - 1])
    txs = blk.txs[:-1]
    forged = Block(with_header(blk, txs_hash=txs_hash(list(txs))).header, txs, blk.evidence,
                   blk.last_commit)
    blocks = list(b.blocks)
    blocks[h - 1] = forged.encode()
    err = _run(b, blocks, b.certs)
    assert err.height == h and err.field == "certificate.block_id"
    assert err.found == blk.block_id().hex()


def test_forged_chain_dropping_a_transaction_resigned(chain) -> None:
    """With every key the forger can re-sign, but the state no longer adds up."""
    b, sc = chain
    h = sc.jury_vote_heights[0]

    def drop_vote(blk: Block) -> Block:
        txs = blk.txs[:-1]
        return Block(with_header(blk, txs_hash=txs_hash(list(txs))).header, txs,
                     blk.evidence, blk.last_commit)

    blocks, certs = rechain(b, b.blocks, b.certs, h, drop_vote)
    err = _run(b, blocks, certs)
    assert err.height == h + 1 and err.field == "header.state_root"


def test_a_chain_signed_by_other_validators(chain) -> None:
    """The same blocks, so the same state at every height, but every certificate signed
    by keys that are not the genesis validators': only the certificate check can catch it."""
    b, _ = chain
    forger = copy.copy(b)  # shares the executor (its sets), signs with its own keys
    forger.keys = {pub: key(f"stranger-{i}") for i, pub in enumerate(b.keys)}
    blocks, certs = rechain(forger, b.blocks, b.certs, 1, lambda blk: blk)
    # the forgery keeps the state: the same txs in order, the same header roots
    for h in range(1, b.height + 1):
        mine, theirs = Block.decode(blocks[h - 1]), Block.decode(b.blocks[h - 1])
        assert mine.txs == theirs.txs
        assert mine.header.state_root == theirs.header.state_root
    assert certs[1] != b.certs[1]
    err = _run(b, blocks, certs)
    assert err.height == 1 and err.field == "certificate"
    assert "bad signature from validator 0" in err.what


def test_a_block_served_for_the_wrong_height(chain) -> None:
    b, _ = chain
    blocks = list(b.blocks)
    blocks[4] = blocks[5]
    err = _run(b, blocks, b.certs)
    assert err.height == 5 and err.field == "header.height"


def test_report_and_json_line(chain, tmp_path, monkeypatch) -> None:
    b, _ = chain
    report = audit(b.genesis, b.source(), workers=0)
    text = render_report(report)
    assert "OK:" in text and "claims paid 2" in text and "periods       3 settled" in text
    doc = report.to_json()
    assert doc["ok"] is True and doc["first_error"] is None
    assert doc["blocks"] == b.height and doc["periods"] == 3
    assert doc["verify_per_s"] > 0

    # the command prints the report then the JSON line; --json prints the JSON alone
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    monkeypatch.setattr("audit.cli.NodeSource", lambda client: b.source())
    for as_json in (False, True):
        out, err = io.StringIO(), io.StringIO()
        args = SimpleNamespace(node="http://127.0.0.1:1", data=None, genesis=str(gpath),
                               json=as_json, timeout=5.0)
        assert main(args, out, err) == 0
        lines = out.getvalue().strip().splitlines()
        last = json.loads(lines[-1])
        assert last["ok"] is True and last["state_root"] == b.ex.state_root.hex()
        assert (len(lines) == 1) == as_json


def test_command_exit_codes_for_bad_input(tmp_path) -> None:
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(node=None, data=str(tmp_path), genesis=str(tmp_path / "none.json"),
                           json=False, timeout=1.0)
    assert main(args, out, err) == 2 and "genesis" in err.getvalue()
    b = ChainBuilder()
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    err = io.StringIO()
    args.genesis = str(gpath)
    assert main(args, out, err) == 2 and "no node database" in err.getvalue()
    err = io.StringIO()
    args.data, args.node = None, "http://127.0.0.1:9"
    assert main(args, out, err) == 1 and "cannot read" in err.getvalue()
