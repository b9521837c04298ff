"""Votes, proposals, certificates, evidence, block headers and genesis."""

import json
from pathlib import Path

import pytest

from chain import encoding
from chain.block import Block, BlockHeader, evidence_hash, txs_hash
from chain.certificate import CommitCertificate, verify_certificate, weighted_median_time
from chain.crypto import PrivateKey
from chain.evidence import (
    DuplicateProposalEvidence,
    DuplicateVoteEvidence,
    decode_evidence,
    evidence_from_map,
)
from chain.genesis import GENESIS_FORMAT, Genesis, GenesisError
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import MessageError, Proposal, Vote, VoteType

CHAIN = "mutual-test"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(4)]
VSET = ValidatorSet(Validator(k.public_key.raw, 10) for k in KEYS)
BID = sha256(b"block")


def precommit(i, block_id=BID, ts=1000, height=5, rnd=0):
    return Vote(VoteType.PRECOMMIT, height, rnd, block_id, ts + i, i).signed(KEYS[i], CHAIN)


def test_vote_round_trip_and_domain():
    v = precommit(0)
    assert Vote.decode(v.encode()) == v
    assert v.verify(CHAIN, VSET)
    as_prevote = Vote(VoteType.PREVOTE, v.height, v.round, v.block_id, v.timestamp, 0, v.sig)
    assert not as_prevote.verify(CHAIN, VSET)
    assert not Vote(VoteType.PRECOMMIT, 5, 0, BID, 1000, 1, v.sig).verify(CHAIN, VSET)
    assert not Vote(VoteType.PRECOMMIT, 5, 0, BID, 1000, 9, v.sig).verify(CHAIN, VSET)


def test_vote_bad_fields():
    with pytest.raises(MessageError):
        Vote(VoteType.PREVOTE, -1, 0, None, 0, 0)
    with pytest.raises(MessageError):
        Vote(VoteType.PREVOTE, 1, 0, b"short", 0, 0)
    with pytest.raises(MessageError):
        Vote.decode(encoding.encode({"type": 3}))
    with pytest.raises(MessageError):
        Vote.decode(b"\xc1")


def test_proposal_round_trip():
    p = Proposal(3, 2, 1, BID, 5, 1).signed(KEYS[1], CHAIN)
    assert Proposal.decode(p.encode()) == p
    assert p.verify(CHAIN, VSET)
    assert not Proposal(3, 2, 0, BID, 5, 1, p.sig).verify(CHAIN, VSET)
    with pytest.raises(MessageError):
        Proposal(3, 2, 2, BID, 5, 1)
    with pytest.raises(MessageError):
        Proposal(3, 0, -2, BID, 5, 1)


def test_certificate_quorum_and_verification():
    cert = CommitCertificate.from_votes([precommit(i) for i in (2, 0, 1)])
    assert [s.validator for s in cert.sigs] == [0, 1, 2]
    assert verify_certificate(cert, CHAIN, VSET, 5, BID) == (True, "ok")
    assert CommitCertificate.decode(cert.encode()) == cert
    ok, why = verify_certificate(cert, CHAIN, VSET, 6, BID)
    assert not ok and "height" in why
    short = CommitCertificate.from_votes([precommit(0), precommit(1)])
    ok, why = verify_certificate(short, CHAIN, VSET)
    assert not ok and "2/3" in why
    forged = CommitCertificate(5, 0, BID, (cert.sigs[0], cert.sigs[1],
                                           type(cert.sigs[2])(2, 1, cert.sigs[2].sig)))
    ok, why = verify_certificate(forged, CHAIN, VSET)
    assert not ok and "validator 2" in why
    ok, why = verify_certificate(cert, "other-chain", VSET)
    assert not ok


def test_certificate_refuses_unsorted_and_mixed():
    m = CommitCertificate.from_votes([precommit(0), precommit(1), precommit(2)]).to_map()
    m["sigs"] = list(reversed(m["sigs"]))
    with pytest.raises(MessageError):
        CommitCertificate.from_map(m)
    with pytest.raises(MessageError):
        CommitCertificate.from_votes([precommit(0), precommit(1, block_id=sha256(b"x"))])


def test_weighted_median_time():
    vset = ValidatorSet(Validator(k.public_key.raw, p) for k, p in zip(KEYS, (1, 1, 1, 10), strict=True))
    votes = [Vote(VoteType.PRECOMMIT, 1, 0, BID, ts, i).signed(KEYS[i], CHAIN)
             for i, ts in enumerate((100, 200, 300, 400))]
    assert weighted_median_time(CommitCertificate.from_votes(votes), vset) == 400
    assert weighted_median_time(CommitCertificate.from_votes(votes), VSET) == 200


def test_evidence():
    a = Vote(VoteType.PREVOTE, 4, 1, BID, 10, 2).signed(KEYS[2], CHAIN)
    b = Vote(VoteType.PREVOTE, 4, 1, None, 11, 2).signed(KEYS[2], CHAIN)
    ev = DuplicateVoteEvidence.create(b, a)
    assert ev.verify(CHAIN, VSET) == (True, "ok")
    assert DuplicateVoteEvidence.from_map(encoding.decode(ev.encode())) == ev
    assert DuplicateVoteEvidence.create(a, b).hash() == ev.hash()
    same = DuplicateVoteEvidence(a, a)
    assert not same.verify(CHAIN, VSET)[0]
    other_round = Vote(VoteType.PREVOTE, 4, 2, None, 11, 2).signed(KEYS[2], CHAIN)
    assert not DuplicateVoteEvidence.create(a, other_round).verify(CHAIN, VSET)[0]


def _proposal(block_id=BID, pol=-1, ts=10, rnd=1, who=2, key=None):
    return Proposal(4, rnd, pol, block_id, ts, who).signed(key or KEYS[who], CHAIN)


def test_proposal_evidence():
    a, b = _proposal(), _proposal(block_id=sha256(b"other"))
    ev = DuplicateProposalEvidence.create(b, a)
    assert ev == DuplicateProposalEvidence.create(a, b)
    assert ev.proposal_a.encode() < ev.proposal_b.encode()
    assert ev.verify(CHAIN, VSET) == (True, "ok")
    assert (ev.height, ev.validator) == (4, 2)
    assert DuplicateProposalEvidence.from_map(encoding.decode(ev.encode())) == ev
    assert ev.hash() == sha256(ev.encode())
    # the same block with another POL round is an equivocation too
    pol = DuplicateProposalEvidence.create(a, _proposal(pol=0))
    assert pol.verify(CHAIN, VSET) == (True, "ok")
    refused = {
        "proposals are for the same block and POL round":
            DuplicateProposalEvidence.create(a, _proposal(ts=11)),
        "proposals are not for the same height, round and validator":
            DuplicateProposalEvidence.create(a, _proposal(rnd=2, block_id=sha256(b"x"))),
        "proposals are not in canonical order": DuplicateProposalEvidence(ev.proposal_b,
                                                                          ev.proposal_a),
        "a proposal signature is invalid": DuplicateProposalEvidence.create(
            a, _proposal(block_id=sha256(b"x"), key=KEYS[3])),
    }
    for reason, bad in refused.items():
        assert bad.verify(CHAIN, VSET) == (False, reason)
    # checked against the set of its height: a set without the proposer's key refuses it
    other = ValidatorSet(Validator(k.public_key.raw, 10) for k in (KEYS[0], KEYS[1], KEYS[3]))
    assert ev.verify(CHAIN, other) == (False, "a proposal signature is invalid")


def test_evidence_from_map_tells_the_kinds_apart():
    v = DuplicateVoteEvidence.create(
        Vote(VoteType.PREVOTE, 4, 1, BID, 10, 2).signed(KEYS[2], CHAIN),
        Vote(VoteType.PREVOTE, 4, 1, None, 11, 2).signed(KEYS[2], CHAIN))
    p = DuplicateProposalEvidence.create(_proposal(), _proposal(block_id=sha256(b"other")))
    assert evidence_from_map(v.to_map()) == v and evidence_from_map(p.to_map()) == p
    assert decode_evidence(v.encode()) == v and decode_evidence(p.encode()) == p
    bad_maps = [
        {"vote_a": v.to_map()["vote_a"], "proposal_b": p.to_map()["proposal_b"]},
        {**v.to_map(), "extra": 1},
        {"proposal_a": v.to_map()["vote_a"], "proposal_b": v.to_map()["vote_b"]},
        [v.to_map()],
        None,
    ]
    for m in bad_maps:
        with pytest.raises(MessageError):
            evidence_from_map(m)
    with pytest.raises(MessageError):
        decode_evidence(b"\xc1")
    with pytest.raises(MessageError):
        DuplicateVoteEvidence.from_map(p.to_map())
    with pytest.raises(MessageError):
        DuplicateProposalEvidence.from_map(v.to_map())


def test_block_carries_both_kinds_of_evidence():
    v = DuplicateVoteEvidence.create(
        Vote(VoteType.PREVOTE, 1, 0, BID, 10, 2).signed(KEYS[2], CHAIN),
        Vote(VoteType.PREVOTE, 1, 0, None, 11, 2).signed(KEYS[2], CHAIN))
    p = DuplicateProposalEvidence.create(_proposal(), _proposal(block_id=sha256(b"other")))
    cert = CommitCertificate.from_votes([precommit(i, height=1) for i in range(3)])
    header = _header(evidence_hash=evidence_hash([v, p]), last_commit_hash=cert.hash(),
                     last_block_id=BID)
    block = Block(header, (), (v, p), cert)
    block.check_structure()
    back = Block.decode(block.encode())
    assert back == block and back.evidence == (v, p)
    swapped = Block(header, (), (p, v), cert)  # the evidence hash fixes the order
    with pytest.raises(MessageError, match="evidence_hash"):
        Block.decode(swapped.encode()).check_structure()


def test_evidence_vectors_read_back_with_their_verdicts():
    doc = json.loads((Path(__file__).parent / "vectors" / "evidence.json").read_text())
    vset = ValidatorSet(Validator(bytes.fromhex(v["public_key_hex"]), v["power"])
                        for v in doc["validators"])
    for v in doc["vectors"] + doc["proposal_vectors"]:
        ev = decode_evidence(bytes.fromhex(v["canonical_hex"]))
        assert ev.hash().hex() == v["hash_hex"]
        assert ev.verify(doc["chain_id"], vset) == (v["valid"], v["reason"]), v["note"]
    assert {type(decode_evidence(bytes.fromhex(v["canonical_hex"])))
            for v in doc["proposal_vectors"]} == {DuplicateProposalEvidence}
    for bad in doc["invalid_encodings"]:
        with pytest.raises(MessageError):
            decode_evidence(bytes.fromhex(bad["hex"]))


def _header(height=2, **kw):
    fields = dict(chain_id=CHAIN, height=height, time=5, last_block_id=BID,
                  last_commit_hash=sha256(b"c"), txs_hash=txs_hash([]),
                  evidence_hash=evidence_hash([]), state_root=sha256(b"s"),
                  validators_hash=VSET.hash(), proposer=0, next_validators_hash=VSET.hash())
    fields.update(kw)
    return BlockHeader(**fields)


def test_block_round_trip_and_structure():
    cert = CommitCertificate.from_votes([precommit(i, height=1) for i in range(3)])
    txs = (b"tx1", b"tx2")
    header = _header(last_commit_hash=cert.hash(), txs_hash=txs_hash(list(txs)))
    block = Block(header, txs, (), cert)
    back = Block.decode(block.encode())
    assert back == block and back.block_id() == block.block_id()
    block.check_structure()
    bad = Block(header, (b"tx1",), (), cert)
    with pytest.raises(MessageError, match="txs_hash"):
        bad.check_structure()
    with pytest.raises(MessageError, match="last_block_id"):
        Block(_header(height=1, last_commit_hash=None), (), (), None)


def _genesis_doc():
    return {
        "format": GENESIS_FORMAT,
        "chain_id": CHAIN,
        "genesis_time": "2019-01-01T00:00:00+08:00",
        "validators": [{"name": f"v{i}", "pub_key": k.public_key.hex(), "power": 10}
                       for i, k in enumerate(KEYS)],
        "registrars": [KEYS[0].public_key.hex()],
        "assessors": [KEYS[1].public_key.hex()],
        "operator": KEYS[2].public_key.hex(),
        "params": {"profile": "devnet"},
    }


def test_genesis_load(tmp_path):
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(_genesis_doc()))
    g = Genesis.load(path)
    assert g.chain_id == CHAIN and len(g.validators) == 4
    assert g.genesis_time_ms == 1546272000000
    assert g.hash == Genesis.from_doc(_genesis_doc()).hash


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("validators"), "missing"),
        (lambda d: d.update(validators=[]), "non-empty"),
        (lambda d: d.update(chain_id="bad id"), "chain id"),
        (lambda d: d.update(genesis_time="yesterday"), "invalid time"),
        (lambda d: d.update(genesis_time="2019-01-01T00:00:00"), "zone"),
        (lambda d: d.update(operator="xyz"), "operator"),
        (lambda d: d["validators"][0].update(power=0), "power"),
        (lambda d: d["validators"].append(dict(d["validators"][0])), "duplicate"),
        (lambda d: d.update(consensus={"timeout_propose_ms": -1}), "positive"),
        (lambda d: d.update(consensus={"nope": 1}), "unknown"),
        (lambda d: d.update(params={"x": 1.5}), "encodable"),
        (lambda d: d.update(surprise=1), "unknown fields"),
    ],
)
def test_genesis_errors(mutate, match):
    doc = _genesis_doc()
    mutate(doc)
    with pytest.raises(GenesisError, match=match):
        Genesis.from_doc(doc)


def test_genesis_unreadable(tmp_path):
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(GenesisError, match="not valid JSON"):
        Genesis.load(tmp_path / "bad.json")
