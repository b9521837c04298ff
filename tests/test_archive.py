"""``mutual export`` archives: written from a stopped node's database, audited with
``mutual audit --data FILE``; a damaged or edited archive is refused or fails the audit."""

from __future__ import annotations

import json
import shutil

import pytest

from audit.archive import ArchiveError, read_archive, write_archive
from chain.block import Block
from mutual.cli import main
from node.store.kvstore import open_kv
from tests.test_audit_builder import build_scenario


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    home = tmp_path_factory.mktemp("archive-home")
    db = home / "data" / "db"
    db.parent.mkdir(parents=True)
    kv = open_kv(db)
    b, _ = build_scenario(kv=kv)
    kv.close()
    genesis = home / "genesis.json"
    b.genesis.dump(genesis)
    return home, genesis, b


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_then_audit(chain, tmp_path, capsys):
    home, genesis, b = chain
    out = tmp_path / "chain.archive"
    code, text, err = _run(capsys, "export", "--data", str(home), "--out", str(out))
    assert code == 0, err
    assert json.loads(text)["blocks"] == b.height
    records = read_archive(out)
    assert [h for h, _, _ in records] == list(range(1, b.height + 1))
    code, text, err = _run(capsys, "audit", "--data", str(out), "--genesis", str(genesis),
                           "--json")
    final = json.loads(text.strip().splitlines()[-1])
    assert code == 0 and final["ok"] and final["blocks"] == b.height, (text, err)
    code, _, err = _run(capsys, "export", "--data", str(home), "--out", str(out))
    assert code == 2 and "already exists" in err


def test_edited_archive_fails_the_audit(chain, tmp_path, capsys):
    home, genesis, b = chain
    good = tmp_path / "good.archive"
    _run(capsys, "export", "--data", str(home), "--out", str(good))
    records = read_archive(good)
    # the block edited is the one with transactions nearest the middle, chosen from the
    # data rather than hoped for (the scenario registers members, so there always is one)
    with_txs = [i for i, (_, raw, _) in enumerate(records) if Block.decode(raw).txs]
    assert with_txs, "the scenario's chain has no transactions to drop"
    victim = min(with_txs, key=lambda i: (abs(i - len(records) // 2), i))
    h, raw, cert = records[victim]
    m = Block.decode(raw).to_map()
    m["txs"] = m["txs"][:-1]  # drop a transaction: the header no longer matches
    from chain import encoding

    records[victim] = (h, encoding.encode(m), cert)
    bad = tmp_path / "bad.archive"
    write_archive(bad, iter(records))
    code, text, _ = _run(capsys, "audit", "--data", str(bad), "--genesis", str(genesis),
                         "--json")
    final = json.loads(text.strip().splitlines()[-1])
    assert code == 1 and not final["ok"] and final["first_error"]["height"] == h


def test_damaged_archive_is_refused(chain, tmp_path, capsys):
    home, genesis, _ = chain
    good = tmp_path / "good.archive"
    _run(capsys, "export", "--data", str(home), "--out", str(good))
    data = good.read_bytes()
    for name, content in (("truncated", data[:-7]), ("version", data[:15] + b"\x00\x00\x00\x09"
                                                     + data[19:])):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ArchiveError):
            read_archive(path)
        code, _, err = _run(capsys, "audit", "--data", str(path), "--genesis", str(genesis))
        assert code in (1, 2) and "archive" in err and "Traceback" not in err
    with pytest.raises(ArchiveError, match="does not follow"):
        write_archive(tmp_path / "gap.archive", iter([(2, b"x", b"y")]))


def test_export_refuses_a_missing_database(tmp_path, capsys):
    code, _, err = _run(capsys, "export", "--data", str(tmp_path), "--out",
                        str(tmp_path / "x.archive"))
    assert code == 2 and "no node database" in err
    shutil.rmtree(tmp_path, ignore_errors=True)
