"""Crash recovery of a real node process: SIGKILL, a damaged WAL, a wrong genesis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from chain.hashing import sha256
from client import Account
from devnet.cluster import Cluster, free_base_port

pytestmark = pytest.mark.slow


def _start_cmd(home):
    return [sys.executable, "-m", "mutual", "start", "--home", str(home)]


@pytest.fixture()
def single(tmp_path):
    c = Cluster.create(tmp_path / "net", validators=1, base_port=free_base_port(4))
    try:
        c.start(wait_s=60)
        c.wait_height(2, timeout_s=60)
        yield c
    finally:
        c.stop()


def _register(cluster: Cluster, n: int, first: int = 0) -> int:
    reg = Account(cluster.role_key("registrar"), cluster.genesis.chain_id,
                  cluster.nodes[0].client)
    height = 0
    for i in range(first, first + n):
        seed = sha256(b"recovery" + bytes([i]))
        r = reg.send("register_member", {
            "member": sha256(b"pk" + seed), "identity_tags": [[1, sha256(b"id" + seed)]],
            "birth_date": "1988-02-02", "health_commitment": seed,
            "credit_attestation": seed, "credit_passed": True}, mode="commit")
        assert r["code"] == "ok", r
        height = r["height"]
    return height


def test_sigkill_loses_nothing_committed(single):
    height = _register(single, 3)
    ids = {h: single.nodes[0].client.block(h)["block_id"] for h in range(1, height + 1)}
    single.kill(0)
    single.start_node(0)
    single.wait_ready(60, [0])
    single.wait_height(height + 2, timeout_s=60)
    client = single.nodes[0].client
    for h, block_id in ids.items():
        assert client.block(h)["block_id"] == block_id
    assert _register(single, 1, first=10) > height  # and it goes on accepting work


def test_damaged_wal_stops_the_node_until_recovered(single):
    node = single.nodes[0]
    assert single.terminate(0) == 0
    wal = node.home / "data" / "consensus.wal"
    with open(wal, "ab") as f:
        f.write(b"\x00\x00\x10\x00\xde\xad")  # a torn frame: length says 4096, 2 bytes follow
    out = subprocess.run(_start_cmd(node.home), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "recover-wal" in out.stderr and "Traceback" not in out.stderr
    rec = subprocess.run([sys.executable, "-m", "mutual", "recover-wal", "--home",
                          str(node.home)], capture_output=True, text=True, timeout=60)
    assert rec.returncode == 0, rec.stderr
    report = json.loads(rec.stdout)
    assert report["bytes_dropped"] == 6 and report["backup_path"]
    height = node.client.status()["height"] if node.alive() else None
    assert height is None
    single.start_node(0)
    single.wait_ready(60, [0])
    before = node.client.status()["height"]
    single.wait_height(before + 2, timeout_s=60)


def test_database_of_another_chain_is_refused(single, tmp_path):
    node = single.nodes[0]
    assert single.terminate(0) == 0
    other = Cluster.create(tmp_path / "other", validators=1, base_port=free_base_port(2),
                           chain_id="mutual-other")
    conf = node.home / "config.toml"
    conf.write_text(conf.read_text().replace(str(single.genesis_path),
                                             str(other.genesis_path)))
    out = subprocess.run(_start_cmd(node.home), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]  # earlier lines are the JSON log
    assert last.startswith("mutual: error:") and "genesis" in last, out.stderr
    assert "Traceback" not in out.stderr
