"""Message registry, send queue, seen-cache and peer scores (no sockets)."""

from __future__ import annotations

import pytest

from chain import encoding
from p2p.errors import InvalidMessage, MessageError
from p2p.messages import MessageRegistry, MessageSpec, Priority
from p2p.scoring import PeerScores
from p2p.seen import SeenCache
from p2p.sendqueue import Push, SendQueue


def test_envelope_is_a_canonical_two_element_array() -> None:
    reg = MessageRegistry()
    spec, payload = reg.encode("vote", {"height": 3})
    assert payload == encoding.encode(["vote", {"height": 3}])
    assert reg.decode(payload) == (spec, {"height": 3})
    assert spec.priority is Priority.CONSENSUS and spec.gossip


@pytest.mark.parametrize("payload,reason", [
    (b"\xc1", "bad_encoding"),
    (encoding.encode({"t": "tx"}), "bad_envelope"),
    (encoding.encode(["tx"]), "bad_envelope"),
    (encoding.encode([1, b"x"]), "bad_envelope"),
    (encoding.encode(["nope", b"x"]), "unknown_type"),
    (encoding.encode(["tx", "text, not bytes"]), "bad_body"),
    (encoding.encode(["ping", -1]), "bad_body"),
    (encoding.encode(["tx", b"x" * 40_000]), "too_large"),
    (b"\x92\xa2tx\xc5\x00\x01x", "bad_encoding"),  # non-shortest length form
])
def test_bad_envelopes_get_typed_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        MessageRegistry().decode(payload)
    assert info.value.reason == reason


def test_encode_refuses_unknown_oversize_and_unencodable() -> None:
    reg = MessageRegistry()
    with pytest.raises(MessageError, match="unknown"):
        reg.encode("nope", 1)
    with pytest.raises(MessageError) as info:
        reg.encode("tx", b"x" * 40_000)
    assert info.value.reason == "too_large"
    with pytest.raises(MessageError):
        reg.encode("status", {"height": 1.5})


def test_registry_is_extensible_and_limits_replaceable() -> None:
    reg = MessageRegistry()
    reg.register(MessageSpec("checkpoint", 128, Priority.SYNC))
    assert "checkpoint" in reg
    with pytest.raises(ValueError):
        reg.register(MessageSpec("checkpoint", 256, Priority.SYNC))
    reg.register(MessageSpec("tx", 64, Priority.GOSSIP, gossip=True), replace=True)
    with pytest.raises(MessageError):
        reg.encode("tx", b"x" * 100)
    with pytest.raises(ValueError):
        MessageSpec("Bad Name", 100, Priority.SYNC)


def test_invalid_message_penalty_must_be_sane() -> None:
    assert InvalidMessage("bad sig").penalty == 25
    with pytest.raises(ValueError):
        InvalidMessage("x", penalty=-1)


def test_queue_drains_in_priority_order_fifo_within_priority() -> None:
    q = SendQueue(max_messages=10, max_bytes=1000)
    q.push(Priority.GOSSIP, b"tx1")
    q.push(Priority.SYNC, b"status")
    q.push(Priority.CONSENSUS, b"vote1")
    q.push(Priority.GOSSIP, b"tx2")
    q.push(Priority.CONSENSUS, b"vote2")
    q.push(Priority.CONTROL, b"pong")
    out = [q.pop() for _ in range(6)]
    assert out == [b"pong", b"vote1", b"vote2", b"status", b"tx1", b"tx2"]
    assert q.pop() is None and len(q) == 0 and q.bytes == 0


def test_full_queue_drops_gossip_and_evicts_it_for_consensus() -> None:
    q = SendQueue(max_messages=3, max_bytes=1000)
    for i in range(3):
        assert q.push(Priority.GOSSIP, b"tx%d" % i) is Push.QUEUED
    assert q.push(Priority.GOSSIP, b"tx3") is Push.DROPPED
    assert q.push(Priority.CONSENSUS, b"vote") is Push.QUEUED  # evicts the oldest tx
    assert q.evicted == 1 and len(q) == 3
    assert [q.pop() for _ in range(3)] == [b"vote", b"tx1", b"tx2"]


def test_queue_overflows_when_no_gossip_can_make_room() -> None:
    q = SendQueue(max_messages=100, max_bytes=10)
    assert q.push(Priority.CONSENSUS, b"12345678") is Push.QUEUED
    assert q.push(Priority.CONSENSUS, b"123") is Push.OVERFLOW
    assert q.bytes == 8 and len(q) == 1


def test_seen_cache_is_bounded_lru() -> None:
    seen = SeenCache(capacity=3)
    assert seen.add(b"a") and seen.add(b"b") and seen.add(b"c")
    assert not seen.add(b"a")  # refreshes a
    assert seen.add(b"d")  # evicts b, the least recently seen
    assert b"b" not in seen and b"a" in seen and len(seen) == 3


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_scores_recover_over_time_and_ban_at_threshold() -> None:
    clock = Clock()
    s = PeerScores(threshold=100, recovery_per_s=1.0, ban_seconds=60, clock=clock)
    key = b"k" * 32
    assert not s.penalise(key, 50)
    assert s.score(key) == -50
    clock.t += 20
    assert s.score(key) == -30
    clock.t += 1000
    assert s.score(key) == 0  # never above zero
    assert not s.penalise(key, 60)
    assert s.penalise(key, 40)
    assert s.banned_for(key) == 60
    clock.t += 59
    assert s.banned_for(key) == 1
    clock.t += 1
    assert s.banned_for(key) == 0
    assert s.score(key) == 0  # a ban resets the score


def test_explicit_ban_and_unban() -> None:
    clock = Clock()
    s = PeerScores(clock=clock)
    s.ban(b"x", 5)
    assert s.banned_for(b"x") == 5
    s.unban(b"x")
    assert s.banned_for(b"x") == 0
