"""Units of the auditor: the signed payload cut from transaction bytes, readable state
keys, the progress display on a terminal and in a log, and the signature process pool
(which must find the same bad signature as the inline check, and fall back inline if it
breaks)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from audit import ABSENT, AuditFailure, MemorySource, audit
from audit.archive import write_archive
from audit.cli import run_audit as main
from audit.compare import first_difference, key_name
from audit.progress import Progress
from audit.signatures import check_txs, signing_payload_of
from chain.block import Block
from chain.crypto import PrivateKey
from chain.tx import Transaction
from contracts import records
from tests.test_audit_builder import ChainBuilder, key, register_body

VECTORS = Path(__file__).parent / "vectors" / "transactions.json"


def test_payload_cut_from_bytes_equals_the_encoded_payload_for_every_vector() -> None:
    doc = json.loads(VECTORS.read_text())
    for v in doc["vectors"]:
        raw = bytes.fromhex(v["signed_hex"])
        tx = Transaction.decode(raw)
        assert signing_payload_of(tx, raw) == tx.signing_payload() == bytes.fromhex(
            v["unsigned_hex"])


@settings(max_examples=60, deadline=None)
@given(type_=st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
       nonce=st.integers(1, 2**64 - 1),
       body=st.dictionaries(st.text(max_size=8), st.binary(max_size=80) | st.integers(0, 9),
                            max_size=4))
def test_payload_cut_matches_for_any_type_nonce_and_body(type_, nonce, body) -> None:
    tx = Transaction.create(PrivateKey(b"\x02" * 32), "c", type_, nonce, body)
    raw = tx.encode()
    assert signing_payload_of(Transaction.decode(raw), raw) == tx.signing_payload()
    assert check_txs("c", [raw]) == [None]


def test_key_names() -> None:
    pk = bytes(range(32))
    assert key_name(records.period_key(3)) == "period/3"
    assert key_name(records.member_key(pk)) == f"member/{pk.hex()}"
    assert key_name(records.vote_key(7, pk)) == f"vote/7/{pk.hex()}"
    assert key_name(records.arrears_queue_key(2, 5)) == "arrq/2/5"
    assert key_name(records.META_KEY) == "meta"


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_progress_bar_on_a_terminal_and_lines_in_a_log() -> None:
    clock = _Clock()
    tty = io.StringIO()
    p = Progress(100, stream=tty, tty=True, clock=clock)
    clock.t = 1.0
    p.update(25, 500)
    assert tty.getvalue().startswith("\r[#######-") and "25/100 blocks" in tty.getvalue()
    assert "25 blocks/s" in tty.getvalue() and "ETA 00:03" in tty.getvalue()
    p.finish()
    assert tty.getvalue().endswith("\n")

    log = io.StringIO()
    p = Progress(100, stream=log, tty=False, clock=clock, line_interval=5)
    for i in range(1, 101):
        clock.t += 0.5
        p.update(i, i * 10)
    p.finish()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert 9 <= len(lines) <= 12 and all(line.startswith("audit: ") for line in lines)
    assert lines[-1].startswith("audit: 100/100 blocks 100.0%")

    quiet = io.StringIO()
    p = Progress(10, stream=quiet, enabled=False, clock=clock)
    p.update(5, 5, force=True)
    p.finish()
    assert quiet.getvalue() == ""


def _big_chain() -> ChainBuilder:
    b = ChainBuilder()
    for blk in range(2):
        b.commit([b.tx(b.registrar, "register_member", register_body(key(f"p{blk}-{i}"),
                                                                      blk * 1000 + i))
                  for i in range(300)])
    b.commit([])
    return b


def test_process_pool_checks_signatures_like_the_inline_check() -> None:
    b = _big_chain()
    report = audit(b.genesis, b.source(), workers=1, verify_seconds=0.01)
    assert report.ok and report.pooled and report.txs == 600
    blocks = list(b.blocks)
    raw = blocks[1]
    tx = Block.decode(raw).txs[123]
    at = raw.find(tx) + tx.find(b"\xc4\x40") + 2 + 9
    blocks[1] = raw[:at] + bytes([raw[at] ^ 4]) + raw[at + 1:]
    bad = audit(b.genesis, MemorySource(blocks, b.certs), workers=1, verify_seconds=0.01)
    assert not bad.ok and bad.pooled
    assert (bad.first_error.height, bad.first_error.tx, bad.first_error.field) == (2, 123, "sig")


def test_a_field_on_one_side_only_is_absent_not_none() -> None:
    name, want, got = first_difference({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {}})
    assert (name, want, got) == ("b.c", 2, ABSENT)
    name, want, got = first_difference({"a": 1}, {"a": 1, "z": None})
    assert name == "z" and want is ABSENT and got is None
    err = AuditFailure(4, "differs", field=name, expected=want, found=got)
    # a value that is really null is shown as null, a missing one as (absent); both are
    # always in the JSON when the finding has values
    assert err.to_json() == {"height": 4, "what": "differs", "field": "z",
                             "expected": "(absent)", "found": None}
    assert err.describe() == "height 4: differs; field z; expected (absent), found null"
    err = AuditFailure(4, "differs", field="results.state_root", expected="ab", found=None)
    assert err.to_json()["found"] is None and err.to_json()["expected"] == "ab"
    assert "None" not in err.describe()
    plain = AuditFailure(4, "no values", field="x")
    assert "expected" not in plain.to_json() and "expected" not in plain.describe()


def test_data_that_is_neither_a_data_directory_nor_an_archive(tmp_path) -> None:
    b = ChainBuilder()
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    other = tmp_path / "other.json"
    other.write_text('{"not": "a chain"}')
    for path, says in ((other, "is neither"), (tmp_path, "is neither"),
                       (tmp_path / "nowhere", "no such file or directory")):
        out, err = io.StringIO(), io.StringIO()
        args = SimpleNamespace(node=None, data=str(path), genesis=str(gpath), json=True,
                               timeout=1.0)
        assert main(args, out, err) == 2
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mutual audit: error: "), lines
        assert says in lines[0] and str(path) in lines[0]
        if says == "is neither":
            assert ("--data must be a node's data directory or an archive made by "
                    "`mutual export`") in lines[0]


def test_a_work_dir_that_cannot_hold_the_replay_is_one_line(tmp_path) -> None:
    b = ChainBuilder()
    b.commit([])
    gpath = tmp_path / "genesis.json"
    b.genesis.dump(gpath)
    archive = tmp_path / "chain.archive"
    write_archive(archive, [(1, b.blocks[0], b.certs[1])])
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for work in (tmp_path / "nowhere", a_file):
        out, err = io.StringIO(), io.StringIO()
        args = SimpleNamespace(node=None, data=str(archive), genesis=str(gpath), json=True,
                               timeout=1.0, work_dir=str(work))
        assert main(args, out, err) == 2
        lines = err.getvalue().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mutual audit: error: --work-dir "), lines
        assert out.getvalue() == ""
