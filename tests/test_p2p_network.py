"""The peer network over real loopback sockets: handshakes, gossip, limits, bans, restarts."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from chain import encoding
from chain.crypto import PrivateKey
from chain.hashing import sha256
from p2p import HandshakeError, InvalidMessage, Network, NetworkConfig, PeerRefused
from p2p.frame import encode_frame, parse_header
from p2p.handshake import HANDSHAKE_MAX_FRAME, Handshake, HandshakeResult
from p2p.network import NO_GENESIS

CHAIN = "mutual-test"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(5)]
IDS = [k.public_key.raw for k in KEYS]
ALLOWED = set(IDS)
STRANGER = PrivateKey(b"\x77" * 32)
WAIT = 5.0  # upper bound for every wait; the happy path takes milliseconds


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class Nets:
    """Creates networks and guarantees they are all stopped."""

    def __init__(self) -> None:
        self.nets: list[Network] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self, i: int, *, port: int = 0, peers: list[tuple[str, int]] = (),
                    chain: str = CHAIN, genesis: bytes = NO_GENESIS, **cfg: Any) -> Network:
        config = NetworkConfig(**{"backoff_base": 0.05, "backoff_max": 0.2, **cfg})
        net = Network(chain, KEYS[i], genesis_hash=genesis, listen=("127.0.0.1", port),
                      allowed=ALLOWED, persistent_peers=list(peers), config=config)
        self.nets.append(net)
        await net.start()
        return net

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        for net in self.nets:
            await asyncio.wait_for(net.stop(), WAIT)
            assert not net._tasks, "stop() left tasks running"


@pytest.fixture
async def nets() -> AsyncIterator[Nets]:
    n = Nets()
    try:
        yield n
    finally:
        await n.close()


async def raw_client(nets: Nets, addr: tuple[str, int], key: PrivateKey,
                     chain: str = CHAIN) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                  HandshakeResult]:
    """A hand-driven peer: does the real handshake, then lets the test write anything."""
    reader, writer = await asyncio.open_connection(*addr)
    nets.writers.append(writer)
    hs = Handshake(chain, key, genesis_hash=NO_GENESIS, dialer=True,
                   allowed=ALLOWED | {STRANGER.public_key.raw})

    async def go() -> None:
        writer.write(encode_frame(hs.hello()))
        while not hs.done:
            n = parse_header(await reader.readexactly(4), HANDSHAKE_MAX_FRAME)
            out = hs.receive(await reader.readexactly(n))
            if out is not None:
                writer.write(encode_frame(out))
        await writer.drain()

    await asyncio.wait_for(go(), WAIT)
    assert hs.result is not None
    return reader, writer, hs.result


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    async def drain() -> bytes:
        data = b""
        while chunk := await reader.read(65536):
            data += chunk
        return data
    return await asyncio.wait_for(drain(), WAIT)


def seal(result: HandshakeResult, payload: bytes) -> bytes:
    return encode_frame(result.send.seal(payload))


# ------------------------------------------------------------------------ connecting

async def test_two_nodes_connect_and_exchange_direct_messages(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    connected: list[bytes] = []
    a.on_connect(lambda pid: connected.append(pid))
    got: list[tuple[bytes, Any]] = []

    async def on_status(pid: bytes, body: Any) -> None:
        got.append((pid, body))
        await b.send(pid, "status", {"height": body["height"] + 1})

    b.on("status", on_status)
    a.on("status", lambda pid, body: got.append((pid, body)))
    assert await b.connect(*a.listen_address) == IDS[0]
    await until(lambda: a.peers() == [IDS[1]], "a sees b")
    assert connected == [IDS[1]]
    assert await a.send(IDS[1], "status", {"height": 7})
    await until(lambda: len(got) == 2, "status round trip")
    assert got == [(IDS[0], {"height": 7}), (IDS[1], {"height": 8})]
    assert not await a.send(IDS[3], "status", {"height": 1})  # not connected
    info = a.peer_info()[0]
    assert info.id == IDS[1] and not info.outbound and info.bytes_in > 0
    assert a.metrics.peers == 1 and a.metrics.messages_in["status"] == 1


async def test_gossip_reaches_every_node_exactly_once(nets: Nets) -> None:
    ns = [await nets.start(i) for i in range(4)]
    seen: list[list[bytes]] = [[] for _ in ns]
    for i, net in enumerate(ns):
        async def relay(pid: bytes, body: bytes, i: int = i, net: Network = net) -> None:
            seen[i].append(body)
            await net.broadcast("tx", body, exclude=pid)
        net.on("tx", relay)
    # a full mesh, so every node hears each message from several peers
    for i in range(4):
        for j in range(i + 1, 4):
            await ns[j].connect(*ns[i].listen_address)
    await until(lambda: all(len(n.peers()) == 3 for n in ns), "full mesh")
    for k in range(5):
        assert await ns[k % 4].broadcast("tx", b"tx-%d" % k) == 3
    await until(lambda: sum(map(len, seen)) == 15, "every tx at the 3 other nodes")
    await asyncio.sleep(0.1)  # late duplicates would show up here
    for i, got in enumerate(seen):
        expected = sorted(b"tx-%d" % k for k in range(5) if k % 4 != i)
        assert sorted(got) == expected, f"node {i} handled {got}"
    assert sum(n.metrics.duplicates for n in ns) > 0


async def test_unknown_key_is_refused_with_reason(nets: Nets) -> None:
    a = await nets.start(0)
    stranger = Network(CHAIN, STRANGER, listen=None, allowed=ALLOWED)
    nets.nets.append(stranger)
    await stranger.start()
    with pytest.raises(PeerRefused) as info:
        await stranger.connect(*a.listen_address)
    assert info.value.reason == "not_allowed"
    assert a.metrics.handshake_failures["not_allowed"] == 1
    assert a.peers() == [] and stranger.peers() == []


async def test_wrong_chain_id_is_refused(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1, chain="other-chain")
    with pytest.raises(HandshakeError) as info:
        await b.connect(*a.listen_address)
    assert info.value.reason == "wrong_chain"
    assert a.peers() == [] and b.peers() == []


G1 = sha256(b"genesis one")
G2 = sha256(b"genesis two, same chain id")


def _mismatch_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The operator-visible lines (WARNING and up) naming the mismatch."""
    return [r for r in caplog.records if r.name == "mutual.p2p" and r.levelno >= logging.WARNING
            and "genesis_mismatch" in r.getMessage()]


async def test_genesis_mismatch_is_refused_on_both_sides_without_scoring(
        nets: Nets, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mutual.p2p")
    a = await nets.start(0, genesis=G1)
    b = await nets.start(1, genesis=G2)
    with pytest.raises(HandshakeError) as info:
        await b.connect(*a.listen_address)
    err = info.value
    assert err.reason == "genesis_mismatch"
    assert err.message.startswith(f"peer runs genesis {G1[:4].hex()}..., ours {G2[:4].hex()}...")
    await until(lambda: a.metrics.handshake_failures["genesis_mismatch"] == 1,
                "the listener refuses too")
    assert b.metrics.handshake_failures["genesis_mismatch"] == 1
    assert a.peers() == [] and b.peers() == []
    # logged once per side, each from its own point of view, as a handshake failure
    lines = sorted(r.getMessage() for r in _mismatch_lines(caplog))
    assert len(lines) == 2, lines
    assert any(f"peer runs genesis {G2[:4].hex()}..., ours {G1[:4].hex()}..." in x for x in lines)
    assert any(f"peer runs genesis {G1[:4].hex()}..., ours {G2[:4].hex()}..." in x for x in lines)
    # a configuration error, not misbehaviour: nobody is scored, banned or penalised
    for net, other in ((a, IDS[1]), (b, IDS[0])):
        assert net.score(other) == 0 and net.banned_for(other) == 0
        assert net.metrics.bans == 0 and not net.metrics.invalid
    assert not any("banning" in r.getMessage() or "invalid" in r.getMessage()
                   for r in caplog.records)
    # once the operator fixes the genesis, the same key connects at once
    await asyncio.wait_for(b.stop(), WAIT)
    fixed = await nets.start(1, genesis=G1)
    assert await fixed.connect(*a.listen_address) == IDS[0]
    await until(lambda: a.peers() == [IDS[1]], "fixed node connected")


async def test_persistent_peer_on_another_genesis_is_retried_never_banned(
        nets: Nets, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mutual.p2p")
    a = await nets.start(0, genesis=G1, ban_threshold=10)
    b = await nets.start(1, genesis=G2, peers=[a.listen_address])
    await until(lambda: a.metrics.handshake_failures["genesis_mismatch"] >= 3,
                "several dial attempts")
    await asyncio.wait_for(b.stop(), WAIT)
    await until(lambda: len(_mismatch_lines(caplog)) == sum(
        n.metrics.handshake_failures["genesis_mismatch"] for n in (a, b)),
        "every attempt logged exactly once per side")
    assert b.metrics.handshake_failures["genesis_mismatch"] >= 3
    assert a.peers() == [] and a.metrics.connects == b.metrics.connects == 0
    assert a.metrics.bans == b.metrics.bans == 0
    assert a.banned_for(IDS[1]) == 0 and a.score(IDS[1]) == 0


async def test_connection_to_self_is_refused_and_not_redialled(nets: Nets) -> None:
    a = await nets.start(0)
    with pytest.raises(HandshakeError) as info:
        await a.connect(*a.listen_address)
    assert info.value.reason == "self"
    a.add_persistent_peer(*a.listen_address)
    await until(lambda: a._dialers[a.listen_address].done(), "self dialer gives up")
    assert a.peers() == []


async def test_replayed_handshake_is_refused_over_the_wire(nets: Nets) -> None:
    a = await nets.start(0)
    # record a genuine hello + auth from KEYS[1] to a
    reader, writer = await asyncio.open_connection(*a.listen_address)
    nets.writers.append(writer)
    hs = Handshake(CHAIN, KEYS[1], genesis_hash=NO_GENESIS, dialer=True, allowed=ALLOWED)
    writer.write(encode_frame(hs.hello()))
    a_hello = await reader.readexactly(parse_header(await reader.readexactly(4), 1024))
    auth = hs.receive(a_hello)
    writer.write(encode_frame(auth))
    await until(lambda: a.peers() == [IDS[1]], "honest connection")
    # an eavesdropper replays both messages on a new connection: a's fresh challenge
    # makes the old signature worthless
    r2, w2 = await asyncio.open_connection(*a.listen_address)
    nets.writers.append(w2)
    w2.write(encode_frame(hs.hello()) + encode_frame(auth))
    data = await read_until_closed(r2)
    assert b"bad_signature" in data
    assert a.metrics.handshake_failures["bad_signature"] == 1


async def test_handshake_garbage_and_timeouts_do_not_hurt(nets: Nets) -> None:
    a = await nets.start(0, handshake_timeout=0.3)
    r1, w1 = await asyncio.open_connection(*a.listen_address)
    nets.writers.append(w1)
    w1.write(b"\xff\xff\xff\xff" + b"x" * 100)  # oversize handshake frame
    await read_until_closed(r1)
    r2, w2 = await asyncio.open_connection(*a.listen_address)
    nets.writers.append(w2)
    await read_until_closed(r2)  # says nothing: closed by the handshake timeout
    assert a.metrics.handshake_failures["bad_frame"] == 1
    assert a.metrics.handshake_failures["timeout"] == 1
    b = await nets.start(1)
    assert await b.connect(*a.listen_address) == IDS[0]


# ------------------------------------------------------------------ misbehaviour

async def test_malformed_message_bans_the_peer_without_crashing(nets: Nets) -> None:
    a = await nets.start(0)
    reader, writer, result = await raw_client(nets, a.listen_address, KEYS[1])
    await until(lambda: a.peers() == [IDS[1]], "raw client connected")
    writer.write(seal(result, b"\xc1 not msgpack at all"))
    data = await read_until_closed(reader)
    assert data, "a bye should tell the peer why"
    assert a.banned_for(IDS[1]) > 0
    assert a.peers() == []
    assert a.metrics.invalid["bad_encoding"] == 1 and a.metrics.bans == 1
    # banned: a reconnection is refused with the reason
    b = Network(CHAIN, KEYS[1], listen=None, allowed=ALLOWED)
    nets.nets.append(b)
    await b.start()
    with pytest.raises(PeerRefused) as info:
        await b.connect(*a.listen_address)
    assert info.value.reason == "banned"
    # and the network still serves others
    c = await nets.start(2)
    assert await c.connect(*a.listen_address) == IDS[0]


async def test_corrupt_stream_disconnects_then_bans_repeat_offenders(nets: Nets) -> None:
    a = await nets.start(0)
    for attempt in range(4):
        reader, writer, _ = await raw_client(nets, a.listen_address, KEYS[1])
        writer.write(encode_frame(b"random bytes that fail authentication"))
        await read_until_closed(reader)
        await until(lambda: a.peers() == [], "corrupt peer dropped")
        banned = a.banned_for(IDS[1]) > 0
        assert banned == (attempt == 3), attempt  # 25 points each, ban at 100
    assert a.metrics.invalid["bad_frame"] == 4


async def test_oversize_frame_is_refused(nets: Nets) -> None:
    a = await nets.start(0, max_frame_size=64 * 1024)
    reader, writer, _ = await raw_client(nets, a.listen_address, KEYS[1])
    writer.write((64 * 1024 + 1).to_bytes(4, "big"))
    await read_until_closed(reader)
    await until(lambda: a.peers() == [], "oversize peer dropped")
    assert a.metrics.invalid["bad_frame"] == 1
    # an oversize message for its type (inside a legal frame) costs the full penalty
    a.unban(IDS[1])
    reader, writer, result = await raw_client(nets, a.listen_address, KEYS[1])
    writer.write(seal(result, encoding.encode(["vote", {"x": b"y" * 5000}])))
    await read_until_closed(reader)
    assert a.metrics.invalid["too_large"] == 1 and a.banned_for(IDS[1]) > 0


async def test_handler_invalid_penalises_and_errors_are_contained(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    handled: list[bytes] = []

    async def on_tx(pid: bytes, body: bytes) -> None:
        if body == b"boom":
            raise RuntimeError("handler bug")
        if body.startswith(b"bad"):
            raise InvalidMessage("bad signature", penalty=40)
        handled.append(body)

    a.on("tx", on_tx)
    await b.connect(*a.listen_address)
    await b.broadcast("tx", b"boom")
    await b.broadcast("tx", b"ok-1")
    await until(lambda: handled == [b"ok-1"], "handler survives a bug")
    assert a.metrics.handler_errors == 1 and a.peers() == [IDS[1]]
    await b.broadcast("tx", b"bad-1")
    await b.broadcast("tx", b"bad-2")
    await until(lambda: a.metrics.invalid["invalid_message"] == 2, "two invalid")
    assert a.peers() == [IDS[1]] and a.score(IDS[1]) < -70
    await b.broadcast("tx", b"bad-3")
    await until(lambda: a.peers() == [] and b.peers() == [], "banned after 120 points")
    assert a.banned_for(IDS[1]) > 0 and b.metrics.disconnects["bye"] == 1


async def test_unknown_message_type_is_a_small_penalty(nets: Nets) -> None:
    a = await nets.start(0)
    reader, writer, result = await raw_client(nets, a.listen_address, KEYS[1])
    writer.write(seal(result, encoding.encode(["from_the_future", 1])))
    writer.write(seal(result, encoding.encode(["ping", 5])))
    pong = await asyncio.wait_for(reader.readexactly(4), WAIT)
    frame = await reader.readexactly(parse_header(pong, 1 << 20))
    assert encoding.decode(result.recv.open(frame)) == ["pong", 5]
    assert a.metrics.invalid["unknown_type"] == 1 and a.peers() == [IDS[1]]


async def test_report_and_ban_api(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    await b.connect(*a.listen_address)
    await until(lambda: a.peers() == [IDS[1]], "connected")
    assert not a.report(IDS[1], "block failed verification", penalty=50)
    assert a.report(IDS[1], "block failed verification", penalty=50)
    await until(lambda: a.peers() == [], "reported peer banned")
    a.unban(IDS[1])
    await b.connect(*a.listen_address)
    a.ban(IDS[1], seconds=30, reason="operator said so")
    await until(lambda: a.peers() == [], "banned by the node")
    assert 0 < a.banned_for(IDS[1]) <= 30


# ---------------------------------------------------------------- backpressure

async def test_send_queue_stays_bounded_and_slow_peer_is_dropped(nets: Nets) -> None:
    a = await nets.start(0, queue_max_messages=50, write_timeout=30.0)
    reader, writer, _ = await raw_client(nets, a.listen_address, KEYS[1])  # never reads
    await until(lambda: a.peers() == [IDS[1]], "slow client connected")
    peer = a._peers[IDS[1]]
    big = b"t" * 16_000
    for i in range(1500):  # 24 MB offered, far more than socket buffers hold
        await a.broadcast("tx", big + i.to_bytes(4, "big"))
        assert len(peer.queue) <= 50 and peer.queue.bytes <= a.config.queue_max_bytes
        await asyncio.sleep(0)
    assert a.metrics.dropped["tx"] > 0
    assert a.peers() == [IDS[1]], "dropping gossip keeps the peer"
    # consensus messages are never dropped: they evict gossip, then the slow peer goes
    sent = 0
    while a.peers() and sent < 1000:
        await a.broadcast("vote", {"n": sent})
        sent += 1
    assert a.peers() == [] and a.metrics.slow_peers >= 1
    assert peer.close_reason == "slow_peer" and 50 <= sent < 1000


async def test_peer_that_stops_reading_is_dropped_after_write_timeout(nets: Nets) -> None:
    a = await nets.start(0, write_timeout=0.2)
    await raw_client(nets, a.listen_address, KEYS[1])  # never reads
    await until(lambda: a.peers() == [IDS[1]], "connected")
    peer = a._peers[IDS[1]]
    for i in range(2000):
        if not a.peers():
            break
        await a.broadcast("tx", b"t" * 16_000 + i.to_bytes(4, "big"))
        await asyncio.sleep(0.001)
    await until(lambda: a.peers() == [], "slow peer dropped")
    assert peer.close_reason == "slow_peer"


async def test_consensus_messages_overtake_queued_gossip(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    order: list[str] = []
    b.on("tx", lambda pid, body: order.append("tx"))
    b.on("vote", lambda pid, body: order.append("vote"))
    await b.connect(*a.listen_address)
    await until(lambda: a.peers() == [IDS[1]], "connected")
    # queued in one go, before the writer task runs
    for i in range(20):
        await a.broadcast("tx", b"%d" % i)
    await a.broadcast("vote", {"height": 1})
    await until(lambda: len(order) == 21, "all delivered")
    assert order[0] == "vote"


# ------------------------------------------------------- keepalive, duplicates, restart

async def test_keepalive_measures_rtt_and_drops_silent_peers(nets: Nets) -> None:
    a = await nets.start(0, ping_interval=0.05, ping_timeout=0.5)
    b = await nets.start(1, ping_interval=0.05, ping_timeout=0.5)
    await b.connect(*a.listen_address)
    await until(lambda: all(i.rtt is not None for i in a.peer_info() + b.peer_info())
                and a.peer_info() and b.peer_info(), "rtt measured")
    # a peer that never answers pings is dropped
    await raw_client(nets, a.listen_address, KEYS[2])
    await until(lambda: a.metrics.disconnects["ping_timeout"] == 1, "silent peer dropped")
    assert a.peers() == [IDS[1]]


async def test_simultaneous_dials_keep_one_connection(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    await asyncio.gather(a.connect(*b.listen_address), b.connect(*a.listen_address),
                         return_exceptions=True)
    await until(lambda: a.peers() == [IDS[1]] and b.peers() == [IDS[0]], "connected")
    await asyncio.sleep(0.1)
    ia, ib = a.peer_info(), b.peer_info()
    assert len(ia) == 1 and len(ib) == 1
    assert ia[0].outbound != ib[0].outbound  # both ends kept the same TCP connection
    # tie-break: the connection dialled by the smaller node key survives
    assert ia[0].outbound == (IDS[0] < IDS[1])
    got: list[bytes] = []
    b.on("tx", lambda pid, body: got.append(body))
    await a.broadcast("tx", b"after the tie-break")
    await until(lambda: got == [b"after the tie-break"], "still works")


async def test_persistent_peers_reconnect_after_restart(nets: Nets) -> None:
    b = await nets.start(1)
    port = b.listen_address[1]
    a = await nets.start(0, peers=[("127.0.0.1", port)])
    disconnects: list[bytes] = []
    a.on_disconnect(lambda pid: disconnects.append(pid))
    await until(lambda: a.peers() == [IDS[1]], "dialled persistent peer")
    await b.stop()
    await until(lambda: a.peers() == [], "noticed the stop")
    assert disconnects == [IDS[1]]
    await asyncio.sleep(0.3)  # a few failed dials with backoff while b is down
    assert a.metrics.handshake_failures["unreachable"] >= 1
    b2 = await nets.start(1, port=port)
    await until(lambda: a.peers() == [IDS[1]] and b2.peers() == [IDS[0]], "reconnected")
    got: list[bytes] = []
    b2.on("tx", lambda pid, body: got.append(body))
    await a.broadcast("tx", b"after restart")
    await until(lambda: got == [b"after restart"], "gossip after restart")


async def test_both_sides_persistent_converge_to_one_connection(nets: Nets) -> None:
    a = await nets.start(0, port=0)
    b = await nets.start(1, port=0, peers=[a.listen_address])
    a.add_persistent_peer(*b.listen_address)
    await until(lambda: a.peers() == [IDS[1]] and b.peers() == [IDS[0]], "connected")
    await asyncio.sleep(0.3)
    ia, ib = a.peer_info(), b.peer_info()
    assert len(ia) == 1 and len(ib) == 1 and ia[0].outbound != ib[0].outbound


def test_backoff_is_exponential_bounded_and_jittered() -> None:
    import random

    net = Network(CHAIN, KEYS[0], listen=None,
                  config=NetworkConfig(backoff_base=0.5, backoff_max=8.0),
                  rng=random.Random(7))
    delays = [net.backoff(n) for n in range(1, 12)]
    caps = [min(8.0, 0.5 * 2 ** (n - 1)) for n in range(1, 12)]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays) <= 8.0 and len(set(delays)) == len(delays)


async def test_allow_list_change_and_graceful_stop(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    c = await nets.start(2)
    await b.connect(*a.listen_address)
    await c.connect(*a.listen_address)
    await until(lambda: len(a.peers()) == 2, "two peers")
    a.set_allowed(ALLOWED - {IDS[2]})
    await until(lambda: a.peers() == [IDS[1]] and c.peers() == [], "c removed")
    await a.stop()
    await until(lambda: b.peers() == [], "b sees a leave")
    assert b.metrics.disconnects["bye"] == 1
    with pytest.raises(ValueError):
        a.on("ping", lambda pid, body: None)
    with pytest.raises(ValueError):
        await b.broadcast("pong", 1)


async def test_forget_lets_the_same_gossip_be_handled_again(nets: Nets) -> None:
    a = await nets.start(0)
    b = await nets.start(1)
    got: list[bytes] = []
    b.on("vote", lambda pid, body: got.append(body["h"]))
    await b.connect(*a.listen_address)
    await until(lambda: a.peers() == [IDS[1]], "connected")
    await a.send(IDS[1], "vote", {"h": b"1"})
    await a.send(IDS[1], "vote", {"h": b"1"})
    await a.send(IDS[1], "vote", {"h": b"2"})
    await until(lambda: got == [b"1", b"2"], "duplicate suppressed")
    b.forget("vote", {"h": b"1"})
    await a.send(IDS[1], "vote", {"h": b"1"})
    await until(lambda: got == [b"1", b"2", b"1"], "handled again after forget")
    assert b.metrics.duplicates == 1


async def test_listen_on_a_busy_port_is_a_clear_error(nets: Nets) -> None:
    from p2p import P2PError

    a = await nets.start(0)
    b = Network(CHAIN, KEYS[1], listen=a.listen_address, allowed=ALLOWED)
    with pytest.raises(P2PError, match="cannot listen"):
        await b.start()
