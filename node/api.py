"""The HTTP API (aiohttp, JSON): submit transactions, read blocks and records with proofs.

Every error is a 4xx/5xx with ``{"error": code, "message": text}`` (including the errors
aiohttp answers before routing, such as a header that is too long); request bodies are
size-limited; nothing here changes state except ``POST /txs`` (through the mempool). The
routes and their shapes are described in ``node/openapi.py`` (served at /openapi.json) and
docs/api.md.

What one client can hold is bounded (docs/api.md, "Limits"): the request line and headers
must arrive within ``HEADERS_TIMEOUT_S`` of connecting (or of the previous response on a
kept-alive connection), the body within ``BODY_TIMEOUT_S`` after the headers, and at most
``MAX_CONNECTIONS`` connections are open at once; a connection beyond that is answered 503
and closed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any, Protocol

from aiohttp import web

from chain import encoding
from chain.hashing import sha256
from chain.tx import to_jsonable
from node.eventhub import EventHub
from node.httpserver import MAX_CONNECTIONS_KEY, Application, closing, json_response
from node.mempool import TxRejected
from node.metrics import Metrics
from node.openapi import OPENAPI
from node.queries import ChainQueries

log = logging.getLogger("node.api")

MAX_BATCH = 1000
# Open API connections at most (each is a file descriptor the node also needs for LevelDB,
# peers and its signer state). Beyond it a connection's request is answered 503
# ``too_many_connections`` and the connection closed, at the latest
# node.httpserver.REFUSED_CLOSE_S after it was accepted.
MAX_CONNECTIONS = 256
# The request line and headers must arrive within this many seconds of the connection being
# accepted or of the previous response on a kept-alive connection (which is also how long an
# idle kept-alive connection stays open); otherwise the connection is closed.
HEADERS_TIMEOUT_S = 10.0
# The body must arrive within this many seconds after the headers: else 408 request_timeout.
BODY_TIMEOUT_S = 30.0
# After an error answered before the body was read, unread body bytes are drained (so the
# client sees the answer) for at most this long before the connection is closed.
LINGER_S = 2.0
FORMATS = ("json", "msgpack")
# paged lists (/validators/changes, /proposals): default and largest page
DEFAULT_PAGE = 100
MAX_PAGE = 1000
PROPOSAL_STATUSES = ("open", "passed", "expired", "failed")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        if getattr(request.protocol, "refused", False):
            return closing(json_response({"error": "too_many_connections", "message":
                                   f"the node serves at most {MAX_CONNECTIONS} API "
                                   "connections at once; retry later"}, 503))
        if request.body_exists:
            # Read the whole body here, under a deadline (handlers get it from the cache).
            try:
                async with asyncio.timeout(BODY_TIMEOUT_S):
                    await request.read()
            except TimeoutError:
                return closing(json_response({"error": "request_timeout", "message":
                                       f"the request body did not arrive within "
                                       f"{BODY_TIMEOUT_S:g} s"}, 408))
        return await handler(request)
    except ApiError as exc:
        return json_response({"error": exc.code, "message": exc.message}, exc.status)
    except web.RequestPayloadError as exc:  # a body that breaks the HTTP framing
        log.debug("bad request body on %s %s: %s", request.method, request.path, exc)
        return closing(json_response({"error": "bad_request", "message": str(exc)}, 400))
    except ConnectionError as exc:
        if request.transport is not None and not request.transport.is_closing():
            log.exception("unhandled API error on %s %s", request.method, request.path)
            return json_response({"error": "internal", "message": "internal error (see node log)"},
                         500)
        # the client went away (reset or closed) mid-request: nobody reads an answer
        log.debug("API client went away during %s %s: %s", request.method, request.path,
                  exc or exc.__class__.__name__)
        return closing(web.Response(status=400))
    except web.HTTPRequestEntityTooLarge:
        return json_response({"error": "body_too_large", "message": "request body is too large"}, 413)
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return json_response({"error": code, "message": exc.reason or code}, exc.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled API error on %s %s", request.method, request.path)
        return json_response({"error": "internal", "message": "internal error (see node log)"}, 500)


def _height(text: str) -> int:
    if not text.isdigit() or len(text) > 19 or int(text) < 1:
        raise ApiError(400, "bad_height", f"height must be a positive integer, got {text!r}")
    return int(text)


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise ApiError(400, f"bad_{what}", f"{what} must be 64 hex characters, got {text!r}")
    return raw


MAX_ID = (1 << 63) - 1


def _json_b64(body: bytes, field: str, many: bool) -> list[bytes]:
    """The base64 transaction(s) of a JSON body ``{field: "..."}`` or ``{field: [...]}``."""
    shape = f'{{"{field}": [' + '"<base64>", ...]}' if many else f'{{"{field}": "<base64>"}}'
    try:
        doc = json.loads(body)
        items = doc[field] if many else [doc[field]]
        if not isinstance(items, list) or not all(isinstance(t, str) for t in items):
            raise TypeError
        return [base64.b64decode(t.encode("ascii"), validate=True) for t in items]
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "bad_json", "body is not valid JSON") from None
    except RecursionError:  # the parser recurses per nesting level: "[" * 100000
        raise ApiError(400, "bad_json", f"body is nested too deeply; it must be {shape}"
                       ) from None
    except (KeyError, TypeError, ValueError):  # binascii.Error and non-ASCII are ValueErrors
        raise ApiError(400, "bad_json", f"body must be {shape}") from None


def _number(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_ID:
        raise ApiError(400, f"bad_{what}", f"{what} must be an integer from 0 to 2**63-1, "
                                           f"got {text[:40]!r}")
    return int(text)


def _limit(request: web.Request) -> int:
    """The ``limit`` of a paged list: 1 .. MAX_PAGE, default DEFAULT_PAGE."""
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or len(text) > 5 or not 1 <= int(text) <= MAX_PAGE:
        raise ApiError(400, "bad_limit", f"limit must be an integer from 1 to {MAX_PAGE}, "
                                         f"got {text[:40]!r}")
    return int(text)


def _record_id(kind: str, text: str) -> str:
    """Refuse malformed ids with a 400 (a well-formed id that is absent is a 404)."""
    if kind == "member":
        _hex32(text, "member_id")
    else:
        _number(text, f"{kind}_id")
    return text


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ApiError(400, "bad_query", f"{name} must be true or false")
    return value in ("true", "1")


def _params_history_keys(state: Any) -> list[bytes]:
    """``paramh`` and every ``paramv/<v>`` (v >= 1) it lists (contracts/records.py)."""
    data = state.get(b"paramh")
    versions = [] if data is None else encoding.decode(data)["versions"]
    return [b"paramh"] + [b"paramv/" + v.to_bytes(8, "big") for _, v in versions if v]


def _format(request: web.Request) -> str:
    value = request.query.get("format", "json")
    if value not in FORMATS:
        raise ApiError(400, "bad_query", f"format must be one of {', '.join(FORMATS)}, "
                                         f"got {value[:40]!r}")
    return value


class ApiNode(Protocol):
    """What the API asks of the node process beyond reading the chain
    (``ChainQueries``): admitting transactions and saying how the node is doing."""

    async def submit_tx(self, data: bytes, mode: str) -> dict[str, Any]:
        """Admit one transaction; ``mode`` async / sync / commit (docs/api.md)."""

    async def admit_many(self, datas: list[bytes]) -> list[dict[str, Any]]:
        """Admit a batch in order, one result each."""

    def precheck_unsigned(self, data: bytes) -> None:
        """The mempool's checks before signature and rules; raises ``TxRejected``."""

    def status(self) -> dict[str, Any]:
        """``GET /status``."""

    def health(self) -> tuple[bool, str]:
        """Liveness: ``GET /healthz``."""

    def readiness(self) -> tuple[bool, str]:
        """Readiness: ``GET /readyz``."""

    def refresh_metrics(self) -> None:
        """Bring the gauges up to date before ``/metrics`` renders them."""


class Api:
    """Builds the aiohttp application for one node: ``node`` admits and reports,
    ``queries`` reads the committed chain, ``events`` feeds ``/events``."""

    def __init__(self, node: ApiNode, queries: ChainQueries, events: EventHub,
                 metrics: Metrics, max_body_bytes: int) -> None:
        self.node = node
        self.queries = queries
        self.events = events
        self.metrics = metrics
        self.app = Application(
            middlewares=[_errors], client_max_size=max_body_bytes,
            handler_args={"keepalive_timeout": HEADERS_TIMEOUT_S, "lingering_time": LINGER_S})
        self.app[MAX_CONNECTIONS_KEY] = MAX_CONNECTIONS
        self._stopping = asyncio.Event()
        self.app.on_shutdown.append(self._on_shutdown)
        r = self.app.router
        r.add_post("/txs", self.post_tx)
        r.add_post("/txs/batch", self.post_tx_batch)
        r.add_get("/txs/{hash}", self.get_tx)
        r.add_get("/blocks/latest", self.get_latest_block)
        r.add_get("/blocks/{height}", self.get_block)
        r.add_get("/certificates/{height}", self.get_certificate)
        r.add_get("/status", self.get_status)
        r.add_get("/healthz", self.get_health)
        r.add_get("/readyz", self.get_ready)
        r.add_get("/validators", self.get_validators)
        r.add_get("/validators/changes", self.get_validator_changes)
        r.add_get("/proposals", self.get_proposals)
        r.add_get("/proposals/{id}", self.get_proposal)
        r.add_get("/params/history", self.get_params_history)
        r.add_get("/genesis", self.get_genesis)
        r.add_get("/accounts/{pub_key}", self.get_account)
        r.add_get("/members/{id}", self.get_member)
        r.add_get("/members/{id}/shares/{period}", self.get_share)
        r.add_get("/claims/{id}", self.get_claim)
        r.add_get("/periods/{n}", self.get_period)
        r.add_get("/events", self.get_events)
        r.add_get("/metrics", self.get_metrics)
        r.add_get("/openapi.json", self.get_openapi)

    async def _on_shutdown(self, app: web.Application) -> None:
        """The node is stopping: waiting ``mode=commit`` requests are answered 503 now."""
        self._stopping.set()

    def _stateless_check(self, data: bytes) -> dict[str, Any] | None:
        """For ``mode=async``: the mempool's checks that ``mode=sync`` also runs before the
        signature and the application's check (``Mempool.precheck_unsigned``). The refusal,
        in ``submit_tx``'s shape, or None."""
        try:
            self.node.precheck_unsigned(data)
        except TxRejected as exc:
            return {"hash": exc.tx_hash.hex() if exc.tx_hash else None, "code": exc.code,
                    "reason": exc.reason}
        return None

    async def _submit_commit(self, data: bytes) -> dict[str, Any]:
        """``mode=commit``, given up (503 ``stopping``) as soon as the node stops."""
        stopping = {"hash": sha256(data).hex(), "code": "stopping",
                    "reason": "the node is stopping before the transaction committed (it "
                              "may still commit)"}
        if self._stopping.is_set():
            return stopping
        submit = asyncio.ensure_future(self.node.submit_tx(data, "commit"))
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({submit, stop}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            submit.cancel()
            raise
        finally:
            stop.cancel()
        if submit.done():
            return submit.result()
        submit.cancel()  # its commit waiter goes with it; the node cancels the rest
        return stopping

    async def post_tx(self, request: web.Request) -> web.Response:
        mode = request.query.get("mode", "sync")
        if mode not in ("async", "sync", "commit"):
            raise ApiError(400, "bad_mode", "mode must be async, sync or commit")
        ctype = request.content_type
        body = await request.read()
        if ctype == "application/json":
            data = _json_b64(body, "tx", many=False)[0]
        elif ctype in ("application/msgpack", "application/octet-stream", "application/x-msgpack"):
            data = body
        else:
            raise ApiError(415, "bad_content_type",
                           "use application/msgpack (raw tx bytes) or application/json")
        if not data:
            raise ApiError(400, "empty_body", "no transaction in the request body")
        refused = self._stateless_check(data) if mode == "async" else None
        if refused is not None:
            result = refused
        elif mode == "commit":
            result = await self._submit_commit(data)
        else:
            result = await self.node.submit_tx(data, mode)
        status = 200 if result["code"] == "ok" else (503 if result["code"] in (
            "mempool_full", "sender_full", "timeout", "stopping") else 400)
        if mode == "commit" and result.get("height") is not None:
            status = 200  # committed: the receipt's code says whether it applied
        if status != 200:
            result = {"error": result["code"], "message": result["reason"], **result}
        return json_response(result, status)

    async def post_tx_batch(self, request: web.Request) -> web.Response:
        """Up to MAX_BATCH transactions in one request, each checked as in mode=sync."""
        body = await request.read()
        if request.content_type == "application/json":
            datas = _json_b64(body, "txs", many=True)
        elif request.content_type in ("application/msgpack", "application/octet-stream"):
            try:
                datas = encoding.decode(body, max_size=len(body) or 1)
            except encoding.EncodingError as exc:
                raise ApiError(400, "bad_encoding", f"body is not canonical msgpack: {exc}") \
                    from None
            if not isinstance(datas, list) or not all(isinstance(d, bytes) for d in datas):
                raise ApiError(400, "bad_batch", "body must be an array of byte strings")
        else:
            raise ApiError(415, "bad_content_type", "use application/msgpack or application/json")
        if not datas or len(datas) > MAX_BATCH:
            raise ApiError(400, "bad_batch", f"a batch holds 1 to {MAX_BATCH} transactions")
        results = await self.node.admit_many(datas)
        return json_response({"results": results,
                      "accepted": sum(1 for r in results if r["code"] == "ok")})

    async def get_tx(self, request: web.Request) -> web.Response:
        h = _hex32(request.match_info["hash"], "hash")
        found = self.queries.tx(h)
        if found is None:
            raise ApiError(404, "not_found", "no committed or pending transaction with that hash")
        return json_response(found)

    async def _block(self, request: web.Request, height: int) -> web.Response:
        if _format(request) == "msgpack":
            raw = self.queries.block_bytes(height)
            if raw is None:
                raise ApiError(404, "not_found", f"no block at height {height}")
            return web.Response(body=raw, content_type="application/msgpack")
        doc = self.queries.block_json(height)
        if doc is None:
            raise ApiError(404, "not_found", f"no block at height {height}")
        return json_response(doc)

    async def get_block(self, request: web.Request) -> web.Response:
        return await self._block(request, _height(request.match_info["height"]))

    async def get_latest_block(self, request: web.Request) -> web.Response:
        _format(request)
        height = self.queries.height
        if height == 0:
            raise ApiError(404, "not_found", "no block committed yet")
        return await self._block(request, height)

    async def get_certificate(self, request: web.Request) -> web.Response:
        height = _height(request.match_info["height"])
        fmt = _format(request)
        cert = self.queries.certificate(height)
        if cert is None:
            raise ApiError(404, "not_found", f"no certificate for height {height}")
        if fmt == "msgpack":
            return web.Response(body=cert.encode(), content_type="application/msgpack")
        return json_response(to_jsonable(cert.to_map()))

    async def get_status(self, request: web.Request) -> web.Response:
        return json_response(self.node.status())

    async def get_health(self, request: web.Request) -> web.Response:
        ok, why = self.node.health()
        return json_response({"ok": ok, "reason": why}, 200 if ok else 503)

    async def get_ready(self, request: web.Request) -> web.Response:
        ok, why = self.node.readiness()
        return json_response({"ok": ok, "reason": why}, 200 if ok else 503)

    async def get_validators(self, request: web.Request) -> web.Response:
        text = request.query.get("height")
        height = None if text is None else _number(text, "height")
        doc = self.queries.validators_json(height)
        if doc is None:
            raise ApiError(404, "not_found", f"no validator set known for height {height} "
                                             f"(known: 1 to {self.queries.height + 2})")
        return json_response(doc)

    async def get_validator_changes(self, request: web.Request) -> web.Response:
        text = request.query.get("from")
        after = 0 if text is None else _number(text, "from")
        limit = _limit(request)
        return json_response(self.queries.validator_changes(after, limit))

    def _governance(self, method: str, *args: Any) -> Any:
        try:
            return self.queries.governance(method, *args)
        except NotImplementedError:
            raise ApiError(501, "not_implemented", f"this node's rules have no {method} "
                                                   "(governance proposals are not in this "
                                                   "version)") from None

    async def get_proposals(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        if status is not None and status not in PROPOSAL_STATUSES:
            raise ApiError(400, "bad_query", f"status must be one of "
                                             f"{', '.join(PROPOSAL_STATUSES)}, got "
                                             f"{status[:40]!r}")
        text = request.query.get("after")
        after = 0 if text is None else _number(text, "after")
        found = self._governance("list_proposals", status, after, _limit(request))
        return json_response(found if isinstance(found, dict) else {"proposals": found})

    async def get_proposal(self, request: web.Request) -> web.Response:
        pid = _number(request.match_info["id"], "proposal_id")
        found = self._governance("get_proposal", pid)
        if found is None:
            raise ApiError(404, "not_found", f"no proposal {pid}")
        return json_response(found)

    async def get_params_history(self, request: web.Request) -> web.Response:
        found = self._governance("params_history")
        doc = found if isinstance(found, dict) else {"history": found}
        if _flag(request, "proof"):
            # proof bundles of the history's state records: verify-share proves the
            # parameters of a period with them (docs/governance.md)
            doc["proofs"] = self.queries.state_proofs(_params_history_keys)
        return json_response(doc)

    async def get_genesis(self, request: web.Request) -> web.Response:
        return json_response(self.queries.genesis.doc)

    async def get_account(self, request: web.Request) -> web.Response:
        pub = _hex32(request.match_info["pub_key"], "pub_key")
        return json_response(self.queries.account(pub))

    async def _record(self, request: web.Request, kind: str, ident: str) -> web.Response:
        _record_id(kind, ident)
        proof = _flag(request, "proof")
        doc = self.queries.record(kind, ident, proof)
        if doc is None:
            raise ApiError(404, "not_found", f"no {kind} {ident!r}")
        return json_response(doc)

    async def get_member(self, request: web.Request) -> web.Response:
        return await self._record(request, "member", request.match_info["id"])

    async def get_claim(self, request: web.Request) -> web.Response:
        return await self._record(request, "claim", request.match_info["id"])

    async def get_period(self, request: web.Request) -> web.Response:
        return await self._record(request, "period", request.match_info["n"])

    async def get_share(self, request: web.Request) -> web.Response:
        member = _record_id("member", request.match_info["id"])
        period = _number(request.match_info["period"], "period")
        doc = self.queries.member_share(member, period)
        if doc is None:
            raise ApiError(404, "not_found", "no such member or period")
        return json_response(doc)

    async def get_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one ``data:`` JSON line per new block and per tx result."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        queue = self.events.subscribe()
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if item is None:  # the node is stopping or this subscriber fell behind
                    break
                await resp.write(
                    f"event: {item['type']}\ndata: {json.dumps(item)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.events.unsubscribe(queue)
        return resp

    async def get_metrics(self, request: web.Request) -> web.Response:
        self.node.refresh_metrics()
        body = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": self.metrics.content_type})

    async def get_openapi(self, request: web.Request) -> web.Response:
        return json_response(OPENAPI)
