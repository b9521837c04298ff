"""Sans-I/O handshake: mutual key proof bound to chain id, genesis, challenges and
ephemeral keys."""

from __future__ import annotations

import pytest

from chain import encoding
from chain.crypto import Domain, PrivateKey
from chain.hashing import sha256
from p2p.errors import HandshakeError, HandshakeRefused, PeerRefused, SecureChannelError
from p2p.handshake import (
    AUTH,
    HELLO,
    PROTOCOL_VERSION,
    REASONS,
    Handshake,
    parse_reject,
    proof_payload,
)

CHAIN = "mutual-test"
A = PrivateKey(b"\x01" * 32)
B = PrivateKey(b"\x02" * 32)
M = PrivateKey(b"\x03" * 32)
ALL = {A.public_key.raw, B.public_key.raw, M.public_key.raw}
GENESIS = sha256(b"genesis of mutual-test")
OTHER_GENESIS = sha256(b"same chain id, another genesis_time")


def hs(key: PrivateKey, dialer: bool, *, chain: str = CHAIN, allowed=ALL, n: int = 0,
       genesis: bytes = GENESIS, **kw) -> Handshake:
    tag = (1 if dialer else 2) + 16 * n
    return Handshake(chain, key, genesis_hash=genesis, dialer=dialer, allowed=allowed,
                     challenge=bytes([tag]) * 32, ephemeral_seed=bytes([tag + 100]) * 32, **kw)


def run(d: Handshake, li: Handshake) -> None:
    """Deliver messages between two in-memory handshakes until both are done."""
    auth_d = d.receive(li.hello())
    auth_l = li.receive(d.hello())
    assert auth_d is not None and auth_l is not None
    assert d.receive(auth_l) is None
    assert li.receive(auth_d) is None


def body_of(payload: bytes) -> dict:
    value = encoding.decode(payload)
    return value[1]


def test_handshake_succeeds_and_channel_works_both_ways() -> None:
    d, li = hs(A, True), hs(B, False)
    run(d, li)
    assert d.done and li.done
    assert d.result.peer_key == B.public_key.raw
    assert li.result.peer_key == A.public_key.raw
    assert d.result.transcript == li.result.transcript
    for _ in range(3):
        assert li.result.recv.open(d.result.send.seal(b"to listener")) == b"to listener"
        assert d.result.recv.open(li.result.send.seal(b"to dialer")) == b"to dialer"


def test_injected_randomness_makes_hello_reproducible() -> None:
    assert hs(A, True).hello() == hs(A, True).hello()
    body = body_of(hs(A, True).hello())
    assert set(body) == {"chain_id", "challenge", "ephemeral", "genesis_hash", "node_key",
                         "version"}
    assert body["node_key"] == A.public_key.raw and body["chain_id"] == CHAIN
    assert body["genesis_hash"] == GENESIS and body["version"] == PROTOCOL_VERSION == 2
    # two default handshakes use fresh challenges
    h1 = Handshake(CHAIN, A, genesis_hash=GENESIS, dialer=True, allowed=ALL)
    h2 = Handshake(CHAIN, A, genesis_hash=GENESIS, dialer=True, allowed=ALL)
    assert body_of(h1.hello())["challenge"] != body_of(h2.hello())["challenge"]


def test_auth_signature_is_over_documented_payload() -> None:
    d, li = hs(A, True), hs(B, False)
    auth = d.receive(li.hello())
    sig = body_of(auth)["signature"]
    payload = proof_payload(A.public_key.raw, B.public_key.raw, d._transcript)
    assert A.public_key.verify(Domain.HANDSHAKE, CHAIN, payload, sig)
    assert not A.public_key.verify(Domain.HANDSHAKE, "other-chain", payload, sig)
    assert not A.public_key.verify(Domain.TX, CHAIN, payload, sig)


def refusal(h: Handshake, payload: bytes) -> HandshakeRefused:
    with pytest.raises(HandshakeRefused) as info:
        h.receive(payload)
    # the reply is a well-formed reject carrying the same reason
    assert parse_reject(info.value.reply) == (info.value.reason, info.value.message)
    return info.value


def test_unknown_key_is_refused() -> None:
    stranger = PrivateKey(b"\x09" * 32)
    err = refusal(hs(B, False), hs(stranger, True, allowed=ALL).hello())
    assert err.reason == "not_allowed"
    assert stranger.public_key.hex() in err.message


def test_wrong_chain_is_refused() -> None:
    err = refusal(hs(B, False), hs(A, True, chain="other-chain").hello())
    assert err.reason == "wrong_chain"


def test_wrong_version_is_refused() -> None:
    err = refusal(hs(B, False), hs(A, True, version=3).hello())
    assert err.reason == "version"
    # a version-1 node (its hello has no genesis_hash) is told it speaks an old protocol,
    # not that its hello is malformed
    old = {k: v for k, v in body_of(hs(A, True).hello()).items() if k != "genesis_hash"}
    err = refusal(hs(B, False), encoding.encode([HELLO, {**old, "version": 1}]))
    assert err.reason == "version" and "we speak 2" in err.message


def test_genesis_mismatch_is_refused_by_both_sides_with_both_hashes() -> None:
    d, li = hs(A, True), hs(B, False, genesis=OTHER_GENESIS)
    # both hellos go out at once, so each side refuses the other's on its own
    err_d = refusal(d, li.hello())
    err_l = refusal(li, d.hello())
    assert err_d.reason == err_l.reason == "genesis_mismatch"
    assert "genesis_mismatch" in REASONS
    ours, theirs = GENESIS[:4].hex(), OTHER_GENESIS[:4].hex()
    assert err_d.message.startswith(f"peer runs genesis {theirs}..., ours {ours}...")
    assert err_l.message.startswith(f"peer runs genesis {ours}..., ours {theirs}...")
    assert repr(CHAIN) in err_d.message and len(err_d.message) <= 200
    assert str(err_d).startswith("genesis_mismatch: peer runs genesis")
    assert not d.done and not li.done and d.result is None and li.result is None
    # the refused side learns the reason from the reject too
    with pytest.raises(PeerRefused) as info:
        hs(B, False, genesis=OTHER_GENESIS, n=1).receive(err_d.reply)
    assert info.value.reason == "genesis_mismatch"


def test_genesis_mismatch_is_checked_before_the_key_checks() -> None:
    # a node on another genesis usually has other keys too: name the root cause
    stranger = PrivateKey(b"\x09" * 32)
    err = refusal(hs(B, False), hs(stranger, True, genesis=OTHER_GENESIS).hello())
    assert err.reason == "genesis_mismatch"
    # while a matching genesis still gets the allow-list check
    assert refusal(hs(B, False), hs(stranger, True).hello()).reason == "not_allowed"


def test_genesis_hash_is_covered_by_both_signatures() -> None:
    # Someone on the path rewrites B's announced genesis hash so that it passes A's check:
    # A then signs a transcript with the rewritten hello, B one with its own, and both
    # auths fail, so a finished handshake proves both sides announced the same genesis.
    d, li = hs(A, True), hs(B, False, genesis=OTHER_GENESIS)
    forged = body_of(li.hello())
    forged["genesis_hash"] = GENESIS
    auth_d = d.receive(encoding.encode([HELLO, forged]))
    forged = body_of(d.hello())
    forged["genesis_hash"] = OTHER_GENESIS
    auth_l = li.receive(encoding.encode([HELLO, forged]))
    assert refusal(d, auth_l).reason == "bad_signature"
    assert refusal(li, auth_d).reason == "bad_signature"


def test_genesis_hash_must_be_32_bytes() -> None:
    for bad in (b"", GENESIS[:31], GENESIS + b"\x00", GENESIS.hex()):
        with pytest.raises(ValueError, match="genesis_hash"):
            Handshake(CHAIN, A, genesis_hash=bad, dialer=True, allowed=ALL)


def test_connection_to_self_is_refused() -> None:
    err = refusal(hs(A, False), hs(A, True).hello())
    assert err.reason == "self"


def test_vet_can_refuse_an_allowed_key() -> None:
    def vet(key: bytes) -> None:
        raise HandshakeRefused("banned", "banned for 60 more seconds")

    err = refusal(hs(B, False, vet=vet), hs(A, True).hello())
    assert err.reason == "banned"


def test_malformed_hellos_are_refused() -> None:
    good = body_of(hs(A, True).hello())
    cases = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "challenge"},
        {k: v for k, v in good.items() if k != "genesis_hash"},
        {**good, "genesis_hash": GENESIS[:16]},
        {**good, "genesis_hash": GENESIS.hex()},
        {**good, "node_key": b"short"},
        {**good, "ephemeral": b"\x00" * 32},  # low-order point: all-zero shared secret
    ]
    for body in cases:
        err = refusal(hs(B, False), encoding.encode([HELLO, body]))
        assert err.reason == "bad_hello", body
    assert refusal(hs(B, False), b"\xc1garbage").reason == "unexpected"
    assert refusal(hs(B, False), encoding.encode([AUTH, {"signature": b"x" * 64}])).reason \
        == "unexpected"
    assert refusal(hs(B, False), encoding.encode(["hello"])).reason == "unexpected"
    assert refusal(hs(B, False), b"\x90" * 2000).reason == "unexpected"


def test_echoed_challenge_is_refused() -> None:
    listener = hs(B, False)
    reflected = body_of(hs(A, True).hello())
    reflected["challenge"] = listener.challenge
    assert refusal(listener, encoding.encode([HELLO, reflected])).reason == "bad_hello"


def test_peer_reject_is_reported_with_its_reason() -> None:
    stranger = PrivateKey(b"\x09" * 32)
    reject = refusal(hs(B, False), hs(stranger, True).hello()).reply
    with pytest.raises(PeerRefused) as info:
        hs(stranger, True).receive(reject)
    assert info.value.reason == "not_allowed"


def test_replayed_auth_fails_in_a_new_connection() -> None:
    # A and B complete a handshake; an eavesdropper records A's hello and auth.
    d, li = hs(A, True), hs(B, False)
    a_hello = d.hello()
    a_auth = d.receive(li.hello())
    li.receive(a_hello)
    li.receive(a_auth)
    assert li.done
    # Later it replays them to B, which uses a fresh challenge: the signature fails.
    li2 = hs(B, False, n=1)
    li2.receive(a_hello)
    err = refusal(li2, a_auth)
    assert err.reason == "bad_signature"
    assert not li2.done


def test_relayed_proof_for_another_peer_fails() -> None:
    # M (an allowed node) gets A's proof in an honest A<->M handshake...
    am_d, am_l = hs(M, True), hs(A, False)
    a_auth = am_l.receive(am_d.hello())
    # ...and tries to pass it to B while claiming to be A, copying A's hello fields.
    fake = body_of(am_l.hello())
    m_as_a = encoding.encode([HELLO, fake])
    li = hs(B, False, n=2)
    li.receive(m_as_a)
    err = refusal(li, a_auth)
    assert err.reason == "bad_signature"


def test_tampered_ephemeral_breaks_both_signatures() -> None:
    d, li = hs(A, True), hs(B, False)
    hello_a = body_of(d.hello())
    hello_a["ephemeral"] = hs(M, True, n=3)._ephemeral.public  # a man in the middle's key
    tampered = encoding.encode([HELLO, hello_a])
    auth_d = d.receive(li.hello())
    auth_l = li.receive(tampered)
    assert refusal(d, auth_l).reason == "bad_signature"
    assert refusal(li, auth_d).reason == "bad_signature"


def test_verbatim_relay_gives_the_relay_no_keys() -> None:
    # Forwarding every byte unchanged lets A and B finish, but only they hold the channel
    # keys: frames sealed by A open at B, while a relay-made frame fails to open.
    d, li = hs(A, True), hs(B, False)
    run(d, li)
    forged_by_relay = hs(M, True, n=4)
    run(forged_by_relay, hs(B, False, n=4))
    with pytest.raises(SecureChannelError):
        li.result.recv.open(forged_by_relay.result.send.seal(b"inject"))
    assert li.result.recv.open(d.result.send.seal(b"genuine")) == b"genuine"


def test_handshake_is_single_use() -> None:
    d, li = hs(A, True), hs(B, False)
    run(d, li)
    with pytest.raises(HandshakeError, match="done"):
        d.receive(li.hello())
    failed = hs(B, False)
    refusal(failed, b"\xc1")
    with pytest.raises(HandshakeError, match="failed"):
        failed.receive(hs(A, True).hello())


def test_channel_refuses_replayed_and_reordered_frames() -> None:
    d, li = hs(A, True), hs(B, False)
    run(d, li)
    f1, f2 = d.result.send.seal(b"one"), d.result.send.seal(b"two")
    with pytest.raises(SecureChannelError):
        li.result.recv.open(f2)  # out of order
    assert li.result.recv.open(f1) == b"one"
    with pytest.raises(SecureChannelError):
        li.result.recv.open(f1)  # replay
    with pytest.raises(SecureChannelError):
        li.result.recv.open(b"short")
