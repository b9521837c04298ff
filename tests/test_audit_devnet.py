"""``mutual audit`` and ``mutual verify-share`` against a real 4-validator devnet.

One cluster for the module, with a fast rule profile (10 s periods): members join, jurors
are approved, an accident claim is objected to, an open jury votes it through and a
settlement pays it; a claim inside the waiting period is rejected. Before that the
validators' operators govern: validator 0's power is raised (a validator-set change) and
the fee is raised from a coming period (a parameter version). Then, through the real
CLI: the live chain audits clean over HTTP; a member's share verifies; a stopped node's
database audits clean through a copy, and copies with a tampered period share or one
changed transaction byte fail naming the item; a running node's database is refused.
Every wait is bounded; every process is stopped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import msgpack
import pytest

from chain.block import Block
from chain.hashing import sha256
from client import Account, Client
from contracts import records
from contracts.params import Params
from devnet.cluster import Cluster, free_base_port
from node.store.kvstore import open_kv
from tests.test_audit_builder import key, register_body

pytestmark = pytest.mark.slow

FAST = {
    "waiting_ms": 2_000,
    "schedule": {"kind": "interval", "period_ms": 10_000, "notice_offset_ms": 3_000,
                 "settlement_offset_ms": 8_000, "periods_per_year": 12},
    "objection_window_ms": 3_000,
    "appeal_window_ms": 3_000,
    "arrears_grace_ms": 1_000,
    "jury": {"mode": "open", "window_ms": 3_000, "open_quorum": 2, "pass_bps": 5000,
             "panel_size": 3, "panel_min_votes": 2, "juror_min_age_years": 18,
             "juror_min_membership_ms": 0},
}


def _wait(what: str, check, timeout_s: float = 45.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutual", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    data = tmp_path_factory.mktemp("audit-devnet")
    c = Cluster.create(data, validators=4, base_port=free_base_port(8, start=41000),
                       params_override=FAST)
    try:
        c.start(wait_s=60)
        c.wait_height(1, timeout_s=60)
        info = _play(c)
        yield c, info
    finally:
        c.stop()
        for node in c.nodes:
            assert not node.alive()


def _govern(c: Cluster) -> dict:
    """Operators 0-2 pass a set_power (validator 0: 10 -> 11) and a fee of 10% from the
    first period whose notice is at least 2 s away (retried on the next period if the
    notice came first and the change failed)."""
    client = c.nodes[0].client
    chain_id = c.genesis.chain_id
    ops = [Account(c.operator_key(i), chain_id, client) for i in range(3)]

    def passes(body: dict) -> int:
        r = ops[0].send("propose", {"deadline_ms": _now(client) + 600_000, **body})
        assert r["code"] == "ok", r
        pid = next(e["attrs"]["proposal_id"] for e in r["events"]
                   if e["type"] == "proposal_opened")
        for op in ops[1:]:
            r = op.send("vote_proposal", {"proposal_id": pid, "yes": True})
            assert r["code"] == "ok", r
        return pid

    v0 = c.genesis.validators[0].pub_key
    pid = passes({"kind": "set_power", "pub_key": v0, "power": 11})
    assert client.proposal(pid)["status"] == "passed"
    schedule = Params.from_dict(c.genesis.params).make_schedule(c.genesis.genesis_time_ms)
    for _ in range(3):
        now = _now(client)
        n = next(k for k in range(1, 10_000) if schedule.notice_ms(k) > now + 2_000)
        pid = passes({"kind": "set_params", "params": {"fee_bps": 1000}, "from_period": n})
        if client.proposal(pid)["status"] == "passed":
            return {"fee_from": n}
    raise AssertionError("the fee change never passed before its period's notice")


def _now(client: Client) -> int:
    return int(client.block("latest")["header"]["time"])


def _play(c: Cluster) -> dict:
    gov = _govern(c)
    client = c.nodes[0].client
    chain_id = c.genesis.chain_id
    reg = Account(c.role_key("registrar"), chain_id, client)
    assessor = Account(c.role_key("assessor"), chain_id, client)
    members = [key(f"devnet-member-{i}") for i in range(5)]
    for i, m in enumerate(members):
        r = reg.send("register_member", register_body(m, 500 + i),
                     mode="commit" if i == len(members) - 1 else "sync")
        assert r["code"] == "ok", r
    accounts = [Account(m, chain_id, client) for m in members]
    for i in (1, 2, 3):
        r = reg.send("approve_juror", {"member": members[i].public_key.raw,
                                       "exam_ref": sha256(b"exam")}, mode="commit")
        assert r["code"] == "ok", r
    joined = [client.member(m.public_key.hex())["joined_ms"] for m in members]
    r = accounts[0].send("file_claim", {"disease": "malignant_tumor",
                                        "diagnosed_ms": joined[0], "accident": True,
                                        "evidence_hash": sha256(b"ev")})
    assert r["code"] == "ok", r
    claim_id = next(e["attrs"]["claim_id"] for e in r["events"] if e["type"] == "claim_filed")
    r = accounts[4].send("file_claim", {"disease": "deafness", "diagnosed_ms": joined[4],
                                        "accident": False, "evidence_hash": sha256(b"ev4")})
    assert r["code"] == "ok" and any(e["type"] == "claim_rejected_waiting"
                                     for e in r["events"]), r
    r = assessor.send("assess_claim", {"claim_id": claim_id, "approve": True,
                                       "accident": True, "report_hash": sha256(b"report")})
    assert r["code"] == "ok", r
    _wait("the claim's public notice", lambda: client.claim(claim_id)["status"] == "in_notice")
    r = accounts[1].send("object_claim", {"claim_id": claim_id, "reason_hash": sha256(b"o")})
    assert r["code"] == "ok", r
    _wait("the jury", lambda: client.claim(claim_id)["status"] == "disputed")
    for i in (2, 3):
        r = accounts[i].send("jury_vote", {"claim_id": claim_id, "pay": True})
        assert r["code"] == "ok", r
    claim = _wait("the payout", lambda: (lambda cl: cl if cl["status"] == "paid" else None)(
        client.claim(claim_id)), timeout_s=60)
    height = client.status()["height"]
    c.wait_height(height + 2, timeout_s=30)
    return {"members": members, "claim": claim_id, "period": claim["pay_period"], **gov}


def test_live_chain_audits_clean_over_http(devnet) -> None:
    c, info = devnet
    proc = _cli("audit", "--node", c.nodes[1].url, "--genesis", str(c.genesis_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    doc = json.loads(lines[-1])
    assert doc["ok"] is True and doc["first_error"] is None
    assert doc["periods"] >= info["period"] and doc["claims_paid"] == 1
    assert doc["juries"] == 1
    assert any(line.startswith("OK:") for line in lines)
    # the set change the operators passed is in the history, from the proposal
    sets = doc["validator_sets"]
    assert len(sets) == 2 and sets[1]["changes"][0]["kind"] == "set_power"
    assert sets[1]["total_power"] == 41
    # not a terminal: plain progress lines (or none for a short run), never \r redraws
    assert "\r" not in proc.stderr


def test_member_verifies_their_share(devnet) -> None:
    c, info = devnet
    member = info["members"][2].public_key.hex()
    proc = _cli("verify-share", "--node", c.nodes[2].url, "--genesis", str(c.genesis_path),
                "--member", member, "--period", str(info["period"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    served = Client(c.nodes[0].url).share(member, info["period"])
    assert doc["charge"] == served["charge"] and doc["P"] == served["P"] > 0
    # the set was followed through the operators' change; the period's fee is proven
    assert doc["set_changes"] == 1
    assert doc["params_source"] == "proven"
    assert doc["fee_bps"] == served["fee_bps"]
    assert doc["params_version"] == (1 if info["period"] >= info["fee_from"] else 0)


def test_stopped_node_database_audits_clean_and_tampering_is_named(devnet, tmp_path) -> None:
    c, info = devnet
    node = c.nodes[3]
    # a running node's database is refused with a clear error
    running = _cli("audit", "--data", str(c.nodes[0].home), "--genesis", str(c.genesis_path))
    assert running.returncode == 2 and "in use by a running node" in running.stderr

    assert c.terminate(3) == 0
    clean = _cli("audit", "--data", str(node.home), "--genesis", str(c.genesis_path), "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    doc = json.loads(clean.stdout)
    assert doc["ok"] and doc["blocks"] > 5

    n = info["period"]
    share_copy = tmp_path / "share"
    shutil.copytree(node.home / "data", share_copy)
    kv = open_kv(share_copy / "db", create_if_missing=False)
    vkey = b"state/v" + records.period_key(n)
    rec = msgpack.unpackb(kv.get(vkey), raw=False)
    rec["share"] += 1
    batch = kv.batch()
    batch.put(vkey, msgpack.packb(rec, use_bin_type=True))
    kv.write(batch, sync=True)
    kv.close()
    bad = _cli("audit", "--data", str(share_copy), "--genesis", str(c.genesis_path), "--json")
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["first_error"]
    assert err["field"] == f"period/{n}.share" and err["found"] == err["expected"] + 1

    tx_copy = tmp_path / "tx"
    shutil.copytree(node.home / "data", tx_copy)
    kv = open_kv(tx_copy / "db", create_if_missing=False)
    height, raw = next((h, v) for h, v in _blocks(kv) if Block.decode(v).txs)
    tx = Block.decode(raw).txs[0]
    at = raw.find(tx) + tx.find(b"\xc4\x40") + 2 + 5
    batch = kv.batch()
    batch.put(b"blocks/" + height.to_bytes(8, "big"),
              raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1:])
    kv.write(batch, sync=True)
    kv.close()
    bad = _cli("audit", "--data", str(tx_copy), "--genesis", str(c.genesis_path), "--json")
    assert bad.returncode == 1
    err = json.loads(bad.stdout)["first_error"]
    assert (err["height"], err["tx"], err["field"]) == (height, 0, "sig")


def _blocks(kv) -> list[tuple[int, bytes]]:
    return [(int.from_bytes(k, "big"), v) for k, v in kv.prefixed(b"blocks/").iterate()]


def test_client_reads_the_governance_routes(devnet) -> None:
    c, info = devnet
    client = Client(c.nodes[1].url, timeout=10)
    changes = client.validator_changes(from_height=1, limit=10)["changes"]
    assert len(changes) == 1 and changes[0]["reasons"][0]["kind"] == "set_power"
    e = changes[0]["height"]
    before, after = client.validators(height=e - 1), client.validators(height=e)
    assert (before["total_power"], after["total_power"]) == (40, 41)
    assert before["next_hash"] == after["hash"] == changes[0]["hash"]
    assert client.validator_changes(from_height=e)["changes"] == []
    passed = client.proposals(status="passed")["proposals"]
    assert [p["kind"] for p in passed][:1] == ["set_power"]
    assert client.proposal(passed[0]["id"])["status"] == "passed"
    assert client.proposals(after=passed[-1]["id"])["proposals"] == [
        p for p in client.proposals()["proposals"] if p["id"] > passed[-1]["id"]]
    history = client.params_history()["history"]
    assert [h["from_period"] for h in history] == [1, info["fee_from"]]
    proven = client.params_history(proof=True)
    assert [bytes.fromhex(p["key"])[:6] for p in proven["proofs"]] == [b"paramh", b"paramv"]
