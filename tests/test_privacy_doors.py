"""Issue 19, "the same rules in every door": a real node's public doors carry no credit
score and no unkeyed identity hash, and the audit still recomputes every share.

A 1-validator devnet on 127.0.0.1 (fast rule profile, 10 s periods) takes six joins (a
child among them, on a guardian's tag), a claim inside the waiting period (rule 3 bars the
identity), a claim that is assessed, noticed and paid at a settlement, and a leave. While
that happens a reader holds the ``/events`` stream open. Then every door is read over
HTTP: ``/status``, ``/genesis``, ``/params/history``, ``/validators``, ``/proposals``,
every block (JSON and canonical msgpack bytes), every certificate, every transaction with
its receipt and events, every member (with and without a proof bundle) and their share of
the paid period, every claim and period, the accounts of the members and the roles,
``/metrics`` and ``/openapi.json``. None of them may contain a removed field name
(``credit_score``, ``credit_ref``, ``credit_threshold``, ``identity_hash``,
``health_hash``, ``guardian_hash``, or a ``score`` key), a member's identity text, or its
sha256 (raw in binary answers, hex in text). ``mutual audit`` and ``mutual verify-share``
(for every member of the paid period) still pass from public data alone, and what they
print shows none of a member's identity tags, commitments or attestations
(docs/privacy.md: they are public, but a share's derivation has no use for them). Every
wait is bounded; the node is stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from chain.hashing import sha256
from client import Account, Client
from devnet.cluster import Cluster, free_base_port
from tests.test_audit_builder import identity_text, key, register_body
from tests.test_audit_devnet import _cli, _wait

pytestmark = pytest.mark.slow

FAST = {
    "waiting_ms": 2_000,
    "schedule": {"kind": "interval", "period_ms": 10_000, "notice_offset_ms": 3_000,
                 "settlement_offset_ms": 8_000, "periods_per_year": 12},
    "objection_window_ms": 2_000,
    "appeal_window_ms": 2_000,
    "arrears_grace_ms": 1_000,
}

#: the word-level field names issue 19 removed from every format
REMOVED = ("credit_score", "credit_ref", "credit_threshold", "identity_hash", "health_hash",
           "guardian_hash")
ADULTS = 5
CHILD = 5          # member index of the child (joins on member 0's tag as guardian)
FIRST_ID = 900     # identity i of member k is FIRST_ID + k


class EventReader:
    """Holds ``GET /events`` open in a thread and keeps every byte it receives; ``stop``
    shuts the socket down (which ends a blocked read) and joins the thread (bounded)."""

    def __init__(self, host: str, port: int) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.conn.request("GET", "/events", headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.status
        self.data = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self.resp.read1(65536)
                if not chunk:
                    return
                self.data += chunk
        except (OSError, ValueError, http.client.HTTPException):
            return

    def stop(self) -> bytes:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):   # already closed by the server
                sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=10)
        self.conn.close()
        assert not self.thread.is_alive()
        return bytes(self.data)


def _play(c: Cluster) -> dict[str, Any]:
    client = c.nodes[0].client
    chain_id = c.genesis.chain_id
    reg = Account(c.role_key("registrar"), chain_id, client)
    assessor = Account(c.role_key("assessor"), chain_id, client)
    members = [key(f"privacy-door-{i}") for i in range(CHILD + 1)]
    bodies = [register_body(m, FIRST_ID + i) for i, m in enumerate(members[:ADULTS])]
    # the child's guardian is member 0: its tag under the current (last) key
    bodies.append({**register_body(members[CHILD], FIRST_ID + CHILD, "2020-02-02"),
                   "guardian_tag": bodies[0]["identity_tags"][-1][1]})
    for i, body in enumerate(bodies):
        r = reg.send("register_member", body, mode="commit" if i == CHILD else "sync")
        assert r["code"] == "ok", r
    accounts = [Account(m, chain_id, client) for m in members]
    joined = [client.member(m.public_key.hex())["joined_ms"] for m in members]
    # member 4: an illness inside its waiting period (rule 3 bars both membership and tags)
    r = accounts[4].send("file_claim", {"disease": "deafness", "diagnosed_ms": joined[4],
                                        "accident": False,
                                        "evidence_hash": sha256(b"salt4|evidence")})
    assert r["code"] == "ok" and any(e["type"] == "member_barred" for e in r["events"]), r
    # member 0: diagnosed after its waiting period, approved, noticed and paid
    _wait("member 0's waiting period",
          lambda: _now(client) > joined[0] + FAST["waiting_ms"] + 1_000, timeout_s=60)
    r = accounts[0].send("file_claim", {"disease": "malignant_tumor",
                                        "diagnosed_ms": joined[0] + FAST["waiting_ms"],
                                        "accident": False,
                                        "evidence_hash": sha256(b"salt0|evidence")})
    assert r["code"] == "ok", r
    claim_id = next(e["attrs"]["claim_id"] for e in r["events"] if e["type"] == "claim_filed")
    r = assessor.send("assess_claim", {"claim_id": claim_id, "approve": True,
                                       "report_hash": sha256(b"salt|report")})
    assert r["code"] == "ok", r
    claim = _wait("the payout", lambda: (lambda cl: cl if cl["status"] == "paid" else None)(
        client.claim(claim_id)), timeout_s=90)
    r = accounts[3].send("leave", {}, mode="commit")
    assert r["code"] == "ok", r
    c.wait_height(client.status()["height"] + 2, timeout_s=30)
    return {"members": members, "bodies": bodies, "claim": claim_id,
            "period": claim["pay_period"]}


def _now(client: Client) -> int:
    return int(client.block("latest")["header"]["time"])


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    data = tmp_path_factory.mktemp("privacy-doors")
    c = Cluster.create(data, validators=1, base_port=free_base_port(2, start=43000),
                       params_override=FAST)
    try:
        c.start(wait_s=60)
        c.wait_height(1, timeout_s=60)
        url = c.nodes[0].url
        host, port = url.split("//", 1)[1].rstrip("/").split(":")
        reader = EventReader(host, int(port))
        try:
            info = _play(c)
        finally:
            info_events = reader.stop()
        yield c, {**info, "events": info_events}
    finally:
        c.stop()
        for node in c.nodes:
            assert not node.alive()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=15) as r:  # noqa: S310 (127.0.0.1 only)
        return r.read()


def _json(url: str) -> Any:
    return json.loads(_get(url))


def _doors(c: Cluster, info: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    """Every public answer of the node, as (door, raw bytes)."""
    base = c.nodes[0].url.rstrip("/")
    for path in ("/status", "/genesis", "/params/history", "/params/history?proof=true",
                 "/validators", "/validators/changes?from=1", "/proposals", "/metrics",
                 "/openapi.json"):
        yield path, _get(base + path)
    latest = _json(base + "/blocks/latest")["header"]["height"]
    tx_hashes: list[str] = []
    for h in range(1, latest + 1):
        raw = _get(f"{base}/blocks/{h}")
        yield f"/blocks/{h}", raw
        tx_hashes += [t["hash"] for t in json.loads(raw)["txs"]]
        yield f"/blocks/{h}?format=msgpack", _get(f"{base}/blocks/{h}?format=msgpack")
        yield f"/certificates/{h}", _get(f"{base}/certificates/{h}")
    assert len(tx_hashes) >= 10
    for t in tx_hashes:
        yield f"/txs/{t}", _get(f"{base}/txs/{t}")
    roles = [c.role_key(r).public_key.hex() for r in ("registrar", "assessor", "operator")]
    for m in info["members"]:
        pk = m.public_key.hex()
        yield f"/members/{pk}", _get(f"{base}/members/{pk}")
        yield f"/members/{pk}?proof=true", _get(f"{base}/members/{pk}?proof=true")
        yield f"/members/{pk}/shares/{info['period']}", _get(
            f"{base}/members/{pk}/shares/{info['period']}")
    for pk in [m.public_key.hex() for m in info["members"]] + roles:
        yield f"/accounts/{pk}", _get(f"{base}/accounts/{pk}")
    for cid in range(1, info["claim"] + 1):
        yield f"/claims/{cid}", _get(f"{base}/claims/{cid}")
        yield f"/claims/{cid}?proof=true", _get(f"{base}/claims/{cid}?proof=true")
    for n in range(1, info["period"] + 1):
        yield f"/periods/{n}", _get(f"{base}/periods/{n}")
        yield f"/periods/{n}?proof=true", _get(f"{base}/periods/{n}?proof=true")


def _forbidden(info: dict[str, Any]) -> tuple[list[bytes], list[str]]:
    """What must appear nowhere: each member's identity text and its unkeyed sha256, raw
    (binary answers) and hex (text answers), upper and lower case."""
    raw: list[bytes] = []
    for i in range(len(info["members"])):
        text = identity_text(FIRST_ID + i)
        for t in (text, text.lower()):
            raw += [t.encode(), sha256(t.encode())]
    return raw, [r.hex() for r in raw[1::2]]


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def test_no_door_carries_a_credit_score_or_an_unkeyed_identity_hash(devnet) -> None:
    c, info = devnet
    raw, hexes = _forbidden(info)
    seen: dict[str, int] = {}
    answers = [*_doors(c, info), ("/events (stream)", info["events"])]
    for door, body in answers:
        for name in REMOVED:
            assert name.encode() not in body, (door, name)
        for f in raw:
            assert f not in body, (door, f)
        text = body.decode("utf-8", "replace").lower()
        for h in hexes:
            assert h not in text, (door, h)
        if door.startswith(("/members", "/claims", "/txs", "/blocks/")) and "msgpack" not in door:
            assert "score" not in set(_keys(json.loads(body))), door
        kind = door.split("/")[1].split("?")[0]
        seen[kind] = seen.get(kind, 0) + 1
    # every door was read, the event stream included (one block event per commit)
    assert {"status", "genesis", "blocks", "certificates", "txs", "members", "accounts",
            "claims", "periods", "params", "metrics", "openapi.json",
            "events (stream)"} <= set(seen)
    assert info["events"].count(b"event: block") >= 5
    assert b"event: tx" in info["events"]
    # what is there instead: the keyed tags, the attestation, a passed credit check
    base = c.nodes[0].url.rstrip("/")
    child = _json(f"{base}/members/{info['members'][CHILD].public_key.hex()}")
    body = info["bodies"][CHILD]
    assert child["identity_tags"] == [[k, t.hex()] for k, t in body["identity_tags"]]
    assert child["credit_attestation"] == body["credit_attestation"].hex()
    assert child["guardian_tag"] == body["guardian_tag"].hex()
    assert "credit_passed" not in child
    claim = _json(f"{base}/claims/{info['claim']}")
    assert claim["age_band"] is not None and claim["status"] == "paid"


def _secrets_of(info: dict[str, Any]) -> list[str]:
    """The hex of every member's tags, commitment and attestation (and the guardian tag)."""
    out = []
    for body in info["bodies"]:
        out += [t.hex() for _, t in body["identity_tags"]]
        out += [body["health_commitment"].hex(), body["credit_attestation"].hex()]
        if "guardian_tag" in body:
            out.append(body["guardian_tag"].hex())
    return out


def test_audit_recomputes_everything_from_public_data(devnet) -> None:
    c, info = devnet
    proc = _cli("audit", "--node", c.nodes[0].url, "--genesis", str(c.genesis_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["ok"] is True and doc["first_error"] is None
    assert doc["claims_paid"] == 1 and doc["periods"] >= info["period"]
    out = (proc.stdout + proc.stderr).lower()
    for name in REMOVED:
        assert name not in out
    for s in _secrets_of(info):
        assert s not in out


def test_every_share_of_the_paid_period_verifies_from_public_data(devnet) -> None:
    c, info = devnet
    client = Client(c.nodes[0].url, timeout=10)
    n = info["period"]
    charged = 0
    for m in info["members"]:
        pk = m.public_key.hex()
        proc = _cli("verify-share", "--node", c.nodes[0].url, "--genesis",
                    str(c.genesis_path), "--member", pk, "--period", str(n))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        served = client.share(pk, n)
        assert (doc["charge"], doc["P"], doc["M"]) == (served["charge"], served["P"],
                                                       served["M"])
        charged += doc["charge"]
        out = (proc.stdout + proc.stderr).lower()
        for name in REMOVED:
            assert name not in out
        for s in _secrets_of(info):
            assert s not in out, (pk, s)
    # the paid claim was shared: somebody was charged for it
    assert charged > 0
