"""The committed transaction vectors are current and self-consistent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from chain.crypto import Domain, PrivateKey, PublicKey, sign_bytes
from chain.hashing import sha256
from chain.tx import Transaction, to_jsonable
from contracts.identity import canonical_resident_id, identity_tag
from contracts.txtypes import TX_TYPES, check_body

VECTORS = Path(__file__).resolve().parent / "vectors"


def _generator():
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_vectors_file_is_up_to_date() -> None:
    assert (VECTORS / "transactions.json").read_text() == _generator().render(), (
        "run: python tests/vectors/generate.py")


def test_every_vector_checks_out_byte_for_byte() -> None:
    doc = json.loads((VECTORS / "transactions.json").read_text())
    key = PrivateKey(bytes.fromhex(doc["seed_hex"]))
    assert key.public_key.hex() == doc["public_key_hex"]
    assert {v["type"] for v in doc["vectors"]} == set(TX_TYPES)
    for v in doc["vectors"]:
        signed = bytes.fromhex(v["signed_hex"])
        tx = Transaction.decode(signed)
        assert tx.verify_signature()
        assert tx.type == v["type"] and tx.nonce == v["nonce"]
        assert tx.signing_payload().hex() == v["unsigned_hex"]
        sb = sign_bytes(Domain.TX, v["chain_id"], bytes.fromhex(v["unsigned_hex"]))
        assert sb.hex() == v["sign_bytes_hex"]
        assert PublicKey(tx.sender).verify_raw(bytes.fromhex(v["signature_hex"]), sb)
        assert sha256(signed).hex() == v["tx_hash_hex"]
        check_body(tx.type, tx.body)
        for name, kind in v["body_kinds"].items():
            value = tx.body[name]
            assert to_jsonable(value) == v["body"][name]
            assert (kind == "bin32") == isinstance(value, bytes)


def test_identity_tag_vectors_are_hmacs_of_valid_resident_ids() -> None:
    doc = json.loads((VECTORS / "transactions.json").read_text())["identity_tags"]
    keys = {int(k): bytes.fromhex(v) for k, v in doc["keys_hex"].items()}
    tags = set()
    for case in doc["cases"]:
        assert canonical_resident_id(case["identity"]) == case["identity"]
        tag = identity_tag(keys[case["key_id"]], case["identity"])
        assert tag.hex() == case["tag_hex"]
        tags.add(case["tag_hex"])
    # every register_member vector's tags are among them
    regs = [v for v in json.loads((VECTORS / "transactions.json").read_text())["vectors"]
            if v["type"] == "register_member"]
    assert regs and all(t in tags for v in regs for _, t in v["body"]["identity_tags"])
