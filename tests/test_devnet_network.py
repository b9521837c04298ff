"""A 4-validator network of real node processes on loopback.

Transactions committed on all nodes with identical roots; a SIGKILLed validator does not
stop the others and comes back without double-signing; a late node syncs from genesis;
an unknown peer key is refused; bad API input changes nothing; a stopped node loses no
committed block. Every wait is bounded and every process is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.request

import pytest

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.keyfile import read_key
from client import Account, Client, ClientError
from devnet.cluster import Cluster, free_base_port

pytestmark = pytest.mark.slow


def register_body(member: PrivateKey, i: int) -> dict:
    return {
        "member": member.public_key.raw,
        "identity_tags": [[1, sha256(b"identity" + i.to_bytes(4, "big"))]],
        "birth_date": "1990-01-01",
        "health_commitment": sha256(b"health" + i.to_bytes(4, "big")),
        "credit_attestation": sha256(b"credit" + i.to_bytes(4, "big")),
        "credit_passed": True,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    data = tmp_path_factory.mktemp("devnet")
    c = Cluster.create(data, validators=4, base_port=free_base_port(12))
    try:
        c.start(wait_s=60)
        c.wait_height(1, timeout_s=60)
        yield c
    finally:
        c.stop()
        for node in c.nodes:
            assert not node.alive()


def _roots_at(cluster: Cluster, height: int) -> set[str]:
    roots = set()
    for node in cluster.nodes:
        if not node.alive():
            continue
        block = node.client.block(height)
        roots.add(block["header"]["state_root"])
    return roots


def test_transactions_commit_everywhere_with_identical_roots(cluster):
    genesis = cluster.genesis
    registrar = Account(cluster.role_key("registrar"), genesis.chain_id, cluster.nodes[0].client)
    members = [PrivateKey(sha256(b"m" + bytes([i]))) for i in range(5)]
    first = registrar.build("register_member", register_body(members[0], 0))
    results = [registrar.client.submit(first, mode="sync")]
    results += [registrar.send("register_member", register_body(m, i), mode="sync")
                for i, m in enumerate(members[1:-1], start=1)]
    assert all(r["code"] == "ok" for r in results), results
    last = registrar.send("register_member", register_body(members[-1], 4), mode="commit")
    assert last["code"] == "ok" and last["height"] >= 1, last
    height = last["height"]
    cluster.wait_height(height + 1, timeout_s=30)
    for node in cluster.nodes:
        for m in members:
            assert node.client.member(m.public_key.hex())["id"] == m.public_key.hex()
        tx = node.client.tx(results[0]["hash"])
        assert tx["receipt"]["code"] == "ok"
    # block h+1's header carries the state root after block h: identical on all nodes
    assert len(_roots_at(cluster, height + 1)) == 1
    # replaying the exact bytes is refused on every node and changes nothing
    for node in cluster.nodes:
        with pytest.raises(ClientError) as info:
            Client(node.url).submit(first, mode="sync")
        assert info.value.status == 400
        assert info.value.code in ("duplicate", "nonce_too_low"), info.value
    # a second registration of the same identity passes the mempool but is refused by the
    # rules in the block, with a receipt, and no member record appears
    dup = registrar.send("register_member", {**register_body(members[0], 0),
                                             "member": PrivateKey.generate().public_key.raw},
                         mode="commit")
    assert dup["code"] not in ("ok", "timeout") and dup["height"], dup


def test_bad_api_input_is_refused_and_changes_nothing(cluster):
    node = cluster.nodes[2]
    before = node.client.status()
    cases = [
        ("POST", "/txs", b"\x00\x01garbage", "application/msgpack", 400),
        ("POST", "/txs", b"{not json", "application/json", 400),
        ("POST", "/txs", b'{"tx": "!!!"}', "application/json", 400),
        ("POST", "/txs", '{"tx": ".\u0084"}'.encode(), "application/json", 400),
        ("POST", "/txs", b'[1, 2]', "application/json", 400),
        ("POST", "/txs/batch", '{"txs": ["\u009e"]}'.encode(), "application/json", 400),
        ("POST", "/txs/batch", b'{"txs": "abc"}', "application/json", 400),
        ("POST", "/txs/batch", b"\x91\x01", "application/msgpack", 400),
        ("POST", "/txs/batch", b"\x90", "application/msgpack", 400),
        ("POST", "/txs", b"", "application/msgpack", 400),
        ("POST", "/txs", b"x", "text/plain", 415),
        ("POST", "/txs?mode=bogus", b"x", "application/msgpack", 400),
        ("POST", "/txs", b"\x00" * (2 * 1024 * 1024), "application/msgpack", 413),
        ("GET", "/blocks/0", None, None, 400),
        ("GET", "/blocks/abc", None, None, 400),
        ("GET", "/blocks/99999999", None, None, 404),
        ("GET", "/txs/zz", None, None, 400),
        ("GET", "/txs/" + "00" * 32, None, None, 404),
        ("GET", "/accounts/xyz", None, None, 400),
        ("GET", "/members/nothex", None, None, 400),
        ("GET", "/members/" + "11" * 32, None, None, 404),
        ("GET", "/members/" + "11" * 32 + "/shares/99999999999999999999999", None, None, 400),
        ("GET", "/members/" + "11" * 32 + "/shares/1", None, None, 404),
        ("GET", "/periods/99999999999999999999?proof=true", None, None, 400),
        ("GET", "/periods/-1", None, None, 400),
        ("GET", "/claims/abc", None, None, 400),
        ("GET", "/claims/99999", None, None, 404),
        ("GET", "/members/" + "00" * 32 + "?proof=maybe", None, None, 400),
        ("GET", "/nowhere", None, None, 404),
    ]
    for method, path, body, ctype, status in cases:
        req = urllib.request.Request(node.url + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                code, payload = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, payload = exc.code, exc.read()
        assert code == status, (path, code, payload[:200])
        err = json.loads(payload)
        assert {"error", "message"} <= set(err) and err["message"], err
    after = node.client.status()
    assert after["mempool_txs"] == before["mempool_txs"]
    assert node.client.health()["ok"]


def test_status_metrics_openapi(cluster):
    node = cluster.nodes[0]
    status = node.client.status()
    assert status["chain_id"] == "mutual-devnet" and len(status["peers"]) == 3
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert "mutual_height" in text and "mutual_peers 3.0" in text
    with urllib.request.urlopen(node.url + "/openapi.json", timeout=10) as resp:
        spec = json.loads(resp.read())
    assert "/txs" in spec["paths"] and spec["openapi"].startswith("3.")
    vals = node.client.validators()
    assert len(vals["validators"]) == 4


def test_unknown_peer_key_is_refused(cluster):
    from p2p.errors import PeerRefused
    from p2p.network import Network

    # The stranger has everything right but its key: the same chain id, the same genesis
    # hash, and node 0's key in its own allow-list (so it accepts node 0's hello). The
    # only thing left for node 0 to refuse is the stranger's key, and it must say so.
    stranger = PrivateKey.generate()
    target = read_key(cluster.nodes[0].home / "node_key.json").public_key.raw

    async def attempt() -> None:
        net = Network(cluster.genesis.chain_id, stranger, genesis_hash=cluster.genesis.hash,
                      listen=None, allowed={target})
        await net.start()
        try:
            await asyncio.wait_for(net.connect("127.0.0.1", cluster.nodes[0].p2p_port), 10)
        finally:
            await net.stop()

    with pytest.raises(PeerRefused) as refused:
        asyncio.run(attempt())
    assert refused.value.reason == "not_allowed"
    assert stranger.public_key.hex() in refused.value.message
    assert len(cluster.nodes[0].client.status()["peers"]) == 3


def test_kill_restart_catch_up_no_double_sign(cluster):
    victim = 3
    h0 = max(n.client.status()["height"] for n in cluster.nodes)
    cluster.kill(victim)
    others = [0, 1, 2]
    cluster.wait_height(h0 + 3, timeout_s=60, indices=others)
    cluster.start_node(victim)
    cluster.wait_ready(60, [victim])
    target = max(cluster.nodes[i].client.status()["height"] for i in others) + 1
    cluster.wait_height(target, timeout_s=60)
    # same blocks everywhere
    ids = {cluster.nodes[i].client.block(target)["block_id"] for i in range(4)}
    assert len(ids) == 1
    # no evidence of equivocation by anyone, in any block so far
    for h in range(1, target + 1):
        assert cluster.nodes[0].client.block(h)["evidence"] == []
    # the restarted validator signs again: it appears in later certificates
    deadline = time.monotonic() + 60
    signed = False
    while time.monotonic() < deadline and not signed:
        latest = cluster.nodes[0].client.status()["height"]
        cert = cluster.nodes[0].client.block(latest)["certificate"]
        signed = any(s[0] == victim for s in cert["sigs"])
        if not signed:
            time.sleep(0.5)
    assert signed


def test_stopped_node_loses_no_committed_block(cluster):
    node = 1
    height = cluster.nodes[node].client.status()["height"]
    block_id = cluster.nodes[node].client.block(height)["block_id"]
    assert cluster.terminate(node) == 0
    cluster.start_node(node)
    cluster.wait_ready(60, [node])
    status = cluster.nodes[node].client.status()
    assert status["height"] >= height
    assert cluster.nodes[node].client.block(height)["block_id"] == block_id


def test_late_node_syncs_from_genesis(cluster, tmp_path):
    """A full node (no validator key) joining late replays every block via block sync."""
    from node import config as cfg

    home = tmp_path / "late"
    home.mkdir()
    key = PrivateKey.generate()
    from chain.keyfile import write_key

    write_key(home / "node_key.json", key)
    base = free_base_port(2)
    config = cfg.Config(home=home)
    config.node.moniker = "late"
    config.node.genesis_file = str(cluster.genesis_path)
    config.node.validator_key_file = ""
    config.api.listen = f"127.0.0.1:{base}"
    config.p2p.listen = f"127.0.0.1:{base + 1}"
    config.p2p.persistent_peers = [f"127.0.0.1:{n.p2p_port}" for n in cluster.nodes]
    (home / "config.toml").write_text(cfg.render(config))
    # validators must allow the new node key
    assert read_key(cluster.nodes[0].home / "node_key.json")
    from devnet.cluster import NodeProc

    late = NodeProc(len(cluster.nodes), home, base, base + 1)
    extra = Cluster(cluster.data_dir, [late])
    for n in cluster.nodes:
        text = (n.home / "config.toml").read_text()
        assert "allowed_keys = []" in text
    # allow-listing needs a restart of the validators: instead, the late node dials them
    # and is refused unless allowed, so allow it through config and restart two of them.
    for i in (0, 1):
        path = cluster.nodes[i].home / "config.toml"
        path.write_text(path.read_text().replace(
            "allowed_keys = []", f'allowed_keys = ["{key.public_key.hex()}"]'))
        cluster.restart(i)
    try:
        extra.start_node(0)
        extra.wait_ready(60, [0])
        target = cluster.nodes[2].client.status()["height"]
        extra.wait_height(target, timeout_s=90)
        ours = late.client.block(target)["block_id"]
        assert ours == cluster.nodes[2].client.block(target)["block_id"]
    finally:
        extra.stop()


def test_events_stream_blocks_and_tx_results(cluster):
    node = cluster.nodes[0]
    resp = urllib.request.urlopen(node.url + "/events", timeout=20)
    try:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        reg = Account(cluster.role_key("registrar"), cluster.genesis.chain_id, node.client)
        seed = sha256(b"events")
        sent = reg.send("register_member", {
            "member": sha256(b"pk" + seed), "identity_tags": [[1, seed]],
            "birth_date": "1991-01-01", "health_commitment": seed, "credit_attestation": seed,
            "credit_passed": True}, mode="sync")
        kinds, tx_seen = set(), False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (tx_seen and "block" in kinds):
            line = resp.readline().decode()
            if line.startswith("data: "):
                item = json.loads(line[6:])
                kinds.add(item["type"])
                tx_seen = tx_seen or (item["type"] == "tx" and item["hash"] == sent["hash"])
        assert tx_seen and "block" in kinds
    finally:
        resp.close()


def test_malformed_frames_are_dropped_and_change_nothing(cluster):
    node = cluster.nodes[2]
    before = node.client.status()
    for payload in (b"\xff" * 64, b"\x00\x00\x00\x05hello", b"\x7f\xff\xff\xff" + b"x" * 100,
                    b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", node.p2p_port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(payload)
            try:
                while s.recv(4096):  # the node answers with a refusal and closes
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    cluster.wait_height(before["height"] + 2, timeout_s=30, indices=[2])
    after = node.client.status()
    assert len(after["peers"]) == 3 and node.client.health()["ok"]
    assert after["mempool_txs"] == before["mempool_txs"]


def test_export_over_the_api_then_audit(cluster, tmp_path, capsys):
    from mutual.cli import main

    out = tmp_path / "net.archive"
    assert main(["export", "--node", cluster.nodes[1].url, "--out", str(out)]) == 0
    blocks = json.loads(capsys.readouterr().out)["blocks"]
    assert blocks >= 1
    assert main(["audit", "--data", str(out), "--genesis", str(cluster.genesis_path),
                 "--json"]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["ok"] and final["blocks"] == blocks
