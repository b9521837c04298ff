"""``mutual audit --node``: a chain served over HTTP by a fake node (aiohttp, loopback, in a
background thread) built from the in-process chain; a clean chain passes, a forged chain,
a forged served record or a foreign genesis fails and is named.

``FakeNode`` serves the routes the auditor and ``verify-share`` use, with the same shapes
as node/api.py (proof bundles as in docs/api.md), and lets a test replace what it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web

from audit import NodeSource, audit
from audit.cli import run_audit as main
from chain.block import Block, txs_hash
from chain.tx import to_jsonable
from client import Client, ClientError
from contracts import records
from tests.test_audit_builder import ChainBuilder, build_scenario, rechain, with_header


class FakeNode:
    """Serves a ChainBuilder's chain. ``blocks``/``certs`` may be replaced; ``bundle_hook``
    and ``record_hook`` may rewrite what is served for (kind, ident)."""

    def __init__(self, b: ChainBuilder) -> None:
        self.b = b
        self.blocks = list(b.blocks)
        self.certs = dict(b.certs)
        self.status_extra: dict[str, Any] = {}
        self.bundle_hook: Callable[[str, str, dict], dict] | None = None
        self.record_hook: Callable[[str, str, dict], dict] | None = None
        # rewrites the served /validators/changes list (a forged or omitted change)
        self.changes_hook: Callable[[list[dict]], list[dict]] | None = None
        # rewrites the served /params/history?proof=true answer
        self.params_hook: Callable[[dict], dict] | None = None
        # read ``from`` as "at or after" (a client must cope with either reading)
        self.inclusive_from = False
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        app = web.Application()
        r = app.router
        r.add_get("/status", self._status)
        r.add_get("/blocks/{h}", self._block)
        r.add_get("/certificates/{h}", self._cert)
        r.add_get("/members/{id}", self._record)
        r.add_get("/claims/{id}", self._record)
        r.add_get("/periods/{id}", self._record)
        r.add_get("/validators/changes", self._changes)
        r.add_get("/params/history", self._params_history)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @staticmethod
    def _missing(what: str) -> web.Response:
        return web.json_response({"error": "not_found", "message": what}, status=404)

    async def _status(self, request: web.Request) -> web.Response:
        self.requests += 1
        b = self.b
        return web.json_response({
            "chain_id": b.genesis.chain_id, "height": len(self.blocks),
            "state_root": b.ex.state_root.hex(), "genesis_hash": b.genesis.hash.hex(),
            **self.status_extra})

    async def _block(self, request: web.Request) -> web.Response:
        self.requests += 1
        h = int(request.match_info["h"])
        if not 1 <= h <= len(self.blocks):
            return self._missing(f"no block {h}")
        return web.Response(body=self.blocks[h - 1], content_type="application/msgpack")

    async def _cert(self, request: web.Request) -> web.Response:
        self.requests += 1
        h = int(request.match_info["h"])
        if h not in self.certs:
            return self._missing(f"no certificate {h}")
        return web.Response(body=self.certs[h], content_type="application/msgpack")

    def changes(self) -> list[dict]:
        """The change list as node/api.py serves it (docs/governance.md): each height
        E > 1 at which the set changed, the set, its reasons and block E-1's header and
        certificate (null while E-1 is not committed)."""
        app = self.b.ex.app
        out = []
        for e in app.validator_set_heights()[1:]:
            vset = app.validators_at(e)
            rec = records.load(app.state, records.vset_key(e))
            reasons = to_jsonable(rec["changes"]) if rec else []
            committed = e - 1 <= len(self.blocks) and (e - 1) in self.certs
            out.append({
                "height": e, "hash": vset.hash().hex(),
                "validators": [{"index": i, "name": v.name, "pub_key": v.pub_key.hex(),
                                "power": v.power,
                                "node_key": v.node_key.hex() if v.node_key else None,
                                "operator": v.operator.hex() if v.operator else None}
                               for i, v in enumerate(vset.validators)],
                "reasons": reasons,
                "header": (Block.decode(self.blocks[e - 2]).header.encode().hex()
                           if committed else None),
                "certificate": self.certs[e - 1].hex() if committed else None})
        return out

    async def _changes(self, request: web.Request) -> web.Response:
        # as node/queries.py: the changes at heights after max(1, from), at most limit
        self.requests += 1
        after = int(request.query.get("from", "0"))
        limit = int(request.query.get("limit", "100"))
        changes = self.changes()
        if self.changes_hook is not None:
            changes = self.changes_hook(changes)
        page = [c for c in changes if c["height"] > max(1, after)
                or (self.inclusive_from and c["height"] == after)]
        more = len(page) > limit
        return web.json_response({"changes": page[:limit],
                                  "next_from": page[limit - 1]["height"] if more else None})

    def proof_bundle(self, key: bytes) -> dict:
        """A proof bundle (docs/api.md) of state ``key`` at the tip."""
        b = self.b
        height = b.height
        block = Block.decode(b.blocks[height - 1])
        _, tree = b.ex.view_at(block.header.state_root)
        value = tree.get(key)
        return {"key": key.hex(), "value": None if value is None else value.hex(),
                "proof": tree.prove(key).encode().hex(),
                "state_root": block.header.state_root.hex(), "height": height,
                "header": block.header.encode().hex(), "certificate": b.certs[height].hex()}

    async def _params_history(self, request: web.Request) -> web.Response:
        # the history as the application lists it; with ?proof=true the proof bundles of
        # the index and of every version it lists (docs/governance.md)
        self.requests += 1
        app = self.b.ex.app
        fn = getattr(app, "params_history", None)
        if fn is None:
            return self._missing("no parameter history in these rules")
        doc: dict[str, Any] = {"history": to_jsonable(fn())}
        if request.query.get("proof") == "true":
            idx = records.load(app.state, b"paramh")
            keys = [b"paramh"] + [b"paramv/" + v.to_bytes(8, "big")
                                  for _, v in (idx or {"versions": []})["versions"] if v]
            doc["proofs"] = [self.proof_bundle(k) for k in keys]
            if self.params_hook is not None:
                doc = self.params_hook(doc)
        return web.json_response(doc)

    def _lookup(self, app: Any, kind: str, ident: str) -> tuple[Any, bytes]:
        if kind == "members":
            return app.get_member(ident), app.member_key(ident)
        if kind == "claims":
            return app.get_claim(ident), app.claim_key(int(ident))
        return app.get_period(int(ident)), app.period_key(int(ident))

    async def _record(self, request: web.Request) -> web.Response:
        self.requests += 1
        kind = request.path.split("/")[1]
        ident = request.match_info["id"]
        b = self.b
        if request.query.get("proof") != "true":
            rec, _ = self._lookup(b.ex.app, kind, ident)
            if rec is None:
                return self._missing(f"no {kind} {ident}")
            if self.record_hook is not None:
                rec = self.record_hook(kind, ident, rec)
            return web.json_response(rec)
        height = b.height
        block = Block.decode(b.blocks[height - 1])
        app, tree = b.ex.view_at(block.header.state_root)
        record, key = self._lookup(app, kind, ident)
        value = tree.get(key)
        bundle = {
            "record": record, "key": key.hex(), "value": None if value is None else value.hex(),
            "proof": tree.prove(key).encode().hex(),
            "state_root": block.header.state_root.hex(), "height": height,
            "header": block.header.encode().hex(), "certificate": b.certs[height].hex(),
        }
        if self.bundle_hook is not None:
            bundle = self.bundle_hook(kind, ident, bundle)
        return web.json_response(bundle)


class GarbageServer:
    """A loopback TCP server that answers every connection with ``reply`` and closes it,
    like a node's peer-to-peer port answering an HTTP request with handshake bytes."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(65536)
                conn.sendall(self.reply)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


HANDSHAKE = b"\x00\x00\x00\x2cmutual-p2p\x01" + bytes(range(256))   # not HTTP at all
HTML_200 = (b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n"
            b"<html><body>a router's login page</body></html>")


@pytest.fixture(params=[HANDSHAKE, HTML_200], ids=["binary", "html"])
def garbage(request):
    server = GarbageServer(request.param)
    try:
        yield server
    finally:
        server.stop()


def test_client_names_a_url_that_is_not_the_api(garbage) -> None:
    with pytest.raises(ClientError) as info:
        Client(garbage.url, timeout=5).status()
    assert info.value.status == 0
    assert f"{garbage.url} did not answer as the node's HTTP API" in str(info.value)
    assert "\x00" not in str(info.value)  # the peer's bytes are never echoed raw


def test_audit_of_a_url_that_is_not_the_api(garbage, tmp_path) -> None:
    gpath = tmp_path / "genesis.json"
    ChainBuilder().genesis.dump(gpath)
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(node=garbage.url, data=None, genesis=str(gpath), json=True,
                           timeout=5.0)
    assert main(args, out, err) == 1
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mutual audit: error: cannot read ")
    assert "did not answer as the node's HTTP API (is this the API address?)" in lines[0]
    assert out.getvalue() == ""


@pytest.fixture(scope="module")
def chain() -> ChainBuilder:
    b, _ = build_scenario()
    return b


@pytest.fixture()
def fake(chain):
    node = FakeNode(chain)
    try:
        yield node
    finally:
        node.stop()


def _audit(b: ChainBuilder, url: str):
    source = NodeSource(Client(url, timeout=5))
    try:
        return audit(b.genesis, source, workers=0, verify_seconds=0.01)
    finally:
        source.close()


def test_clean_chain_over_http(chain, fake) -> None:
    report = _audit(chain, fake.url)
    assert report.ok, report.first_error
    assert report.blocks == chain.height and report.periods == 3


def test_forged_chain_served_by_a_fake_node(chain, fake) -> None:
    """The fake node holds every validator key and rewrites history from block 9 on with
    one vote dropped; the certificates are all valid, the state is not."""
    h = 9

    def drop(blk: Block) -> Block:
        txs = blk.txs[:-1]
        return Block(with_header(blk, txs_hash=txs_hash(list(txs))).header, txs,
                     blk.evidence, blk.last_commit)

    assert len(Block.decode(chain.blocks[h - 1]).txs) >= 1
    fake.blocks, fake.certs = rechain(chain, chain.blocks, chain.certs, h, drop)
    report = _audit(chain, fake.url)
    assert not report.ok
    err = report.first_error
    assert err.height == h + 1 and err.field == "header.state_root"


def test_a_forged_period_served_as_json(chain, fake) -> None:
    def forge(kind: str, ident: str, rec: dict) -> dict:
        if kind == "periods" and ident == "2":
            return {**rec, "share": rec["share"] + 5}
        return rec

    fake.record_hook = forge
    report = _audit(chain, fake.url)
    assert not report.ok
    err = report.first_error
    assert err.field == "share" and "period 2 as served by the node" in err.what
    assert err.found == err.expected + 5


def test_a_foreign_genesis_is_named_before_any_block(chain, fake) -> None:
    fake.status_extra = {"genesis_hash": "ab" * 32}
    report = _audit(chain, fake.url)
    assert not report.ok and report.first_error.height == 0
    assert report.first_error.field == "genesis_hash"


def test_a_node_that_lies_about_its_state_root(chain, fake) -> None:
    fake.status_extra = {"state_root": "cd" * 32}
    report = _audit(chain, fake.url)
    assert not report.ok
    assert report.first_error.field == "state_root"
    assert report.first_error.height == chain.height


def test_a_missing_block_is_reported(chain, fake) -> None:
    fake.status_extra = {"height": chain.height + 2}
    report = _audit(chain, fake.url)
    assert not report.ok
    assert report.first_error.height == chain.height + 1
    assert "does not serve block" in report.first_error.what


def test_cli_over_http_prints_json_last(chain, fake, tmp_path) -> None:
    gpath = tmp_path / "genesis.json"
    chain.genesis.dump(gpath)
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(node=fake.url, data=None, genesis=str(gpath), json=True,
                           timeout=5.0)
    assert main(args, out, err) == 0, out.getvalue() + err.getvalue()
    doc = json.loads(out.getvalue().strip().splitlines()[-1])
    assert doc["ok"] and doc["blocks"] == chain.height and doc["first_error"] is None
    assert err.getvalue() == ""  # --json: no progress output either
    assert to_jsonable(doc["state_root"]) == chain.ex.state_root.hex()


def test_a_field_missing_or_added_in_a_served_record_is_shown_as_absent(chain, fake) -> None:
    def drop(kind: str, ident: str, rec: dict) -> dict:
        if kind == "periods" and ident == "2":
            return {k: v for k, v in rec.items() if k != "share"}
        return rec

    fake.record_hook = drop
    err = _audit(chain, fake.url).first_error
    assert err is not None and err.field == "share"
    doc = err.to_json()
    assert doc["found"] == "(absent)" and isinstance(doc["expected"], int)
    assert err.describe().endswith(f"expected {doc['expected']}, found (absent)")
    assert "None" not in err.describe()

    def add(kind: str, ident: str, rec: dict) -> dict:
        if kind == "periods" and ident == "2":
            return {**rec, "bonus": 7}
        return rec

    fake.record_hook = add
    err = _audit(chain, fake.url).first_error
    assert err is not None and err.field == "bonus"
    assert (err.to_json()["expected"], err.to_json()["found"]) == ("(absent)", 7)
    assert "expected (absent), found 7" in err.describe()
