"""The benchmark runs at tiny sizes and ends with a parseable JSON line; its bulk loader
writes exactly what the rules' register_member would (no timing asserts)."""

from __future__ import annotations

import io
import json

from contracts.app import Application
from contracts.kv import MemoryKV
from contracts.tree import StateTree
from devnet import bench_members as members
from devnet import bench_state as bench

REQUIRED = {"apply_per_s", "verify_per_s", "apply_over_verify", "settle_ms_1k", "settle_ms_1m",
            "settle_ratio", "settle_rules_ms_1k", "settle_rules_ms_1m", "settle_rules_ratio",
            "proof_bytes_1m", "import_per_s", "peak_rss_mb"}


def test_bench_prints_json_line(tmp_path, capsys) -> None:
    rc = bench.main(["--sizes", "40,120", "--blocks", "1", "--block-txs", "20", "--claims", "4",
                     "--dir", str(tmp_path)])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result) >= REQUIRED
    assert result["sizes"] == [40, 120]
    assert set(result["per_size"]) == {"40", "120"}
    assert all(result[k] > 0 for k in REQUIRED)
    assert result["leveldb_table_reads"] == "pread" or result["leveldb_table_reads"].startswith(
        "mmap (")
    assert any(line.startswith("[120] loaded 120 members") for line in lines)
    assert list(tmp_path.iterdir()) == []  # temporary databases removed


def _state_after(n: int, bulk: bool) -> tuple[bytes, list]:
    g = members.genesis()
    kv = MemoryKV()
    tree = StateTree(kv)
    app = Application(g, tree)
    app.init_chain()
    app.begin_block(1, g.genesis_time_ms + members.LOAD_TIME, members.seed(1))
    if bulk:
        members.bulk_load(app, tree, kv, 0, n, members.MemberTemplate(g))
    else:
        for i in range(n):
            body = members.register_body(members.bulk_pk(i), members.bulk_identity(i))
            receipt = app.deliver_tx(members.signed_tx(members.REGISTRAR, "register_member", i + 1, body))
            assert receipt.ok, receipt
    app.end_block()
    batch = kv.batch()
    root = tree.commit(batch)
    kv.write(batch)
    return root, list(kv.iterate(b"v"))  # the root, and the flat copy of every value


def test_bulk_load_equals_registering_through_the_rules() -> None:
    bulk, rules = _state_after(30, bulk=True), _state_after(30, bulk=False)
    assert bulk[0] == rules[0]
    assert len(bulk[1]) > 60 and bulk[1] == rules[1]


def test_run_with_custom_output(tmp_path) -> None:
    out = io.StringIO()
    result = bench.run([30], blocks=1, per_block=10, claims=2, verify_s=0.01,
                       workdir=str(tmp_path), out=out, settle_rounds=3)
    assert "3 settlements of 2 cases each" in out.getvalue()
    assert result["settle_ratio"] == 1.0 and result["settle_rules_ratio"] == 1.0
    size = result["per_size"]["30"]
    assert len(size["settle_ms_each"]) == 3
    assert 0 < size["settle_rules_ms"] < size["settle_exec_ms"] < size["settle_ms"]
    assert size["settle_keys"] > size["settle_cases"]  # each paid claim is rewritten
    assert result["proof_bytes_1m"] <= 2048


def test_settle_rounds_beyond_the_members_who_joined_is_refused(tmp_path, capsys) -> None:
    # 1 block of 20 txs with 4 claims leaves ~12 joiners: 4 more rounds of 4 claims do not fit
    try:
        bench.main(["--sizes", "40", "--blocks", "1", "--block-txs", "20", "--claims", "4",
                    "--settle-rounds", "5", "--dir", str(tmp_path)])
    except SystemExit as e:
        assert e.code == 2
    else:  # pragma: no cover
        raise AssertionError("accepted")
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--settle-rounds must be 1 to 4 with these blocks and claims")
