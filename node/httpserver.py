"""The API's HTTP server: aiohttp's, with two things its public interface does not offer.

* Errors aiohttp answers itself, before routing (a malformed request, a request line or
  header over 8190 bytes, a broken chunked body), are answered in the API's JSON error shape
  ``{"error": code, "message": text}`` and logged in one line (``JsonErrorHandler``).
* At most ``MAX_CONNECTIONS_KEY`` connections are served at once; a connection beyond that
  is marked ``refused`` (the API's middleware answers its request 503) and closed at the
  latest ``REFUSED_CLOSE_S`` after it was accepted (``CappedServer``).

Both reach into aiohttp internals (``Application._make_handler``, ``web.Server``'s
connection hooks, ``RequestHandler``'s parser queue and ``handle_error``): aiohttp 3.14 has
no public hook for any of them (middlewares never see errors raised before routing, and
``backlog`` bounds only connections not yet accepted), so pyproject.toml pins aiohttp,
tests/test_httpserver.py names what to re-check when an upgrade moves them, and
tests/test_api_hardening.py checks what they do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

log = logging.getLogger("node.api")

REFUSED_CLOSE_S = 1.0


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data), status=status, content_type="application/json")


def closing(resp: web.Response) -> web.Response:
    resp.force_close()
    return resp


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's per-connection protocol; answers its own errors (a malformed request, a
    request line or header over 8190 bytes) in the API's JSON shape, logged in one line."""

    __slots__ = ("refused",)

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.refused = False

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        # aiohttp queues a parse error met inside a chunked body as the *next* message and
        # leaves the request being read waiting for the rest of its body (a 408 after
        # BODY_TIMEOUT_S): hand the error to that body, so it is answered 400 at once
        request = self._current_request
        if request is None or len(self._messages) <= queued:
            return
        error = getattr(self._messages[-1][0], "exc", None)
        if isinstance(error, HttpProcessingError) and not request.content.is_eof():
            request.content.set_exception(web.RequestPayloadError(
                f"malformed request body: {error.message}"))

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("response already started, cannot send an error")
        if status >= 500:
            log.error("API error before routing (%s)", status, exc_info=exc)
            code, text = "internal", "internal error (see node log)"
        else:
            code = "header_too_large" if isinstance(exc, LineTooLong) else "bad_request"
            text = message or (str(exc) if exc else "bad request")
            log.debug("refused a malformed HTTP request from %s: %s", request.remote, text)
        return closing(json_response({"error": code, "message": text}, status))


class CappedServer(web.Server):
    """aiohttp's low-level server with the JSON error handler and a connection cap."""

    def __init__(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.open_connections = 0
        self.refused_connections = 0
        self._last_warning = float("-inf")

    def __call__(self) -> JsonErrorHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self.open_connections += 1
        if self.open_connections > self.max_connections and isinstance(handler, JsonErrorHandler):
            handler.refused = True  # its request gets a 503; closed soon in any case
            self._loop.call_later(REFUSED_CLOSE_S, handler.force_close)
            self.refused_connections += 1
            now = time.monotonic()
            if now - self._last_warning >= 10:  # one line per 10 s, however many
                self._last_warning = now
                log.warning("API connection limit reached: refusing connections",
                            extra={"fields": {"limit": self.max_connections,
                                              "refused_total": self.refused_connections}})

    def connection_lost(self, handler: web.RequestHandler,
                        exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self.open_connections -= 1


MAX_CONNECTIONS_KEY = web.AppKey("max_connections", int)

with warnings.catch_warnings():  # aiohttp discourages subclassing; this is its one hook
    warnings.simplefilter("ignore", DeprecationWarning)

    class Application(web.Application):
        """An Application whose low-level server is ``CappedServer``."""

        def _make_handler(self, *, loop: asyncio.AbstractEventLoop | None = None,
                          **kwargs: Any) -> web.Server:
            base = super()._make_handler(loop=loop, **kwargs)
            return CappedServer(base.request_handler, request_factory=base.request_factory,
                           handler_cancellation=base.handler_cancellation, loop=base._loop,
                           max_connections=self[MAX_CONNECTIONS_KEY], **base._kwargs)
