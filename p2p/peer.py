"""One authenticated connection: bounded priority send queue, writer, reader, keepalive.

A ``Peer`` is created by ``Network`` after a successful handshake and lives until
``close``; its three tasks (read, write, keepalive) stop together. Incoming messages go to
``Network._dispatch``, which owns handlers, de-duplication and scoring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from chain import encoding
from p2p.errors import FrameError, SecureChannelError
from p2p.frame import FrameDecoder, encode_frame
from p2p.handshake import HandshakeResult, parse_reject
from p2p.messages import BYE, PING, Priority
from p2p.sendqueue import Push, SendQueue

if TYPE_CHECKING:
    from p2p.network import Network

log = logging.getLogger("mutual.p2p")

READ_CHUNK = 64 * 1024
# Only wait for the socket to drain when this much is buffered in the transport; keeps
# per-message cost low while bounding kernel-side plus transport-side memory.
WRITE_HIGH_WATER = 256 * 1024
WRITE_BATCH_BYTES = 256 * 1024


class Peer:
    def __init__(self, net: Network, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, result: HandshakeResult, *, outbound: bool,
                 address: tuple[str, int]) -> None:
        cfg = net.config
        self.net = net
        self.id = result.peer_key
        self.outbound = outbound
        self.address = address
        self._reader = reader
        self._writer = writer
        self._send = result.send
        self._recv = result.recv
        self._max_frame = cfg.max_frame_size
        self.queue = SendQueue(cfg.queue_max_messages, cfg.queue_max_bytes)
        self._decoder = FrameDecoder(cfg.max_frame_size)
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._pong = asyncio.Event()
        self._expect: int | None = None
        self._ping_nonce = 0
        self._frames_in = 0
        self.close_reason: str | None = None
        self.close_message = ""
        self.connected_at = net.clock()
        self.rtt: float | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    def __repr__(self) -> str:
        direction = "out" if self.outbound else "in"
        return f"Peer({self.id.hex()[:12]} {direction} {self.address[0]}:{self.address[1]})"

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def enqueue(self, priority: Priority, payload: bytes) -> Push:
        """Queue an encoded message; never blocks, never grows past the queue bounds."""
        if self.closed:
            return Push.DROPPED
        result = self.queue.push(priority, payload)
        if result is Push.QUEUED:
            self._wake.set()
        return result

    def close(self, reason: str, message: str = "", *, bye: bool = False) -> None:
        """Close at once; with ``bye`` first tell the peer why (best effort)."""
        if self.closed:
            return
        self.close_reason = reason
        self.close_message = message
        if bye and not self._writer.is_closing():
            with contextlib.suppress(Exception):
                payload = encoding.encode([BYE, {"message": message[:200], "reason": reason}])
                self._writer.write(encode_frame(self._send.seal(payload), self._max_frame))
        self.queue.clear()
        self._closed.set()
        self._wake.set()
        # transport.close() still flushes what is buffered (the bye) before closing
        self._writer.close()
        self.net._peer_closed(self)

    async def run(self) -> None:
        """Run until closed; always leaves the socket closed and the tasks finished."""
        tasks = [asyncio.create_task(self._guard(self._read_loop)),
                 asyncio.create_task(self._guard(self._write_loop)),
                 asyncio.create_task(self._guard(self._keepalive))]
        try:
            await self._closed.wait()
        except asyncio.CancelledError:
            self.close("shutdown", "node is stopping", bye=True)
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)

    async def _guard(self, loop: Callable[[], Awaitable[None]]) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as exc:
            self.close("connection_lost", str(exc))
        except Exception as exc:  # a bug must not leave a half-dead peer behind
            log.exception("p2p: internal error on %r", self)
            self.close("internal", repr(exc))

    async def _read_loop(self) -> None:
        net = self.net
        while not self.closed:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                self.close("eof", "peer closed the connection")
                return
            self.bytes_in += len(data)
            net.metrics.bytes_in += len(data)
            try:
                frames = self._decoder.feed(data)
            except FrameError as exc:
                net._stream_offence(self, "bad_frame", str(exc))
                return
            for frame in frames:
                try:
                    payload = self._recv.open(frame)
                except SecureChannelError as exc:
                    rejected = parse_reject(frame) if self._frames_in == 0 else None
                    if rejected is not None:  # refused right after its handshake finished
                        self.close("refused", f"peer refused us: {rejected[0]}: {rejected[1]}")
                    else:
                        net._stream_offence(self, "bad_frame", str(exc))
                    return
                self._frames_in += 1
                await net._dispatch(self, payload)
                if self.closed:
                    return

    async def _write_loop(self) -> None:
        net = self.net
        writer = self._writer
        while not self.closed:
            item = self.queue.pop()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            # batch what is queued into one write: one syscall for many small messages
            chunks = []
            size = 0
            while item is not None:
                frame = encode_frame(self._send.seal(item), self._max_frame)
                chunks.append(frame)
                size += len(frame)
                if size >= WRITE_BATCH_BYTES:
                    break
                item = self.queue.pop()
            writer.write(b"".join(chunks))
            self.bytes_out += size
            net.metrics.bytes_out += size
            if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                try:
                    await asyncio.wait_for(writer.drain(), net.config.write_timeout)
                except TimeoutError:
                    net.metrics.slow_peers += 1
                    self.close("slow_peer", "peer did not read for "
                                            f"{net.config.write_timeout} s")
                    return

    async def _keepalive(self) -> None:
        cfg = self.net.config
        while not self.closed:
            await asyncio.sleep(cfg.ping_interval)
            self._ping_nonce += 1
            self._expect = self._ping_nonce
            self._pong.clear()
            sent = self.net.clock()
            self.enqueue(Priority.CONTROL, encoding.encode([PING, self._ping_nonce]))
            try:
                await asyncio.wait_for(self._pong.wait(), cfg.ping_timeout)
            except TimeoutError:
                self.close("ping_timeout", f"no pong within {cfg.ping_timeout} s")
                return
            self.rtt = self.net.clock() - sent

    def on_pong(self, nonce: int) -> None:
        if nonce == self._expect:
            self._expect = None
            self._pong.set()
