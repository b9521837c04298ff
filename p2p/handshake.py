"""Sans-I/O peer handshake: mutual proof of node keys, bound to the chain id and genesis.

Four plaintext messages, each a canonical msgpack ``[type, body]`` in one frame of at most
``HANDSHAKE_MAX_FRAME`` bytes. Both sides send ``hello`` at once:

    ["hello", {"chain_id": str, "challenge": bin(32), "ephemeral": bin(32),
               "genesis_hash": bin(32), "node_key": bin(32), "version": uint}]

``genesis_hash`` is sha256 of the canonical encoding of the genesis document
(``chain.genesis.Genesis.hash``). On receiving the peer's hello each side checks version,
chain id, genesis hash (two nodes with the same chain id but different genesis files are
misconfigured, not malicious: refused with ``genesis_mismatch``), that the key is not its
own and is allowed, then computes

    transcript = sha256(encode([dialer_hello_payload, listener_hello_payload]))

(the exact payload bytes, as bin) and sends

    ["auth", {"signature": bin(64)}]

where the signature is ``node_key.sign(Domain.HANDSHAKE, chain_id,
encode({"peer": peer node key, "signer": own node key, "transcript": transcript}))``.
The transcript contains both hellos (so both genesis hashes are signed too), both fresh
challenges and both ephemeral keys, so a signature can
neither be replayed in another connection nor relayed to a third node, and it names both
keys so it cannot be reflected. Instead of hello or auth a side may send
``["reject", {"message": str, "reason": str}]`` and close. After both auths verify, every
frame is sealed with the keys derived in ``p2p.secure``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from dataclasses import dataclass
from enum import Enum
from typing import Any

from chain import encoding
from chain.crypto import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Domain, PrivateKey, PublicKey
from chain.hashing import sha256
from p2p.errors import HandshakeError, HandshakeRefused, PeerRefused
from p2p.secure import CipherState, Ephemeral, derive_ciphers

PROTOCOL_VERSION = 2  # 2: hello carries genesis_hash
HANDSHAKE_MAX_FRAME = 1024
CHALLENGE_SIZE = 32
HELLO, AUTH, REJECT = "hello", "auth", "reject"
GENESIS_HASH_SIZE = 32
_HELLO_FIELDS = frozenset({"chain_id", "challenge", "ephemeral", "genesis_hash", "node_key",
                           "version"})

# Reason codes a reject message may carry (docs/p2p.md lists them).
REASONS = frozenset({"version", "wrong_chain", "genesis_mismatch", "self", "not_allowed",
                     "banned", "too_many_peers", "bad_hello", "bad_signature", "unexpected",
                     "duplicate", "shutdown"})


def encode_reject(reason: str, message: str) -> bytes:
    return encoding.encode([REJECT, {"message": message[:200], "reason": reason}])


def parse_reject(payload: bytes) -> tuple[str, str] | None:
    """(reason, message) if ``payload`` is a well-formed reject message, else None."""
    try:
        value = encoding.decode(payload, max_size=HANDSHAKE_MAX_FRAME)
    except encoding.EncodingError:
        return None
    if (isinstance(value, list) and len(value) == 2 and value[0] == REJECT
            and isinstance(value[1], dict) and set(value[1]) == {"message", "reason"}
            and isinstance(value[1]["reason"], str) and isinstance(value[1]["message"], str)):
        return value[1]["reason"], value[1]["message"]
    return None


def genesis_mismatch_message(peer_hash: bytes, own_hash: bytes, chain_id: str) -> str:
    """The refusal text: both hashes' first 4 bytes, from the refusing side's view."""
    return (f"peer runs genesis {peer_hash[:4].hex()}..., ours {own_hash[:4].hex()}... "
            f"(same chain id {chain_id!r}, different genesis file)")


def proof_payload(signer: bytes, peer: bytes, transcript: bytes) -> bytes:
    """The payload a node signs (in Domain.HANDSHAKE) to prove its key to ``peer``."""
    return encoding.encode({"peer": peer, "signer": signer, "transcript": transcript})


def transcript_hash(dialer_hello: bytes, listener_hello: bytes) -> bytes:
    return sha256(encoding.encode([dialer_hello, listener_hello]))


@dataclass(frozen=True)
class HandshakeResult:
    peer_key: bytes
    send: CipherState
    recv: CipherState
    transcript: bytes


class _State(Enum):
    HELLO = "await hello"
    AUTH = "await auth"
    DONE = "done"
    FAILED = "failed"


def _bin(value: Any, size: int) -> bool:
    return isinstance(value, bytes) and len(value) == size


class Handshake:
    """One side of one handshake. Feed it the peer's handshake payloads in order.

    ``genesis_hash`` is sha256 of this node's canonical genesis (``Genesis.hash``); a peer
    announcing another one is refused with ``genesis_mismatch``. ``allowed`` holds the
    node keys that may connect; ``vet`` may refuse an allowed key
    for local reasons (banned, too many peers) by raising ``HandshakeRefused``.
    ``challenge`` and ``ephemeral_seed`` are injectable so tests are reproducible.
    """

    def __init__(self, chain_id: str, node_key: PrivateKey, *, genesis_hash: bytes,
                 dialer: bool, allowed: Container[bytes],
                 vet: Callable[[bytes], None] | None = None,
                 challenge: bytes | None = None, ephemeral_seed: bytes | None = None,
                 version: int = PROTOCOL_VERSION) -> None:
        self.chain_id = chain_id
        if not _bin(genesis_hash, GENESIS_HASH_SIZE):
            raise ValueError("genesis_hash must be 32 bytes (sha256 of the genesis)")
        self.genesis_hash = genesis_hash
        self.node_key = node_key
        self.own_key = node_key.public_key.raw
        self.dialer = dialer
        self.allowed = allowed
        self.vet = vet
        self.challenge = os.urandom(CHALLENGE_SIZE) if challenge is None else challenge
        if not _bin(self.challenge, CHALLENGE_SIZE):
            raise ValueError("challenge must be 32 bytes")
        self._ephemeral = Ephemeral(ephemeral_seed)
        self._hello = encoding.encode([HELLO, {
            "chain_id": chain_id, "challenge": self.challenge,
            "ephemeral": self._ephemeral.public, "genesis_hash": genesis_hash,
            "node_key": self.own_key, "version": version}])
        self._state = _State.HELLO
        self._peer_key: bytes | None = None
        self._transcript = b""
        self._ciphers: tuple[CipherState, CipherState] | None = None
        self.result: HandshakeResult | None = None

    @property
    def done(self) -> bool:
        return self._state is _State.DONE

    @property
    def peer_key(self) -> bytes | None:
        """The peer's claimed node key once its hello passed (proven only when ``done``)."""
        return self._peer_key

    def hello(self) -> bytes:
        """The hello payload this side sends first."""
        return self._hello

    def receive(self, payload: bytes) -> bytes | None:
        """Process one handshake payload from the peer; return the payload to send, if any.

        Raises ``HandshakeRefused`` (send its ``reply``, then close), ``PeerRefused``
        (the peer rejected us) or ``HandshakeError``; after any error the handshake is
        failed for good.
        """
        if self._state in (_State.DONE, _State.FAILED):
            raise HandshakeError("unexpected", f"handshake is {self._state.value}")
        try:
            return self._receive(payload)
        except HandshakeError:
            self._state = _State.FAILED
            raise

    def _receive(self, payload: bytes) -> bytes | None:
        if len(payload) > HANDSHAKE_MAX_FRAME:
            raise HandshakeRefused("unexpected", "handshake message too large")
        rejected = parse_reject(payload)
        if rejected is not None:
            raise PeerRefused(*rejected)
        try:
            value = encoding.decode(payload, max_size=HANDSHAKE_MAX_FRAME)
        except encoding.EncodingError as exc:
            raise HandshakeRefused("unexpected", f"handshake message undecodable: {exc}") \
                from exc
        if not (isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict)):
            raise HandshakeRefused("unexpected", "handshake message must be [type, map]")
        kind, body = value
        if self._state is _State.HELLO and kind == HELLO:
            return self._on_hello(payload, body)
        if self._state is _State.AUTH and kind == AUTH:
            self._on_auth(body)
            return None
        raise HandshakeRefused("unexpected", f"got {kind!r} while in state {self._state.value}")

    def _on_hello(self, payload: bytes, body: dict) -> bytes:
        # version first: a future version may well change the other fields
        if body.get("version") != PROTOCOL_VERSION:
            raise HandshakeRefused("version", f"protocol version {body.get('version')!r} is "
                                              f"not supported (we speak {PROTOCOL_VERSION})")
        if set(body) != _HELLO_FIELDS:
            raise HandshakeRefused("bad_hello", f"hello fields must be {sorted(_HELLO_FIELDS)}")
        if body["chain_id"] != self.chain_id:
            raise HandshakeRefused("wrong_chain", f"chain id {body['chain_id']!r} is not "
                                                  f"{self.chain_id!r}")
        key = body["node_key"]
        if not (_bin(key, PUBLIC_KEY_SIZE) and _bin(body["challenge"], CHALLENGE_SIZE)
                and _bin(body["ephemeral"], 32)
                and _bin(body["genesis_hash"], GENESIS_HASH_SIZE)):
            raise HandshakeRefused("bad_hello", "node_key, challenge, ephemeral and "
                                                "genesis_hash must be 32 bytes each")
        if body["genesis_hash"] != self.genesis_hash:
            # a configuration error (same chain id, another genesis file), not an attack
            raise HandshakeRefused("genesis_mismatch", genesis_mismatch_message(
                body["genesis_hash"], self.genesis_hash, self.chain_id))
        if key == self.own_key:
            raise HandshakeRefused("self", "connected to ourselves")
        if body["challenge"] == self.challenge:
            raise HandshakeRefused("bad_hello", "peer echoed our challenge")
        if key not in self.allowed:
            raise HandshakeRefused("not_allowed", f"node key {key.hex()} is not in the "
                                                  "allow-list")
        if self.vet is not None:
            self.vet(key)
        shared = self._ephemeral.shared_secret(body["ephemeral"])
        if self.dialer:
            self._transcript = transcript_hash(self._hello, payload)
        else:
            self._transcript = transcript_hash(payload, self._hello)
        self._ciphers = derive_ciphers(shared, self._transcript, self.dialer)
        self._peer_key = key
        self._state = _State.AUTH
        sig = self.node_key.sign(Domain.HANDSHAKE, self.chain_id,
                                 proof_payload(self.own_key, key, self._transcript))
        return encoding.encode([AUTH, {"signature": sig}])

    def _on_auth(self, body: dict) -> None:
        assert self._peer_key is not None and self._ciphers is not None
        if set(body) != {"signature"} or not _bin(body["signature"], SIGNATURE_SIZE):
            raise HandshakeRefused("bad_signature", "auth must be {signature: bin(64)}")
        payload = proof_payload(self._peer_key, self.own_key, self._transcript)
        if not PublicKey(self._peer_key).verify(Domain.HANDSHAKE, self.chain_id, payload,
                                                body["signature"]):
            raise HandshakeRefused("bad_signature", "handshake signature does not verify")
        self._state = _State.DONE
        self.result = HandshakeResult(self._peer_key, self._ciphers[0], self._ciphers[1],
                                      self._transcript)
