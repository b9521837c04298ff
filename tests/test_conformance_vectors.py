"""The conformance kit: every committed vector file in tests/vectors/ is exactly what the
code produces today, and each vector checks out when read the way another implementation
would read it (decode the canonical bytes, rebuild the signed bytes by hand, verify the
signatures with the listed keys, refuse the invalid encodings).

To refresh after a deliberate format change: ``python tests/vectors/generate_conformance.py``
(and ``python tests/vectors/generate.py`` for transactions). docs/conformance.md.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from chain import encoding
from chain.block import Block, BlockHeader
from chain.certificate import CommitCertificate
from chain.crypto import PublicKey
from chain.evidence import DuplicateVoteEvidence
from chain.hashing import sha256
from chain.tx import to_jsonable
from chain.vote import MessageError, Proposal, Vote
from contracts.kv import MemoryKV
from contracts.proof import Proof, verify_proof
from contracts.tree import StateTree

VECTORS = Path(__file__).parent / "vectors"


def _load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, VECTORS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


conformance = _load_module("generate_conformance")


@pytest.mark.parametrize("name", sorted(conformance.FILES))
def test_committed_vectors_match_the_code(name: str) -> None:
    committed = (VECTORS / name).read_text()
    assert committed == conformance.render(name), (
        f"tests/vectors/{name} is stale: run python tests/vectors/generate_conformance.py")


def test_committed_transaction_vectors_match_the_code() -> None:
    tx_gen = _load_module("generate")
    assert (VECTORS / "transactions.json").read_text() == tx_gen.render()


def test_state_proof_vectors_match_the_tree() -> None:
    doc = json.loads((VECTORS / "state_proof.json").read_text())
    kv = MemoryKV()
    tree = StateTree(kv)
    for k, v in doc["items"].items():
        tree.set(bytes.fromhex(k), bytes.fromhex(v))
    batch = kv.batch()
    root = tree.commit(batch)
    kv.write(batch)
    assert root.hex() == doc["root"]
    for case in doc["cases"]:
        key = bytes.fromhex(case["key"])
        value = None if case["value"] is None else bytes.fromhex(case["value"])
        proof = Proof.decode(bytes.fromhex(case["proof"]))
        assert verify_proof(root, key, value, proof) is case["valid"], case["note"]
        if case["valid"]:
            assert tree.prove(key).encode().hex() == case["proof"]


def _doc(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def _signed_bytes(domain: str, chain_id: str, payload: bytes) -> bytes:
    # written out by hand from docs/encoding.md, not through chain.crypto.sign_bytes
    return b"mutual-ledger/" + domain.encode() + b"\x00" + chain_id.encode() + b"\x00" + payload


def _keys(doc: dict) -> list[PublicKey]:
    return [PublicKey.from_hex(v["public_key_hex"]) for v in doc["validators"]]


def test_headers_read_back() -> None:
    doc = _doc("header.json")
    for v in doc["vectors"]:
        raw = bytes.fromhex(v["canonical_hex"])
        hdr = BlockHeader.from_map(encoding.decode(raw))
        assert to_jsonable(hdr.to_map()) == v["fields"]
        assert sha256(raw).hex() == v["block_id_hex"]
    vh = doc["validators_hash"]
    assert sha256(bytes.fromhex(vh["canonical_hex"])).hex() == vh["hash_hex"]
    for bad in doc["invalid"]:
        with pytest.raises((MessageError, encoding.EncodingError)):
            BlockHeader.from_map(encoding.decode(bytes.fromhex(bad["hex"])))


def test_votes_and_proposals_read_back() -> None:
    for name, cls in (("vote.json", Vote), ("proposal.json", Proposal)):
        doc = _doc(name)
        keys = _keys(doc)
        for v in doc["vectors"]:
            msg = cls.decode(bytes.fromhex(v["wire_hex"]))
            assert to_jsonable(msg.payload_map()) == v["fields"]
            payload = bytes.fromhex(v["sign_payload_hex"])
            assert msg.sign_payload() == payload
            signed = _signed_bytes(v["domain"], doc["chain_id"], payload)
            assert signed.hex() == v["sign_bytes_hex"]
            assert keys[msg.validator].verify_raw(bytes.fromhex(v["signature_hex"]), signed)
        for bad in doc["invalid"]:
            raw = bytes.fromhex(bad["wire_hex"])
            if bad.get("decodes"):
                msg = cls.decode(raw)
                signed = _signed_bytes(msg.type.domain.value, doc["chain_id"],
                                       msg.sign_payload())
                assert not keys[msg.validator].verify_raw(msg.sig, signed), bad["note"]
            else:
                with pytest.raises(MessageError):
                    cls.decode(raw)


def test_certificates_read_back() -> None:
    doc = _doc("certificate.json")
    keys = _keys(doc)
    powers = [v["power"] for v in doc["validators"]]
    for v in doc["vectors"]:
        raw = bytes.fromhex(v["canonical_hex"])
        cert = CommitCertificate.decode(raw)
        assert sha256(raw).hex() == v["hash_hex"]
        sigs_ok = all(
            keys[s.validator].verify_raw(s.sig, bytes.fromhex(sb))
            for s, sb in zip(cert.sigs, v["precommit_sign_bytes_hex"], strict=True))
        power = sum(powers[s.validator] for s in cert.sigs)
        assert power == v["signed_power"]
        valid = (sigs_ok and 3 * power > 2 * v["total_power"]
                 and cert.block_id.hex() == v["block_id_hex"] and cert.height == v["height"])
        assert valid is v["valid"], v["note"]
    for bad in doc["invalid_encodings"]:
        with pytest.raises(MessageError):
            CommitCertificate.decode(bytes.fromhex(bad["hex"]))


def test_evidence_and_blocks_read_back() -> None:
    doc = _doc("evidence.json")
    for v in doc["vectors"]:
        raw = bytes.fromhex(v["canonical_hex"])
        ev = DuplicateVoteEvidence.from_map(encoding.decode(raw))
        assert to_jsonable(ev.to_map()) == v["fields"]
        assert sha256(raw).hex() == v["hash_hex"]
    doc = _doc("block.json")
    for v in doc["vectors"]:
        block = Block.decode(bytes.fromhex(v["canonical_hex"]))
        block.check_structure()
        assert block.header.encode().hex() == v["header_hex"]
        assert block.block_id().hex() == v["block_id_hex"]
        assert [sha256(t).hex() for t in block.txs] == v["tx_hashes_hex"]
        assert block.last_commit is not None
        assert block.last_commit.block_id == sha256(bytes.fromhex(doc["parent_header_hex"]))
