"""Tripwires for the aiohttp internals node/httpserver.py reaches into.

aiohttp 3.14 has no public way to (1) answer the errors it raises before routing in the
API's JSON shape (``RequestHandler.handle_error`` is called directly, middlewares never
run), (2) hand a broken chunked body's parse error to the request waiting for that body,
or (3) cap the open connections of a server started by ``web.AppRunner``/``web.TCPSite``
(``backlog`` only bounds the kernel's queue of not yet accepted connections). So
node/httpserver.py subclasses ``web.RequestHandler`` and ``web.Server`` and overrides
``Application._make_handler``, and pyproject.toml pins aiohttp below 3.15. These tests fail
with a message naming what to re-check if an aiohttp upgrade moves any of it; the behaviour
itself is tested end to end in tests/test_api_hardening.py.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import aiohttp
from aiohttp import web

from node import httpserver

RECHECK = (f"aiohttp {aiohttp.__version__} changed an internal that node/httpserver.py "
           "relies on; re-check {what} there (and the aiohttp pin in pyproject.toml)")


def _params(fn) -> list[str]:
    return list(inspect.signature(fn).parameters)


def test_the_internals_httpserver_overrides_still_exist() -> None:
    checks = {
        "Application._make_handler (the one place AppRunner builds its web.Server)":
            callable(getattr(web.Application, "_make_handler", None)),
        "RequestHandler.handle_error(request, status, exc, message)":
            _params(web.RequestHandler.handle_error)[:5]
            == ["self", "request", "status", "exc", "message"],
        "RequestHandler's parser queue (_messages, _current_request) in data_received":
            {"_messages", "_current_request"} <= set(web.RequestHandler.__slots__),
        "Server.connection_made(handler, transport) / connection_lost(handler, exc)":
            _params(web.Server.connection_made) == ["self", "handler", "transport"]
            and _params(web.Server.connection_lost) == ["self", "handler", "exc"],
        "Server.__init__(handler, request_factory=, handler_cancellation=, loop=, **kwargs)":
            {"handler", "request_factory", "handler_cancellation", "loop", "kwargs"}
            <= set(_params(web.Server.__init__)),
    }
    broken = [what for what, ok in checks.items() if not ok]
    assert not broken, RECHECK.format(what="; ".join(broken))


async def test_app_runner_builds_the_capped_server_with_json_errors() -> None:
    app = httpserver.Application()
    app[httpserver.MAX_CONNECTIONS_KEY] = 1

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)  # as node/node.py starts the API
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        server = runner.server
        assert isinstance(server, httpserver.CappedServer), RECHECK.format(
            what="Application._make_handler (AppRunner no longer calls it: no connection cap)")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # kept alive
            async with asyncio.timeout(5):
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            assert server.open_connections == 1 and all(
                isinstance(h, httpserver.JsonErrorHandler) for h in server.connections
            ), RECHECK.format(what="CappedServer.__call__ / connection_made (the cap's count)")
        finally:
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.read()
            assert head.split(b" ")[1] == b"400" and json.loads(body)["error"] == (
                "header_too_large"), RECHECK.format(
                what="JsonErrorHandler.handle_error (errors before routing are not JSON)")
        finally:
            writer.close()
    finally:
        await runner.cleanup()
