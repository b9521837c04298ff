"""The Application API: genesis, check_tx, nonces, atomicity, block lifecycle, queries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chain import encoding
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.tx import Transaction
from contracts import errors
from contracts.app import Application, claim_key, member_key, period_key
from contracts.memstate import MemState
from tests.test_contracts_harness import (
    ASSESSOR,
    CHAIN_ID,
    OPERATOR,
    REGISTRAR,
    Harness,
    devnet_params,
    genesis_doc,
    register_body,
)
from tests.test_contracts_harness import (
    member_key as mkey,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "transactions.md"


def test_init_chain_is_idempotent_and_refuses_another_genesis() -> None:
    h = Harness()
    before = h.state.snapshot()
    h.app.init_chain()
    assert h.state.snapshot() == before
    other = Genesis.from_doc(genesis_doc(devnet_params(fee_bps=1), "2024-01-01T00:00:00Z"))
    with pytest.raises(ValueError, match="another genesis"):
        Application(other, h.state).init_chain()


def test_bad_genesis_params_fail_at_construction() -> None:
    doc = genesis_doc({"fee_bps": 800}, "2024-01-01T00:00:00Z")
    with pytest.raises(ValueError, match="missing"):
        Application(Genesis.from_doc(doc), MemState())


def test_check_tx_codes_and_no_writes() -> None:
    h = Harness()
    before = h.state.snapshot()
    body = register_body(mkey(1), 1)
    cases = [
        (Transaction("other-chain", "register_member", REGISTRAR.public_key.raw, 1, body),
         "wrong_chain_id"),
        (Transaction(CHAIN_ID, "mint_money", REGISTRAR.public_key.raw, 1, {}), "unknown_type"),
        (Transaction(CHAIN_ID, "register_member", REGISTRAR.public_key.raw, 1,
                     {**body, "credit_passed": 1}), "bad_body"),
        (Transaction(CHAIN_ID, "register_member", REGISTRAR.public_key.raw, 1,
                     {**body, "extra": 1}), "bad_body"),
        (Transaction(CHAIN_ID, "register_member", ASSESSOR.public_key.raw, 1, body),
         "not_permitted"),
        (Transaction(CHAIN_ID, "register_member", REGISTRAR.public_key.raw, 2, body),
         "bad_nonce"),
        (Transaction(CHAIN_ID, "leave", mkey(1).public_key.raw, 1, {}), "not_permitted"),
        (Transaction(CHAIN_ID, "register_member", REGISTRAR.public_key.raw, 1, body), "ok"),
    ]
    for tx, code in cases:
        assert h.app.check_tx(tx).code == code, (tx.type, code)
    assert h.state.snapshot() == before


def test_rejected_tx_changes_nothing_and_keeps_the_nonce() -> None:
    h = Harness()
    h.join(1)
    before = h.state.snapshot()
    nonce = h.app.next_nonce(REGISTRAR.public_key.raw)
    with h.block(h.time + 1):
        after_begin = h.state.snapshot()
        r = h.send(REGISTRAR, "register_member", register_body(mkey(2), 2, credit=False))
        assert r.code == "credit_not_passed" and r.events == ()
        assert h.state.snapshot() == after_begin
    assert before != after_begin            # begin_block wrote height and time
    assert h.app.next_nonce(REGISTRAR.public_key.raw) == nonce


def test_nonce_replay_and_gaps_are_refused() -> None:
    h = Harness()
    with h.block(h.g0 + 1):
        tx = h.make_tx(REGISTRAR, "register_member", register_body(mkey(1), 1))
        assert h.app.deliver_tx(tx).code == "ok"
        assert h.app.deliver_tx(tx).code == "bad_nonce"
        gap = h.make_tx(REGISTRAR, "register_member", register_body(mkey(2), 2), nonce=5)
        assert h.app.deliver_tx(gap).code == "bad_nonce"
        assert h.app.deliver_tx(h.make_tx(mkey(1), "leave", {}, nonce=1)).code == "ok"
        assert h.app.deliver_tx(h.make_tx(mkey(1), "leave", {}, nonce=1)).code == "bad_nonce"
    assert h.app.next_nonce(REGISTRAR.public_key.raw) == 2
    assert h.app.next_nonce(mkey(1).public_key.raw) == 2


def test_block_lifecycle_errors() -> None:
    h = Harness()
    with pytest.raises(RuntimeError):
        h.app.deliver_tx(h.make_tx(REGISTRAR, "leave", {}))
    with pytest.raises(RuntimeError):
        h.app.end_block()
    h.tick(h.g0 + 10)
    with pytest.raises(ValueError, match="height"):
        h.app.begin_block(1, h.g0 + 20, b"\x00" * 32)
    with pytest.raises(ValueError, match="before"):
        h.app.begin_block(2, h.g0 + 5, b"\x00" * 32)
    with pytest.raises(ValueError, match="seed"):
        h.app.begin_block(2, h.g0 + 20, b"\x00" * 31)
    uninit = Application(h.genesis, MemState())
    with pytest.raises(RuntimeError, match="init_chain"):
        uninit.begin_block(1, h.g0, b"\x00" * 32)


def test_receipts_and_events_are_canonical_and_json() -> None:
    h = Harness()
    r = h.ok(REGISTRAR, "register_member", register_body(mkey(1), 1))
    m = r.to_map()
    assert m["code"] == "ok" and m["events"][0]["type"] == "member_joined"
    encoding.encode(m)
    json.dumps(m)
    ev = h.tick(h.g0 + 25_000)
    for e in ev:
        encoding.encode(e.to_map())
        json.dumps(e.to_map())


def test_queries() -> None:
    h = Harness()
    k = h.join(1)
    assert h.app.get_member("zz") is None
    assert h.app.get_member("00" * 32) is None
    assert h.app.get_member(k.public_key.hex())["id"] == k.public_key.hex()
    assert h.app.get_claim("x") is None and h.app.get_claim(0) is None
    assert h.app.get_claim(1) is None
    assert h.app.get_period(0) is None
    assert h.app.get_period(3)["status"] == "scheduled"
    assert h.app.member_share(k.public_key.hex(), 1) is None
    acct = h.app.get_account(OPERATOR.public_key.raw)
    assert acct == {"pubkey": OPERATOR.public_key.hex(), "nonce": 0, "next_nonce": 1,
                    "roles": ["operator"], "member": False, "operator_of": None}
    assert member_key(k.public_key.hex()) == b"member/" + k.public_key.raw
    assert h.app.member_key(k.public_key.raw) == member_key(k.public_key.hex())
    assert claim_key("7") == b"claim/" + (7).to_bytes(8, "big")
    assert period_key(2) == h.app.period_key(2) == b"period/" + (2).to_bytes(8, "big")
    # the stored record at the key is what a Merkle proof would show
    assert h.state.get(member_key(k.public_key.hex())) is not None


def test_every_error_code_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))
    assert set(errors.ALL_CODES) <= documented


def test_rule_error_refuses_unknown_codes() -> None:
    with pytest.raises(ValueError):
        errors.RuleError("made_up", "x")


def test_genesis_roles_get_accounts() -> None:
    h = Harness()
    for key in (REGISTRAR, ASSESSOR, OPERATOR):
        assert h.app.next_nonce(key.public_key.raw) == 1
    assert h.app.next_nonce(sha256(b"nobody")) == 1
