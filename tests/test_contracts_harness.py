"""A small driver for contracts tests: a genesis, fixed keys, and block-by-block delivery.

Transactions are built unsigned: ``Application.deliver_tx`` trusts its caller to have
verified signatures, and signing thousands of test transactions would only cost time.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

from chain.crypto import PrivateKey
from chain.genesis import GENESIS_FORMAT, Genesis
from chain.hashing import sha256
from chain.tx import Transaction
from contracts import params as params_mod
from contracts.app import Application, Receipt
from contracts.identity import check_digit, identity_tags
from contracts.memstate import MemState

CHAIN_ID = "mutual-test"
REGISTRAR = PrivateKey(b"\x02" * 32)
ASSESSOR = PrivateKey(b"\x03" * 32)
OPERATOR = PrivateKey(b"\x04" * 32)
VALIDATOR = PrivateKey(b"\x05" * 32)


def member_key(i: int) -> PrivateKey:
    return PrivateKey(sha256(b"member" + i.to_bytes(8, "big")))


def genesis_doc(params: dict[str, Any], genesis_time: str) -> dict[str, Any]:
    return {
        "format": GENESIS_FORMAT,
        "chain_id": CHAIN_ID,
        "genesis_time": genesis_time,
        "validators": [{"name": "v0", "pub_key": VALIDATOR.public_key.hex(), "power": 10}],
        "registrars": [REGISTRAR.public_key.hex()],
        "assessors": [ASSESSOR.public_key.hex()],
        "operator": OPERATOR.public_key.hex(),
        "params": params,
    }


def devnet_params(**overrides: Any) -> dict[str, Any]:
    """The devnet profile, except that every joined member shares (``sharing_basis``
    "joined", what a genesis without the field means): the tests built on this harness
    count members from the notice after they join. Tests of the waiting period's effect
    on the sharing count pass ``sharing_basis="protected"`` (the profile's value)."""
    p = params_mod.profile("devnet")
    p["sharing_basis"] = "joined"
    for k, v in overrides.items():
        if k == "jury":
            p["jury"] = {**p["jury"], **v}
        else:
            p[k] = copy.deepcopy(v)
    return p


class Harness:
    def __init__(self, params: dict[str, Any] | None = None,
                 genesis_time: str = "2024-01-01T00:00:00+00:00", state: Any = None,
                 doc: dict[str, Any] | None = None) -> None:
        """``doc``: a whole genesis document instead of one made from ``params``."""
        self.genesis = Genesis.from_doc(
            doc if doc is not None else genesis_doc(params or devnet_params(), genesis_time))
        self.state = state if state is not None else MemState()
        self.app = Application(self.genesis, self.state)
        self.app.init_chain()
        self.height = 0
        self.time = self.genesis.genesis_time_ms
        self.events: list[Any] = []
        self.in_block = False

    @property
    def g0(self) -> int:
        return self.genesis.genesis_time_ms

    def begin(self, time_ms: int) -> list[Any]:
        assert not self.in_block
        self.height += 1
        self.time = time_ms
        self.in_block = True
        ev = self.app.begin_block(self.height, time_ms, sha256(self.height.to_bytes(8, "big")))
        self.events.extend(ev)
        return ev

    def end(self) -> None:
        self.app.end_block()
        self.in_block = False

    @contextlib.contextmanager
    def block(self, time_ms: int) -> Iterator[Harness]:
        self.begin(time_ms)
        try:
            yield self
        finally:
            self.end()

    def tick(self, time_ms: int) -> list[Any]:
        """An empty block at ``time_ms``."""
        ev = self.begin(time_ms)
        self.end()
        return ev

    def make_tx(self, key: PrivateKey, type_: str, body: dict[str, Any],
                nonce: int | None = None) -> Transaction:
        pk = key.public_key.raw
        return Transaction(CHAIN_ID, type_, pk, nonce or self.app.next_nonce(pk), body)

    def send(self, key: PrivateKey, type_: str, body: dict[str, Any]) -> Receipt:
        """Deliver one transaction; opens and closes a block at the current time if none is
        open."""
        if not self.in_block:
            with self.block(self.time):
                return self.send(key, type_, body)
        r = self.app.deliver_tx(self.make_tx(key, type_, body))
        self.events.extend(r.events)
        return r

    def ok(self, key: PrivateKey, type_: str, body: dict[str, Any]) -> Receipt:
        r = self.send(key, type_, body)
        assert r.code == "ok", (type_, r.code, r.reason)
        return r

    # common transactions

    def join(self, i: int, birth_date: str = "1990-05-01", credit: bool = True,
             guardian: bytes | None = None) -> PrivateKey:
        k = member_key(i)
        self.ok(REGISTRAR, "register_member",
                register_body(k, i, birth_date, credit, guardian, self.app.identity_key_ids()))
        return k

    def claim(self, key: PrivateKey, diagnosed_ms: int, disease: str = "malignant_tumor",
              accident: bool = False) -> Receipt:
        return self.send(key, "file_claim", {"disease": disease, "diagnosed_ms": diagnosed_ms,
                                             "accident": accident,
                                             "evidence_hash": sha256(b"evidence")})

    def last_claim_id(self) -> int:
        return [e for e in self.events if e.type in ("claim_filed", "claim_rejected_waiting")
                ][-1].attrs["claim_id"]

    def assess(self, claim_id: int, approve: bool = True) -> Receipt:
        return self.send(ASSESSOR, "assess_claim", {"claim_id": claim_id, "approve": approve,
                                                    "report_hash": sha256(b"report")})


#: the registrars' identity keys of the test chains (never on chain: docs/privacy.md)
IDENTITY_KEYS = {k: sha256(b"test identity key" + k.to_bytes(4, "big")) for k in range(1, 9)}


def identity_text(i: int) -> str:
    """A valid resident ID (GB 11643 check digit) for test member ``i``."""
    first = f"{110105 + i // 1000:06d}{19900101 + i % 28:08d}{i % 1000:03d}"
    return first + check_digit(first)


def tags_of(i: int, key_ids: tuple[int, ...] | list[int] = (1,)) -> list[list]:
    """Member ``i``'s ``identity_tags`` under ``key_ids`` (the chain's identity_key_ids)."""
    return identity_tags(IDENTITY_KEYS, list(key_ids), identity_text(i))


def register_body(k: PrivateKey, i: int, birth_date: str = "1990-05-01",
                  credit: bool = True, guardian: bytes | None = None,
                  key_ids: tuple[int, ...] | list[int] = (1,)) -> dict[str, Any]:
    """``guardian``: the guardian's identity tag, for a member under the adult age;
    ``credit``: whether the registrar's credit attestation passed."""
    body = {
        "member": k.public_key.raw,
        "identity_tags": tags_of(i, key_ids),
        "birth_date": birth_date,
        "health_commitment": sha256(b"salt" + i.to_bytes(8, "big") + b"health"),
        "credit_attestation": sha256(b"credit attestation" + i.to_bytes(8, "big")),
        "credit_passed": credit,
    }
    if guardian is not None:
        body["guardian_tag"] = guardian
    return body


def test_harness_starts_an_initialised_chain() -> None:
    h = Harness()
    assert h.app.next_nonce(REGISTRAR.public_key.raw) == 1
    assert h.app.get_account(OPERATOR.public_key.raw)["roles"] == ["operator"]
    h.tick(h.g0 + 1)
    assert h.app.get_period(1)["status"] == "scheduled"
