"""Generate the consensus wire-format conformance vectors in tests/vectors/.

Writes header.json, vote.json, proposal.json, certificate.json, evidence.json and
block.json: for each format, the inputs (every field, bytes as hex), the canonical bytes,
hashes, the exact domain-separated bytes that are signed, and Ed25519 signatures by fixed
keys (Ed25519 is deterministic, so the files are byte-for-byte reproducible), plus invalid
cases another implementation must refuse. docs/conformance.md explains how to use them.

Run ``python tests/vectors/generate_conformance.py`` to rewrite the files;
tests/test_conformance_vectors.py fails if they are stale.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # allow running as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

import msgpack  # noqa: E402

from chain import encoding  # noqa: E402
from chain.block import Block, BlockHeader, evidence_hash, txs_hash  # noqa: E402
from chain.certificate import (  # noqa: E402
    CommitCertificate,
    verify_certificate,
    weighted_median_time,
)
from chain.crypto import Domain, PrivateKey, sign_bytes  # noqa: E402
from chain.evidence import (  # noqa: E402
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    Evidence,
)
from chain.hashing import merkle_root, sha256  # noqa: E402
from chain.tx import Transaction, to_jsonable  # noqa: E402
from chain.validators import Validator, ValidatorSet  # noqa: E402
from chain.vote import Proposal, Vote, VoteType  # noqa: E402

OUT = Path(__file__).resolve().parent
CHAIN_ID = "mutual-vectors"
SEEDS = [bytes([0x11 + i]) * 32 for i in range(4)]
POWERS = [10, 20, 30, 40]
T0 = 1_700_000_000_000


def keys() -> list[PrivateKey]:
    return [PrivateKey(s) for s in SEEDS]


def validator_set() -> ValidatorSet:
    return ValidatorSet(Validator(k.public_key.raw, p) for k, p in zip(keys(), POWERS,
                                                                        strict=True))


def _keys_doc() -> list[dict[str, Any]]:
    return [{"index": i, "seed_hex": s.hex(), "public_key_hex": k.public_key.hex(),
             "power": p} for i, (s, k, p) in enumerate(zip(SEEDS, keys(), POWERS, strict=True))]


def _h(label: str) -> bytes:
    return sha256(label.encode())


def _common(about: str) -> dict[str, Any]:
    return {"about": about, "chain_id": CHAIN_ID, "validators": _keys_doc()}


# ---- headers, validator set hash and Merkle roots ----------------------------------------

def sample_header(height: int) -> BlockHeader:
    return BlockHeader(
        chain_id=CHAIN_ID, height=height, time=T0 + 1000 * height,
        last_block_id=None if height == 1 else _h(f"block {height - 1}"),
        last_commit_hash=None if height == 1 else _h(f"certificate {height - 1}"),
        txs_hash=merkle_root([]) if height == 1 else merkle_root([_h("tx a"), _h("tx b")]),
        evidence_hash=merkle_root([]), state_root=_h(f"state after {height - 1}"),
        validators_hash=validator_set().hash(), proposer=height % 4,
        next_validators_hash=validator_set().hash())


def headers() -> dict[str, Any]:
    vset = validator_set()
    doc = _common("Block headers (docs/encoding.md, chain/block.py): the canonical map, "
                  "its bytes, and the block id = sha256(bytes). Also the validator set "
                  "hash and the Merkle root used for txs_hash and evidence_hash. "
                  "last_block_id, last_commit_hash, state_root and the txs_hash leaves are "
                  "sha256 of labels, and proposer is height % 4: an arbitrary valid index, "
                  "not the proposer schedule (only 0 <= proposer < 4 is checked).")
    doc["vectors"] = []
    for h in (1, 2, 70000):
        hdr = sample_header(h)
        doc["vectors"].append({"fields": to_jsonable(hdr.to_map()),
                               "canonical_hex": hdr.encode().hex(),
                               "block_id_hex": hdr.block_id().hex()})
    doc["validators_hash"] = {
        "input": [[v.pub_key.hex(), v.power] for v in vset.validators],
        "canonical_hex": encoding.encode([[v.pub_key, v.power] for v in vset.validators]).hex(),
        "hash_hex": vset.hash().hex(),
    }
    doc["merkle"] = [{"leaves_hex": [leaf.hex() for leaf in leaves],
                      "root_hex": merkle_root(leaves).hex()}
                     for leaves in ([_h(f"leaf {i}") for i in range(n)] for n in range(6))]
    good = sample_header(2).to_map()
    bad_order = msgpack.packb(dict(sorted(good.items(), reverse=True)), use_bin_type=True)
    doc["invalid"] = [
        {"note": "keys not in sorted order (not canonical)", "hex": bad_order.hex()},
        {"note": "height 1 with a last_block_id",
         "hex": encoding.encode({**sample_header(1).to_map(), "last_block_id": _h("x")}).hex()},
        {"note": "state_root of 31 bytes",
         "hex": encoding.encode({**good, "state_root": bytes(31)}).hex()},
        {"note": "an extra field",
         "hex": encoding.encode({**good, "extra": 1}).hex()},
    ]
    return doc


# ---- votes and proposals -----------------------------------------------------------------

def _vote_doc(v: Vote) -> dict[str, Any]:
    payload = v.sign_payload()
    return {"fields": to_jsonable(v.payload_map()), "domain": v.type.domain.value,
            "sign_payload_hex": payload.hex(),
            "sign_bytes_hex": sign_bytes(v.type.domain, CHAIN_ID, payload).hex(),
            "signature_hex": v.sig.hex(), "wire_hex": v.encode().hex()}


def votes() -> dict[str, Any]:
    ks = keys()
    doc = _common("Prevotes and precommits (chain/vote.py): the signed payload map, the "
                  "domain-separated bytes that are signed, the Ed25519 signature of the "
                  "voting validator's key, and the wire form (payload plus sig).")
    block_id = sample_header(5).block_id()
    vs = [
        Vote(VoteType.PREVOTE, 5, 0, block_id, T0 + 5100, 0).signed(ks[0], CHAIN_ID),
        Vote(VoteType.PREVOTE, 5, 1, None, T0 + 5200, 1).signed(ks[1], CHAIN_ID),
        Vote(VoteType.PRECOMMIT, 5, 0, block_id, T0 + 5300, 2).signed(ks[2], CHAIN_ID),
        Vote(VoteType.PRECOMMIT, 5, 2, None, T0 + 5400, 3).signed(ks[3], CHAIN_ID),
    ]
    doc["vectors"] = [_vote_doc(v) for v in vs]
    pre = vs[0]
    wrong_domain = ks[0].sign(Domain.PRECOMMIT, CHAIN_ID, pre.sign_payload())
    other_chain = ks[0].sign(Domain.PREVOTE, "another-chain", pre.sign_payload())
    doc["invalid"] = [
        {"note": "a prevote signed in the precommit domain: signature must not verify",
         "wire_hex": Vote(pre.type, pre.height, pre.round, pre.block_id, pre.timestamp,
                          pre.validator, wrong_domain).encode().hex(), "decodes": True},
        {"note": "signed for chain id \"another-chain\" instead of \"mutual-vectors\": "
                 "signature must not verify",
         "wire_hex": Vote(pre.type, pre.height, pre.round, pre.block_id, pre.timestamp,
                          pre.validator, other_chain).encode().hex(), "decodes": True},
        {"note": "vote type 3 does not exist",
         "wire_hex": encoding.encode({**pre.to_map(), "type": 3}).hex(), "decodes": False},
        {"note": "timestamp -1, encoded as the negative fixint 0xff: timestamps are uints "
                 "(0 .. 2^63-1), so the decoder refuses it",
         "wire_hex": encoding.encode({**pre.to_map(), "timestamp": -1}).hex(),
         "decodes": False},
    ]
    return doc


def proposals() -> dict[str, Any]:
    ks = keys()
    doc = _common("Proposals (chain/vote.py): payload map, signed bytes (domain "
                  "proposal/v1), signature by the proposer's key, wire form.")
    block_id = sample_header(5).block_id()
    ps = [Proposal(5, 0, -1, block_id, T0 + 5000, 1).signed(ks[1], CHAIN_ID),
          Proposal(5, 3, 1, block_id, T0 + 9000, 2).signed(ks[2], CHAIN_ID)]
    doc["vectors"] = []
    for p in ps:
        payload = p.sign_payload()
        doc["vectors"].append({
            "fields": to_jsonable(p.payload_map()), "domain": Domain.PROPOSAL.value,
            "sign_payload_hex": payload.hex(),
            "sign_bytes_hex": sign_bytes(Domain.PROPOSAL, CHAIN_ID, payload).hex(),
            "signature_hex": p.sig.hex(), "wire_hex": p.encode().hex()})
    doc["invalid"] = [
        {"note": "pol_round not below round",
         "wire_hex": encoding.encode({**ps[0].to_map(), "pol_round": 0}).hex()},
        {"note": "pol_round -2", "wire_hex": encoding.encode({**ps[1].to_map(),
                                                              "pol_round": -2}).hex()},
    ]
    return doc


# ---- certificates ------------------------------------------------------------------------

def certificate_for(height: int, block_id: bytes, signers: list[int],
                    times: list[int] | None = None) -> CommitCertificate:
    ks = keys()
    times = times or [T0 + 1000 * height + 100 * (i + 1) for i in range(4)]
    return CommitCertificate.from_votes([
        Vote(VoteType.PRECOMMIT, height, 0, block_id, times[i], i).signed(ks[i], CHAIN_ID)
        for i in signers])


def _cert_case(note: str, cert: CommitCertificate, height: int, block_id: bytes
               ) -> dict[str, Any]:
    vset = validator_set()
    ok, why = verify_certificate(cert, CHAIN_ID, vset, height, block_id)
    return {
        "note": note, "height": height, "block_id_hex": block_id.hex(),
        "fields": to_jsonable(cert.to_map()), "canonical_hex": cert.encode().hex(),
        "hash_hex": cert.hash().hex(),
        "precommit_sign_bytes_hex": [
            sign_bytes(Domain.PRECOMMIT, CHAIN_ID, v.sign_payload()).hex()
            for v in cert.votes()],
        "signed_power": sum(POWERS[s.validator] for s in cert.sigs),
        "total_power": vset.total_power, "valid": ok, "reason": why,
        "median_time": weighted_median_time(cert, vset) if ok else None,
    }


def certificates() -> dict[str, Any]:
    doc = _common("Commit certificates (chain/certificate.py): precommits of one (height, "
                  "round, block id), sorted by validator index. Valid iff every signature "
                  "verifies and the signed power is more than 2/3 of the total "
                  "(3 * signed > 2 * total). median_time is the power-weighted median of "
                  "the timestamps: the next block's time.")
    block_id = sample_header(7).block_id()
    full = certificate_for(7, block_id, [0, 1, 2, 3])
    top = certificate_for(7, block_id, [1, 2, 3])
    tight = certificate_for(7, block_id, [0, 2, 3])          # 80 of 100
    short = certificate_for(7, block_id, [2, 3])              # 70 of 100: 210 > 200
    shorter = certificate_for(7, block_id, [0, 1, 2])         # 60 of 100
    skew = certificate_for(7, block_id, [0, 1, 2, 3],
                           [T0 + 9000, T0 + 1000, T0 + 5000, T0 + 3000])
    bad = top.to_map()
    bad["sigs"][1][2] = bytes([bad["sigs"][1][2][0] ^ 1]) + bad["sigs"][1][2][1:]
    doc["vectors"] = [
        _cert_case("all four validators", full, 7, block_id),
        _cert_case("validators 1, 2, 3: power 90 of 100", top, 7, block_id),
        _cert_case("validators 0, 2, 3: power 80 of 100", tight, 7, block_id),
        _cert_case("validators 2, 3: power 70 of 100 (210 > 200: still a quorum)", short, 7,
                   block_id),
        _cert_case("validators 0, 1, 2: power 60 of 100 (180 <= 200: short)", shorter, 7,
                   block_id),
        _cert_case("timestamps out of order: the weighted median", skew, 7, block_id),
        _cert_case("validators 0, 1: power 30 of 100, short of 2/3",
                   certificate_for(7, block_id, [0, 1]), 7, block_id),
        _cert_case("one signature altered", CommitCertificate.from_map(bad), 7, block_id),
        _cert_case("checked against another block id", full, 7, _h("another block")),
    ]
    unsorted = full.to_map()
    unsorted["sigs"] = list(reversed(unsorted["sigs"]))
    doc["invalid_encodings"] = [
        {"note": "sigs not sorted by validator index", "hex": encoding.encode(unsorted).hex()},
        {"note": "empty sigs", "hex": encoding.encode({**full.to_map(), "sigs": []}).hex()},
    ]
    return doc


# ---- evidence ----------------------------------------------------------------------------

def evidence() -> dict[str, Any]:
    ks = keys()
    doc = _common("Evidence (chain/evidence.py). vectors: duplicate-vote evidence, two votes "
                  "of one validator for the same height, round and type with different "
                  "block ids; vote_a is the one whose canonical bytes sort first. "
                  "proposal_vectors: duplicate-proposal evidence, two proposals of one "
                  "validator for the same height and round with a different block id or "
                  "pol_round; proposal_a is the one whose canonical bytes sort first. The "
                  "two kinds are told apart by their keys. hash = sha256(canonical).")
    a = Vote(VoteType.PREVOTE, 9, 0, _h("block x"), T0 + 9100, 2).signed(ks[2], CHAIN_ID)
    b = Vote(VoteType.PREVOTE, 9, 0, _h("block y"), T0 + 9101, 2).signed(ks[2], CHAIN_ID)
    c = Vote(VoteType.PRECOMMIT, 9, 1, None, T0 + 9200, 3).signed(ks[3], CHAIN_ID)
    d = Vote(VoteType.PRECOMMIT, 9, 1, _h("block z"), T0 + 9201, 3).signed(ks[3], CHAIN_ID)
    vset = validator_set()

    def case(note: str, ev: Evidence) -> dict[str, Any]:
        ok, why = ev.verify(CHAIN_ID, vset)
        return {"note": note, "fields": to_jsonable(ev.to_map()),
                "canonical_hex": ev.encode().hex(), "hash_hex": ev.hash().hex(),
                "valid": ok, "reason": why}

    doc["vectors"] = [
        case("two prevotes for different blocks", DuplicateVoteEvidence.create(a, b)),
        case("a nil precommit and a precommit for a block", DuplicateVoteEvidence.create(c, d)),
        case("votes in the wrong order", DuplicateVoteEvidence(*sorted(
            (a, b), key=lambda v: v.encode(), reverse=True))),
        case("the same vote twice", DuplicateVoteEvidence(a, a)),
        case("different validators", DuplicateVoteEvidence.create(a, Vote(
            VoteType.PREVOTE, 9, 0, _h("block y"), T0 + 9101, 1).signed(ks[1], CHAIN_ID))),
    ]
    pa = Proposal(9, 2, -1, _h("block x"), T0 + 9300, 1).signed(ks[1], CHAIN_ID)
    pb = Proposal(9, 2, -1, _h("block y"), T0 + 9300, 1).signed(ks[1], CHAIN_ID)
    pc = Proposal(9, 2, 1, _h("block x"), T0 + 9300, 1).signed(ks[1], CHAIN_ID)
    pd = Proposal(9, 2, -1, _h("block x"), T0 + 9301, 1).signed(ks[1], CHAIN_ID)
    pe = Proposal(9, 3, -1, _h("block y"), T0 + 9300, 1).signed(ks[1], CHAIN_ID)
    forged = Proposal(9, 2, -1, _h("block y"), T0 + 9300, 1, ks[2].sign_raw(b"forged"))
    doc["proposal_vectors"] = [
        case("two proposals for different blocks", DuplicateProposalEvidence.create(pa, pb)),
        case("the same block with another pol_round", DuplicateProposalEvidence.create(pa, pc)),
        case("only the timestamps differ", DuplicateProposalEvidence.create(pa, pd)),
        case("different rounds", DuplicateProposalEvidence.create(pa, pe)),
        case("proposals in the wrong order", DuplicateProposalEvidence(*sorted(
            (pa, pb), key=lambda p: p.encode(), reverse=True))),
        case("a forged signature", DuplicateProposalEvidence.create(pa, forged)),
    ]
    vote_ev = DuplicateVoteEvidence.create(a, b).to_map()
    prop_ev = DuplicateProposalEvidence.create(pa, pb).to_map()
    doc["invalid_encodings"] = [
        {"note": "vote_a with proposal_b (mixed kinds)",
         "hex": encoding.encode({"vote_a": vote_ev["vote_a"],
                                 "proposal_b": prop_ev["proposal_b"]}).hex()},
        {"note": "an extra key", "hex": encoding.encode({**prop_ev, "vote_a": vote_ev[
            "vote_a"]}).hex()},
        {"note": "a vote where a proposal belongs",
         "hex": encoding.encode({"proposal_a": vote_ev["vote_a"],
                                 "proposal_b": vote_ev["vote_b"]}).hex()},
    ]
    return doc


# ---- a whole block -----------------------------------------------------------------------

def blocks() -> dict[str, Any]:
    ks = keys()
    doc = _common("Whole blocks (chain/block.py): header, signed transactions, evidence and "
                  "the commit certificate of the parent (last_commit); the header commits "
                  "to them through txs_hash (Merkle root of sha256 of each signed tx), "
                  "evidence_hash and last_commit_hash.")
    payer = PrivateKey(b"\x21" * 32)
    txs = [Transaction.create(payer, CHAIN_ID, "leave", 1, {}).encode(),
           Transaction.create(payer, CHAIN_ID, "jury_vote", 2,
                              {"claim_id": 1, "pay": True}).encode()]
    parent = sample_header(1)
    last_commit = certificate_for(1, parent.block_id(), [1, 2, 3])
    vset = validator_set()
    ev = DuplicateVoteEvidence.create(
        Vote(VoteType.PREVOTE, 1, 0, _h("p"), T0 + 1, 0).signed(ks[0], CHAIN_ID),
        Vote(VoteType.PREVOTE, 1, 0, _h("q"), T0 + 2, 0).signed(ks[0], CHAIN_ID))
    header = BlockHeader(
        chain_id=CHAIN_ID, height=2, time=weighted_median_time(last_commit, vset),
        last_block_id=parent.block_id(), last_commit_hash=last_commit.hash(),
        txs_hash=txs_hash(txs), evidence_hash=evidence_hash([ev]),
        state_root=_h("state after 1"), validators_hash=vset.hash(), proposer=2,
        next_validators_hash=vset.hash())
    block = Block(header, tuple(txs), (ev,), last_commit)
    block.check_structure()
    doc["parent_header_hex"] = parent.encode().hex()

    def case(note: str, block: Block) -> dict[str, Any]:
        header = block.header
        return {
            "note": note,
            "canonical_hex": block.encode().hex(), "block_id_hex": block.block_id().hex(),
            "header_hex": header.encode().hex(),
            "tx_hashes_hex": [sha256(t).hex() for t in block.txs],
            "txs_hash_hex": header.txs_hash.hex(),
            "evidence_hash_hex": header.evidence_hash.hex(),
            "last_commit_hash_hex": header.last_commit_hash.hex(), "time": header.time,
        }

    pev = DuplicateProposalEvidence.create(
        Proposal(1, 0, -1, _h("p"), T0 + 1, 1).signed(ks[1], CHAIN_ID),
        Proposal(1, 0, -1, _h("q"), T0 + 1, 1).signed(ks[1], CHAIN_ID))
    both = Block(replace(header, evidence_hash=evidence_hash([ev, pev])), tuple(txs),
                 (ev, pev), last_commit)
    both.check_structure()
    doc["vectors"] = [
        case("height 2 with two transactions, one evidence and the parent's certificate",
             block),
        case("the same block carrying duplicate-vote and duplicate-proposal evidence", both),
    ]
    return doc


FILES = {"header.json": headers, "vote.json": votes, "proposal.json": proposals,
         "certificate.json": certificates, "evidence.json": evidence, "block.json": blocks}


def render(name: str) -> str:
    return json.dumps(FILES[name](), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    for file_name in FILES:
        (OUT / file_name).write_text(render(file_name))
        print(f"wrote {OUT / file_name}")
