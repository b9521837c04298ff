"""The peer network: listener, dialler, handshakes, dispatch to handlers, gossip, scoring.

The node uses only this module::

    net = Network(chain_id, node_key, genesis_hash=genesis.hash,
                  listen=("127.0.0.1", 26656), allowed=keys,
                  persistent_peers=[("127.0.0.1", 26657)])
    net.on("tx", handler)            # async def handler(peer_id: bytes, body) -> None
    await net.start()
    await net.broadcast("tx", tx_bytes, exclude=peer_id)
    await net.send(peer_id, "status", {"height": 7})
    await net.stop()

``broadcast`` and ``send`` never block on a slow peer: they put the encoded message in
each peer's bounded send queue and return. A handler runs in the reading task of the
peer that sent the message (so messages from one peer are handled in order); it may
raise ``InvalidMessage`` to penalise that peer; any other exception is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from chain.crypto import PrivateKey, check_chain_id
from chain.hashing import sha256
from p2p.errors import (
    FrameError,
    HandshakeError,
    HandshakeRefused,
    InvalidMessage,
    MessageError,
    P2PError,
    PeerRefused,
)
from p2p.frame import DEFAULT_MAX_FRAME_SIZE, HEADER_SIZE, encode_frame, parse_header
from p2p.handshake import GENESIS_HASH_SIZE, HANDSHAKE_MAX_FRAME, Handshake, encode_reject
from p2p.messages import BYE, CONTROL_TYPES, PING, PONG, MessageRegistry, Priority
from p2p.peer import Peer
from p2p.scoring import (
    CORRUPT_STREAM,
    INVALID_MESSAGE,
    MALFORMED_MESSAGE,
    OVERSIZE_MESSAGE,
    UNKNOWN_TYPE,
    PeerScores,
)
from p2p.seen import SeenCache
from p2p.sendqueue import Push

log = logging.getLogger("mutual.p2p")

Handler = Callable[[bytes, Any], Awaitable[None] | None]
PeerCallback = Callable[[bytes], Awaitable[None] | None]


@dataclass
class NetworkConfig:
    """Limits and timings; the defaults suit a validator network on a WAN or LAN."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_peers: int = 50
    max_pending_handshakes: int = 32
    handshake_timeout: float = 5.0
    dial_timeout: float = 5.0
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    write_timeout: float = 10.0
    queue_max_messages: int = 4096
    queue_max_bytes: int = 32 * 1024 * 1024
    seen_cache_size: int = 100_000
    ban_threshold: int = 100
    ban_seconds: float = 60.0
    score_recovery_per_s: float = 1.0
    backoff_base: float = 0.5
    backoff_max: float = 30.0


@dataclass
class Metrics:
    """Plain counters for the node to export (e.g. through prometheus-client)."""

    peers: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    messages_in: Counter[str] = field(default_factory=Counter)  # by type
    messages_out: Counter[str] = field(default_factory=Counter)  # by type, per peer queued
    dropped: Counter[str] = field(default_factory=Counter)  # by type: send queue full
    duplicates: int = 0  # gossip already seen, not handled again
    unhandled: Counter[str] = field(default_factory=Counter)  # no handler registered
    invalid: Counter[str] = field(default_factory=Counter)  # offences by reason
    handler_errors: int = 0  # handler raised something other than InvalidMessage
    handshake_failures: Counter[str] = field(default_factory=Counter)  # by reason
    disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    connects: int = 0
    bans: int = 0
    slow_peers: int = 0


@dataclass(frozen=True)
class PeerInfo:
    id: bytes
    address: tuple[str, int]
    outbound: bool
    connected_for: float
    score: float
    rtt: float | None
    queued: int
    bytes_in: int
    bytes_out: int


def allowed_from_genesis(genesis: Any) -> set[bytes]:
    """Node keys of the genesis validators (a validator without ``node_key`` uses its
    validator key as node key)."""
    return {v.node_key or v.pub_key for v in genesis.validators.validators}


NO_GENESIS = bytes(GENESIS_HASH_SIZE)


class Network:
    """``genesis_hash`` (sha256 of the canonical genesis, ``Genesis.hash``) is announced in
    the handshake and a peer with another one is refused (``genesis_mismatch``). A node
    must pass it; the all-zero default ``NO_GENESIS`` is for tools and tests that run no
    chain and matches only other such networks."""

    def __init__(self, chain_id: str, node_key: PrivateKey, *,
                 genesis_hash: bytes = NO_GENESIS,
                 listen: tuple[str, int] | None = ("127.0.0.1", 0),
                 allowed: Iterable[bytes] = (),
                 persistent_peers: Iterable[tuple[str, int]] = (),
                 config: NetworkConfig | None = None,
                 registry: MessageRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None,
                 on_task_failure: Callable[[str, BaseException], None] | None = None) -> None:
        """``on_task_failure(name, exc)`` hears of any task of the network that raised
        (a listener, dialer, connection or callback task: expected errors are handled
        inside them, so this is a bug); the node stops on it. Without it the failure is
        only logged."""
        self.chain_id = check_chain_id(chain_id)
        if not (isinstance(genesis_hash, bytes) and len(genesis_hash) == GENESIS_HASH_SIZE):
            raise ValueError("genesis_hash must be 32 bytes (sha256 of the genesis)")
        self.genesis_hash = genesis_hash
        self._key = node_key
        self.node_id: bytes = node_key.public_key.raw
        self.config = config or NetworkConfig()
        self.registry = registry or MessageRegistry()
        self.clock = clock
        self._rng = rng or random.Random()
        self._listen = listen
        self._allowed: frozenset[bytes] = frozenset(allowed)
        self._persistent: list[tuple[str, int]] = []
        for host, port in persistent_peers:
            self._persistent.append((str(host), int(port)))
        self.metrics = Metrics()
        self._handlers: dict[str, Handler] = {}
        self._on_connect: list[PeerCallback] = []
        self._on_disconnect: list[PeerCallback] = []
        self._peers: dict[bytes, Peer] = {}
        self._addr_keys: dict[tuple[str, int], bytes] = {}
        self._seen = SeenCache(self.config.seen_cache_size)
        self._scores = PeerScores(threshold=self.config.ban_threshold,
                                  recovery_per_s=self.config.score_recovery_per_s,
                                  ban_seconds=self.config.ban_seconds, clock=clock)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._dialers: dict[tuple[str, int], asyncio.Task] = {}
        self._on_task_failure = on_task_failure
        self._pending = 0
        self._started = False
        self._stopping = False
        self.listen_address: tuple[str, int] | None = None

    # ----------------------------------------------------------------- public API

    def on(self, msg_type: str, handler: Handler) -> None:
        """Register the handler for a message type (one per type; replaces any earlier)."""
        if msg_type in CONTROL_TYPES:
            raise ValueError(f"{msg_type!r} is handled by the p2p layer itself")
        self.registry.get(msg_type)  # raises for an unknown type
        self._handlers[msg_type] = handler

    def on_connect(self, callback: PeerCallback) -> None:
        """Called with the peer id when a peer becomes connected (not on a replacement)."""
        self._on_connect.append(callback)

    def on_disconnect(self, callback: PeerCallback) -> None:
        """Called with the peer id when its last connection is gone."""
        self._on_disconnect.append(callback)

    def set_allowed(self, keys: Iterable[bytes]) -> None:
        """Replace the allow-list; connected peers no longer on it are disconnected."""
        self._allowed = frozenset(keys)
        for peer in list(self._peers.values()):
            if peer.id not in self._allowed:
                peer.close("not_allowed", "removed from the allow-list", bye=True)

    @property
    def allowed(self) -> frozenset[bytes]:
        return self._allowed

    async def start(self) -> None:
        """Listen (if configured) and start dialling the persistent peers.

        Raises ``P2PError`` with a readable message if the address cannot be bound."""
        if self._started:
            raise RuntimeError("network already started")
        self._started = True
        if self._listen is not None:
            try:
                self._server = await asyncio.start_server(
                    self._handle_inbound, self._listen[0], self._listen[1])
            except OSError as exc:
                self._started = False
                raise P2PError(f"cannot listen for peers on {self._listen[0]}:"
                               f"{self._listen[1]}: {exc.strerror or exc}") from exc
            sock = self._server.sockets[0].getsockname()
            self.listen_address = (sock[0], sock[1])
            log.info("p2p: listening on %s:%d as %s", sock[0], sock[1], self.node_id.hex()[:12])
        for addr in self._persistent:
            self._start_dialer(addr)

    def add_persistent_peer(self, host: str, port: int) -> None:
        """Dial ``host:port`` now and whenever the connection is lost, with backoff."""
        addr = (str(host), int(port))
        if addr in self._persistent:
            return
        self._persistent.append(addr)
        if self._started and not self._stopping:
            self._start_dialer(addr)

    async def connect(self, host: str, port: int) -> bytes:
        """Dial once and return the peer id; raises ``HandshakeError`` on failure
        (reason ``unreachable`` when no TCP connection could be made)."""
        peer = await self._dial((host, port))
        return peer.id

    async def stop(self) -> None:
        """Close the listener, say bye to every peer, and wait for every task to end."""
        if self._stopping:
            return
        self._stopping = True
        for task in self._dialers.values():
            task.cancel()
        if self._server is not None:
            self._server.close()
        for peer in list(self._peers.values()):
            peer.close("shutdown", "node is stopping", bye=True)
        tasks = set(self._tasks) | set(self._dialers.values())
        for _ in range(3):  # disconnect callbacks may spawn a few more tasks meanwhile
            if not tasks:
                break
            _, pending = await asyncio.wait(tasks, timeout=2.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2.0)
            tasks = set(self._tasks)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self.metrics.peers = len(self._peers)

    async def broadcast(self, msg_type: str, body: Any,
                        exclude: bytes | Iterable[bytes] | None = None) -> int:
        """Queue a message to every connected peer except ``exclude``; return how many
        peers it was queued for. Gossip types are marked seen, so echoes are ignored."""
        spec, payload = self._encode(msg_type, body)
        if spec.gossip:
            self._seen.add(sha256(payload))
        if exclude is None:
            skip: set[bytes] = set()
        elif isinstance(exclude, bytes | bytearray):
            skip = {bytes(exclude)}
        else:
            skip = set(exclude)
        sent = 0
        for peer in list(self._peers.values()):
            if peer.id not in skip and self._enqueue(peer, spec.name, spec.priority, payload):
                sent += 1
        return sent

    async def send(self, peer_id: bytes, msg_type: str, body: Any) -> bool:
        """Queue a message to one peer; False if it is not connected or the message was
        dropped (gossip on a full queue) or the peer was disconnected as too slow."""
        spec, payload = self._encode(msg_type, body)
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        return self._enqueue(peer, spec.name, spec.priority, payload)

    def forget(self, msg_type: str, body: Any) -> None:
        """Drop a gossip message from the seen-cache, so the same bytes are handled again
        when they next arrive (for a message a handler could not use yet)."""
        _, payload = self._encode(msg_type, body)
        self._seen.discard(sha256(payload))

    def peers(self) -> list[bytes]:
        """Ids (node public keys) of the connected peers."""
        return list(self._peers)

    def peer_info(self) -> list[PeerInfo]:
        now = self.clock()
        return [PeerInfo(p.id, p.address, p.outbound, now - p.connected_at,
                         self._scores.score(p.id), p.rtt, len(p.queue), p.bytes_in,
                         p.bytes_out) for p in self._peers.values()]

    def report(self, peer_id: bytes, reason: str, penalty: int = INVALID_MESSAGE) -> bool:
        """Penalise a peer for something invalid found outside a handler (e.g. a block
        that failed verification later). True if this got the peer banned."""
        self.metrics.invalid["reported"] += 1
        return self._penalise(peer_id, penalty, reason)

    def ban(self, peer_id: bytes, seconds: float | None = None, reason: str = "banned") -> None:
        """Ban a peer now (default ``config.ban_seconds``) and disconnect it."""
        self._scores.ban(peer_id, seconds)
        self.metrics.bans += 1
        self._disconnect(peer_id, "banned", reason)

    def unban(self, peer_id: bytes) -> None:
        self._scores.unban(peer_id)

    def banned_for(self, peer_id: bytes) -> float:
        """Seconds left on a peer's ban, 0 when it is not banned."""
        return self._scores.banned_for(peer_id)

    def score(self, peer_id: bytes) -> float:
        return self._scores.score(peer_id)

    # ---------------------------------------------------------------- internals

    def _encode(self, msg_type: str, body: Any) -> tuple[Any, bytes]:
        if msg_type in CONTROL_TYPES:
            raise ValueError(f"{msg_type!r} is sent by the p2p layer itself")
        return self.registry.encode(msg_type, body)

    def _enqueue(self, peer: Peer, name: str, priority: Priority, payload: bytes) -> bool:
        result = peer.enqueue(priority, payload)
        if result is Push.QUEUED:
            self.metrics.messages_out[name] += 1
            return True
        self.metrics.dropped[name] += 1
        if result is Push.OVERFLOW:
            self.metrics.slow_peers += 1
            log.warning("p2p: %r cannot keep up (send queue full); disconnecting", peer)
            peer.close("slow_peer", "send queue full", bye=True)
        return False

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("p2p: task %s failed: %r", task.get_name(), exc)
        if self._on_task_failure is not None:
            self._on_task_failure(f"p2p task {task.get_name()}", exc)

    def _fire(self, callbacks: list[PeerCallback], peer_id: bytes) -> None:
        for cb in callbacks:
            try:
                result = cb(peer_id)
                if inspect.isawaitable(result):
                    self._spawn(result)
            except Exception:
                log.exception("p2p: peer callback failed")

    def _vet(self, key: bytes) -> None:
        left = self._scores.banned_for(key)
        if left > 0:
            raise HandshakeRefused("banned", f"banned for {left:.0f} more seconds")
        if key not in self._peers and len(self._peers) >= self.config.max_peers:
            raise HandshakeRefused("too_many_peers", f"already {len(self._peers)} peers")
        if self._stopping:
            raise HandshakeRefused("shutdown", "node is stopping")

    async def _handle_inbound(self, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        peername = writer.get_extra_info("peername") or ("?", 0)
        address = (str(peername[0]), int(peername[1]))
        if self._stopping or self._pending >= self.config.max_pending_handshakes:
            self.metrics.handshake_failures["too_many_pending"] += 1
            with contextlib.suppress(Exception):
                writer.write(encode_frame(encode_reject("too_many_peers",
                                                        "too many pending handshakes")))
            writer.close()
            return
        with contextlib.suppress(HandshakeError):
            await self._establish(reader, writer, dialer=False, address=address)

    async def _dial(self, addr: tuple[str, int]) -> Peer:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(addr[0], addr[1]),
                self.config.dial_timeout)
        except (OSError, TimeoutError) as exc:
            self.metrics.handshake_failures["unreachable"] += 1
            raise HandshakeError("unreachable",
                                 f"cannot connect to {addr[0]}:{addr[1]}: {exc}") from exc
        return await self._establish(reader, writer, dialer=True, address=addr)

    async def _establish(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         *, dialer: bool, address: tuple[str, int]) -> Peer:
        """Handshake, register, start the peer; returns the connection kept for that id
        (an older one if the new connection lost the duplicate tie-break)."""
        self._pending += 1
        hs = Handshake(self.chain_id, self._key, genesis_hash=self.genesis_hash,
                       dialer=dialer, allowed=self._allowed, vet=self._vet)
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                writer.write(encode_frame(hs.hello()))
                while not hs.done:
                    header = await reader.readexactly(HEADER_SIZE)
                    payload = await reader.readexactly(parse_header(header, HANDSHAKE_MAX_FRAME))
                    try:
                        reply = hs.receive(payload)
                    except HandshakeRefused as exc:
                        writer.write(encode_frame(exc.reply))
                        raise
                    if reply is not None:
                        writer.write(encode_frame(reply))
                await writer.drain()
        except HandshakeError as exc:
            self._handshake_failed(writer, address, exc)
            raise
        except TimeoutError:
            err = HandshakeError("timeout",
                                 f"handshake not done in {self.config.handshake_timeout} s")
            self._handshake_failed(writer, address, err)
            raise err from None
        except asyncio.IncompleteReadError:
            err = HandshakeError("eof", "connection closed during the handshake")
            self._handshake_failed(writer, address, err)
            raise err from None
        except FrameError as exc:
            err = HandshakeError("bad_frame", str(exc))
            self._handshake_failed(writer, address, err)
            raise err from None
        except (ConnectionError, OSError) as exc:
            err = HandshakeError("io", str(exc))
            self._handshake_failed(writer, address, err)
            raise err from None
        except BaseException:
            writer.close()
            raise
        finally:
            self._pending -= 1
        assert hs.result is not None
        # readexactly leaves any bytes that followed the handshake in the reader's buffer;
        # the peer's read loop decodes them.
        peer = Peer(self, reader, writer, hs.result, outbound=dialer, address=address)
        return self._register(peer)

    def _handshake_failed(self, writer: asyncio.StreamWriter, address: tuple[str, int],
                          exc: HandshakeError) -> None:
        self.metrics.handshake_failures[exc.reason] += 1
        level = logging.DEBUG if exc.reason in ("eof", "shutdown") else logging.WARNING
        # one line per attempt; a refusal either way is never scored (the key is unproven,
        # and e.g. genesis_mismatch is a configuration error, not misbehaviour)
        by = " (refused by the peer)" if isinstance(exc, PeerRefused) else ""
        log.log(level, "p2p: handshake with %s:%s failed%s: %s", address[0], address[1], by,
                exc)
        writer.close()

    def _register(self, peer: Peer) -> Peer:
        existing = self._peers.get(peer.id)
        if existing is not None and not existing.closed:
            if not self._new_connection_wins(existing, peer):
                peer.close("duplicate", "already connected", bye=True)
                return existing
            self._peers[peer.id] = peer  # first, so closing the old fires no disconnect
            existing.close("duplicate", "replaced by a newer connection", bye=True)
            self._spawn(self._run_peer(peer))
            return peer
        if self._stopping or len(self._peers) >= self.config.max_peers:
            peer.close("too_many_peers", "no room for another peer", bye=True)
            raise HandshakeError("too_many_peers", "no room for another peer")
        self._peers[peer.id] = peer
        self.metrics.connects += 1
        self.metrics.peers = len(self._peers)
        log.info("p2p: connected %r", peer)
        self._spawn(self._run_peer(peer))
        self._fire(self._on_connect, peer.id)
        return peer

    def _new_connection_wins(self, existing: Peer, new: Peer) -> bool:
        # Same direction: the peer re-dialled (or we did), so the old one is stale.
        # Opposite directions (simultaneous dial): both ends keep the connection dialled by
        # the smaller node key, so they agree without talking.
        if existing.outbound == new.outbound:
            return True
        smaller = min(self.node_id, new.id)
        new_dialer = self.node_id if new.outbound else new.id
        return new_dialer == smaller

    async def _run_peer(self, peer: Peer) -> None:
        try:
            await peer.run()
        finally:
            peer.close("shutdown", "node is stopping")  # no-op when already closed

    def _peer_closed(self, peer: Peer) -> None:
        """Called by ``Peer.close``: forget the connection at once, so ``peers()`` and
        ``broadcast`` never see a closed peer."""
        self.metrics.disconnects[peer.close_reason or "unknown"] += 1
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
            self.metrics.peers = len(self._peers)
            log.info("p2p: disconnected %r: %s %s", peer, peer.close_reason,
                     peer.close_message)
            self._fire(self._on_disconnect, peer.id)

    def _start_dialer(self, addr: tuple[str, int]) -> None:
        if addr not in self._dialers or self._dialers[addr].done():
            task = asyncio.ensure_future(self._dial_loop(addr))
            task.set_name(f"dial {addr[0]}:{addr[1]}")
            # a dialer is not in _tasks (stop cancels dialers first), but fails the same way
            task.add_done_callback(self._task_done)
            self._dialers[addr] = task

    def backoff(self, attempt: int) -> float:
        """Delay before dial attempt ``attempt + 1``: exponential, capped, with jitter
        (uniform in [50 %, 100 %]) so restarted nodes do not dial in lock-step."""
        cfg = self.config
        base = min(cfg.backoff_max, cfg.backoff_base * (2 ** min(max(attempt - 1, 0), 30)))
        return base * self._rng.uniform(0.5, 1.0)

    async def _dial_loop(self, addr: tuple[str, int]) -> None:
        attempt = 0
        while not self._stopping:
            key = self._addr_keys.get(addr)
            current = self._peers.get(key) if key is not None else None
            if current is not None:
                await current.wait_closed()
                attempt = 1  # a short pause, so a flapping peer cannot cause a hot loop
                await asyncio.sleep(self.backoff(attempt))
                continue
            if key is not None and (left := self._scores.banned_for(key)) > 0:
                await asyncio.sleep(left)
                continue
            try:
                peer = await self._dial(addr)
            except HandshakeError as exc:
                if exc.reason == "self":
                    log.warning("p2p: persistent peer %s:%d is this node; not dialling it",
                                *addr)
                    return
                attempt += 1
                delay = self.backoff(attempt)
                log.debug("p2p: dial %s:%d failed (%s); retry in %.2f s", *addr, exc, delay)
                await asyncio.sleep(delay)
                continue
            self._addr_keys[addr] = peer.id
            attempt = 0

    # ---------------------------------------------------------------- dispatch

    def _penalise(self, peer_id: bytes, points: int, reason: str) -> bool:
        if self._scores.penalise(peer_id, points):
            self.metrics.bans += 1
            log.warning("p2p: banning %s for %.0f s: %s", peer_id.hex()[:12],
                        self.config.ban_seconds, reason)
            self._disconnect(peer_id, "banned", reason)
            return True
        return False

    def _disconnect(self, peer_id: bytes, reason: str, message: str) -> None:
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.close(reason, message, bye=True)

    def _stream_offence(self, peer: Peer, reason: str, message: str) -> None:
        """The byte stream is unusable: close the connection. Only a small penalty, since
        bytes that fail authentication may have been injected by someone on the path."""
        self.metrics.invalid[reason] += 1
        log.warning("p2p: %r sent a corrupt stream: %s", peer, message)
        self._penalise(peer.id, CORRUPT_STREAM, message)
        peer.close(reason, message)

    def _message_offence(self, peer: Peer, reason: str, message: str, points: int) -> None:
        self.metrics.invalid[reason] += 1
        log.info("p2p: %r sent an invalid message (%s): %s", peer, reason, message)
        self._penalise(peer.id, points, message)

    async def _dispatch(self, peer: Peer, payload: bytes) -> None:
        try:
            spec, body = self.registry.decode(payload)
        except MessageError as exc:
            points = {"unknown_type": UNKNOWN_TYPE,
                      "too_large": OVERSIZE_MESSAGE}.get(exc.reason, MALFORMED_MESSAGE)
            self._message_offence(peer, exc.reason, exc.message, points)
            return
        name = spec.name
        self.metrics.messages_in[name] += 1
        if name == PING:
            peer.enqueue(Priority.CONTROL, self.registry.encode(PONG, body)[1])
            return
        if name == PONG:
            peer.on_pong(body)
            return
        if name == BYE:
            peer.close("bye", f"peer said bye: {body['reason']}: {body['message']}")
            return
        if spec.gossip and not self._seen.add(sha256(payload)):
            self.metrics.duplicates += 1
            return
        handler = self._handlers.get(name)
        if handler is None:
            self.metrics.unhandled[name] += 1
            return
        try:
            result = handler(peer.id, body)
            if inspect.isawaitable(result):
                await result
        except InvalidMessage as exc:
            self._message_offence(peer, "invalid_message", f"{name}: {exc.reason}",
                                  exc.penalty)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.handler_errors += 1
            log.exception("p2p: handler for %r failed on a message from %r", name, peer)
