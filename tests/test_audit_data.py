"""``mutual audit --data``: a node database (LevelDB, the node's own layout), audited
through a private copy; tampered state values, period shares, jurors' votes, tree nodes,
receipts, roots, block bytes and the records of issue 15 (a refund, an accident finding,
uncollected shares, an aging notice) are each found and named; a database held by a running
process is refused with a clear error.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from audit import AuditFailure, DataSource, SourceError, audit, find_db_dir
from chain.block import Block
from contracts import records
from node.store.kvstore import open_kv
from tests.test_audit_builder import ChainBuilder, Scenario, build_scenario, register_body

STATE = b"state/"


def node_home_with(tmp_path_factory, build: Any) -> tuple[Path, Any]:
    """A node home whose database holds the chain ``build(kv)`` makes; what it returned."""
    home = tmp_path_factory.mktemp("node-home")
    db = home / "data" / "db"
    db.parent.mkdir(parents=True)
    kv = open_kv(db)
    try:
        return home, build(kv)
    finally:
        kv.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, ChainBuilder, Scenario]:
    home, (b, sc) = node_home_with(tmp_path_factory, lambda kv: build_scenario(kv=kv))
    return home, b, sc


@pytest.fixture()
def node_home(template, tmp_path) -> Path:
    home, _, _ = template
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    return copy


def _db(home: Path) -> Path:
    return home / "data" / "db"


def _audit(home: Path, b: ChainBuilder):
    source = DataSource(home)
    try:
        return audit(b.genesis, source, workers=0, verify_seconds=0.01)
    finally:
        source.close()


def _fail(home: Path, b: ChainBuilder) -> AuditFailure:
    report = _audit(home, b)
    assert not report.ok, "the tampered database passed the audit"
    assert report.first_error is not None
    return report.first_error


def _edit_record(home: Path, raw_key: bytes, edit) -> None:
    kv = open_kv(_db(home), create_if_missing=False)
    try:
        rec = msgpack.unpackb(kv.get(raw_key), raw=False)
        edit(rec)
        batch = kv.batch()
        batch.put(raw_key, msgpack.packb(rec, use_bin_type=True))
        kv.write(batch, sync=True)
    finally:
        kv.close()


def test_clean_database_passes_and_is_never_written(template, node_home) -> None:
    _, b, _ = template
    before = {p.name: p.read_bytes() for p in _db(node_home).iterdir() if p.is_file()}
    report = _audit(node_home, b)
    assert report.ok, report.first_error
    assert report.blocks == b.height and report.periods == 3
    after = {p.name: p.read_bytes() for p in _db(node_home).iterdir() if p.is_file()}
    assert before == after
    # any of the three spellings of the location works
    assert find_db_dir(node_home) == find_db_dir(node_home / "data") == find_db_dir(
        _db(node_home))


def test_a_state_value(template, node_home) -> None:
    _, b, sc = template
    pk = sc.m[1].public_key.raw
    _edit_record(node_home, STATE + b"v" + records.member_key(pk),
                 lambda r: r.update(credit_attestation=bytes(32)))
    err = _fail(node_home, b)
    assert err.height == b.height
    assert err.field == f"member/{pk.hex()}.credit_attestation"
    assert (err.expected, err.found) == (register_body(sc.m[1], 1)["credit_attestation"].hex(),
                                         bytes(32).hex())


def test_a_periods_share(template, node_home) -> None:
    _, b, _ = template
    _edit_record(node_home, STATE + b"v" + records.period_key(1),
                 lambda r: r.update(share=r["share"] + 1))
    err = _fail(node_home, b)
    assert err.field == "period/1.share"
    assert err.found == err.expected + 1


def test_a_jurors_vote_record(template, node_home) -> None:
    _, b, sc = template
    pk = sc.m[3].public_key.raw
    _edit_record(node_home, STATE + b"v" + records.vote_key(1, pk), lambda r: r.update(pay=False))
    err = _fail(node_home, b)
    assert err.field == f"vote/1/{pk.hex()}.pay"
    assert (err.expected, err.found) == (True, False)


def test_a_tree_leaf_value(template, node_home) -> None:
    """The flat copy is intact but a tree node (what proofs are built from) is altered."""
    _, b, _ = template
    from contracts.proof import key_hash

    kh = key_hash(records.period_key(1))
    kv = open_kv(_db(node_home), create_if_missing=False)
    try:
        current = kv.get(STATE + b"v" + records.period_key(1))
        target = next(k for k, v in kv.prefixed(STATE).iterate(b"n")
                      if v[:1] == b"\x00" and v[1:33] == kh and v[65:] == current)
        rec = kv.get(STATE + target)
        batch = kv.batch()
        batch.put(STATE + target, rec[:-1] + bytes([rec[-1] ^ 1]))
        kv.write(batch, sync=True)
    finally:
        kv.close()
    err = _fail(node_home, b)
    assert "leaf of period/1" in err.what and "does not match its hash" in err.what


def test_a_stored_receipt(template, node_home) -> None:
    _, b, sc = template
    h = sc.jury_vote_heights[0]
    key = b"receipts/" + h.to_bytes(8, "big") + (1).to_bytes(4, "big")
    _edit_record(node_home, key, lambda r: r.update(code="window_closed"))
    err = _fail(node_home, b)
    assert (err.height, err.tx, err.field) == (h, 1, "receipt.code")


def test_a_stored_state_root(template, node_home) -> None:
    _, b, _ = template
    kv = open_kv(_db(node_home), create_if_missing=False)
    batch = kv.batch()
    batch.put(b"results/" + (4).to_bytes(8, "big"), b"\x11" * 32)
    kv.write(batch, sync=True)
    kv.close()
    err = _fail(node_home, b)
    assert err.height == 4 and err.field == "results.state_root"


def test_one_byte_of_a_transaction_on_disk(template, node_home) -> None:
    _, b, sc = template
    h = sc.jury_vote_heights[0]
    key = b"blocks/" + h.to_bytes(8, "big")
    kv = open_kv(_db(node_home), create_if_missing=False)
    raw = kv.get(key)
    tx = Block.decode(raw).txs[0]
    at = raw.find(tx) + tx.find(b"\xc4\x40") + 2 + 30
    batch = kv.batch()
    batch.put(key, raw[:at] + bytes([raw[at] ^ 0x80]) + raw[at + 1:])
    kv.write(batch, sync=True)
    kv.close()
    err = _fail(node_home, b)
    assert (err.height, err.tx, err.field) == (h, 0, "sig")


def test_a_certificate_signature_on_disk(template, node_home) -> None:
    _, b, _ = template
    h = 6
    key = b"certs/" + h.to_bytes(8, "big")
    kv = open_kv(_db(node_home), create_if_missing=False)
    raw = kv.get(key)
    at = len(raw) - 5  # inside the last signature
    batch = kv.batch()
    batch.put(key, raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1:])
    kv.write(batch, sync=True)
    kv.close()
    err = _fail(node_home, b)
    assert err.height == h and err.field == "certificate"
    assert "bad signature from validator 3" in err.what


def test_a_database_held_by_a_running_process_is_refused(template, node_home) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, plyvel; db = plyvel.DB(sys.argv[1]); print('open', flush=True);"
         " time.sleep(60)", str(_db(node_home))],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"open"
        with pytest.raises(SourceError, match="in use by a running node"):
            DataSource(node_home)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # once the holder is gone the same directory audits fine
    deadline = time.monotonic() + 5
    while True:
        try:
            DataSource(node_home).close()
            break
        except SourceError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the records issue 15 added (rule 3's finding and refund, rule 8's uncollected, the
# upper age), tampered in a node's database -----------------------------------------------

@pytest.fixture(scope="module")
def waiting_template(tmp_path_factory) -> tuple[Path, ChainBuilder, list]:
    from tests.test_audit_rules import waiting_chain

    home, (b, m) = node_home_with(tmp_path_factory,
                                  lambda kv: waiting_chain(refund=True, kv=kv))
    return home, b, m


@pytest.mark.parametrize("what", ["refund_fen", "accident_confirmed", "uncollected",
                                  "age_out_period"])
def test_the_new_records_tampered(waiting_template, tmp_path, what: str) -> None:
    home, b, m = waiting_template
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    assert _audit(copy, b).ok
    pk = m[0].public_key.raw
    key, field, edit = {
        "refund_fen": (records.member_key(pk), f"member/{pk.hex()}.refund_fen",
                       lambda r: r.update(refund_fen=r["refund_fen"] + 1)),
        "accident_confirmed": (records.claim_key(1), "claim/1.accident_confirmed",
                               lambda r: r.update(accident_confirmed=True)),
        "uncollected": (records.period_key(1), "period/1.uncollected",
                        lambda r: r.update(uncollected=r["uncollected"] + 1)),
        "age_out_period": (records.member_key(pk), f"member/{pk.hex()}.age_out_period",
                           lambda r: r.update(age_out_period=r["age_out_period"] + 1)),
    }[what]
    _edit_record(copy, STATE + b"v" + key, edit)
    err = _fail(copy, b)
    assert err.field == field, (err.field, err.what)
