"""An in-process chain builder for the auditor's tests, and the scenario they share.

``ChainBuilder`` produces exactly what a validator network commits: blocks built and
validated by ``node.executor.Executor``, each committed by a certificate of precommits
signed by fixed validator keys, with the block time controlled through those
certificates' timestamps (a block's time is the median of its parent's certificate). It
can write into a LevelDB laid out exactly like a node's database, so ``--data`` audits and
tamper tests need no processes. ``rechain`` re-signs a chain from some height on, which is
how a forger holding every validator key would rewrite history.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from audit import REPLAY_ROOTS, Auditor, MemorySource, audit
from audit.governance_model import GovernanceModel
from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.crypto import PrivateKey
from chain.genesis import GENESIS_FORMAT, Genesis
from chain.hashing import sha256
from chain.tx import Transaction
from chain.validators import Validator, ValidatorSet
from chain.vote import Vote, VoteType
from contracts import records
from contracts.app import Application
from contracts.identity import check_digit, identity_tags
from contracts.kv import KV, MemoryKV
from contracts.params import profile
from node.executor import Applied, Executor
from node.store.blockstore import BlockStore

GENESIS_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
CHAIN_ID = "audit-test"


def key(label: str) -> PrivateKey:
    return PrivateKey(sha256(label.encode()))


#: the registrars' identity keys of the audit test chains (a plan secret: never on chain)
IDENTITY_KEYS = {k: sha256(b"audit test identity key %d" % k) for k in range(1, 9)}


def identity_text(i: int) -> str:
    """A valid resident ID (GB 11643 check digit) for test member ``i``."""
    first17 = f"{310101 + i // 1000:06d}{19900101 + i % 28:08d}{i % 1000:03d}"
    return first17 + check_digit(first17)


def tags_of(i: int, key_ids: tuple[int, ...] | list[int] = (1,)) -> list[list]:
    """Member ``i``'s ``identity_tags`` under ``key_ids`` (the chain's identity_key_ids)."""
    return identity_tags(IDENTITY_KEYS, list(key_ids), identity_text(i))


def register_body(member: PrivateKey, i: int, birth: str = "1990-01-01",
                  key_ids: tuple[int, ...] | list[int] = (1,)) -> dict[str, Any]:
    """A format-2 ``register_member`` body for test member ``i`` (docs/transactions.md)."""
    return {"member": member.public_key.raw, "identity_tags": tags_of(i, key_ids),
            "birth_date": birth,
            "health_commitment": sha256(b"salt%d|health%d" % (i, i)),
            "credit_attestation": sha256(b"credit attestation %d" % i),
            "credit_passed": True}


class ChainBuilder:
    """Builds, certifies and applies blocks; keeps their canonical bytes."""

    def __init__(self, params_override: dict[str, Any] | None = None, validators: int = 4,
                 kv: KV | None = None, operators: bool = False) -> None:
        """``operators``: each genesis validator gets an operator account
        (``key("operator-<i>")``) that may send governance transactions."""
        self.val_keys = [key(f"validator-{i}") for i in range(validators)]
        # every consensus key the chain's sets may name (genesis, added, rotated in):
        # a certificate of height h is signed by the keys of the set of h
        self.keys = {k.public_key.raw: k for k in self.val_keys}
        self.registrar, self.assessor, self.operator = (
            key("registrar"), key("assessor"), key("operator"))
        params = profile("devnet")
        # the scenarios count members from the notice after they join (a genesis without
        # sharing_basis); a test of the waiting period's effect overrides it
        params["sharing_basis"] = "joined"
        params.update(params_override or {})
        doc = {
            "format": GENESIS_FORMAT, "chain_id": CHAIN_ID, "genesis_time": "2023-11-14T22:13:20+00:00",
            "validators": [{"name": f"v{i}", "pub_key": k.public_key.hex(), "power": 10,
                            **({"operator_account": key(f"operator-{i}").public_key.hex()}
                               if operators else {})}
                           for i, k in enumerate(self.val_keys)],
            "registrars": [self.registrar.public_key.hex()],
            "assessors": [self.assessor.public_key.hex()],
            "operator": self.operator.public_key.hex(),
            "params": params,
        }
        self.genesis = Genesis.from_doc(doc)
        assert self.genesis.genesis_time_ms == GENESIS_MS
        self.kv = kv if kv is not None else MemoryKV()
        self.store = BlockStore(self.kv)
        self.ex = Executor(self.genesis, self.kv, self.store)
        self.blocks: list[bytes] = []
        self.certs: dict[int, bytes] = {}
        self.applied: list[Applied] = []
        self.last_cert: CommitCertificate | None = None
        self.next_time = GENESIS_MS
        self.nonces: dict[bytes, int] = {}

    @property
    def height(self) -> int:
        return self.ex.height

    def tx(self, sender: PrivateKey, type_: str, body: dict[str, Any]) -> Transaction:
        nonce = self.nonces.get(sender.public_key.raw, 0) + 1
        self.nonces[sender.public_key.raw] = nonce
        return Transaction.create(sender, CHAIN_ID, type_, nonce, body)

    def add_keys(self, *keys: PrivateKey) -> None:
        """Consensus keys that a later set (a governance change) names."""
        self.keys.update((k.public_key.raw, k) for k in keys)

    def certify(self, height: int, block_id: bytes, ts: int,
                signers: list[int] | None = None) -> CommitCertificate:
        """Precommits of the set of ``height`` (``signers``: indexes in that set)."""
        vset = self.ex.validators_at(height)
        idx = range(len(vset)) if signers is None else signers
        votes = [Vote(VoteType.PRECOMMIT, height, 0, block_id, ts, i).signed(
            self.keys[vset[i].pub_key], CHAIN_ID) for i in idx]
        return CommitCertificate.from_votes(votes)

    def commit(self, txs: list[Transaction] = (), gap_ms: int = 1000,
               evidence: tuple = ()) -> Applied:
        """Commit a block at ``self.next_time``; the next block comes ``gap_ms`` later."""
        raw = [t.encode() for t in txs]
        h = self.ex.height + 1
        header = self.ex.header_for(raw, list(evidence), self.last_cert,
                                    proposer=h % len(self.ex.validators_at(h)))
        block = Block(header, tuple(raw), tuple(evidence), self.last_cert)
        valid = self.ex.validate(block)
        cert = self.certify(h, block.block_id(), self.next_time + gap_ms)
        applied = self.ex.apply(block, cert, valid)
        self.blocks.append(block.encode())
        self.certs[h] = cert.encode()
        self.applied.append(applied)
        self.last_cert = cert
        self.next_time += gap_ms
        return applied

    def commit_at(self, time_ms: int, txs: list[Transaction] = ()) -> Applied:
        """Commit empty blocks as needed so that ``txs`` land in a block at ``time_ms``."""
        if self.next_time > time_ms:
            raise ValueError(f"the next block is at {self.next_time}, after {time_ms}")
        if self.next_time < time_ms:
            self.commit([], gap_ms=time_ms - self.next_time)
        return self.commit(list(txs))

    def source(self) -> MemorySource:
        return MemorySource(list(self.blocks), dict(self.certs))


def rechain(b: ChainBuilder, blocks: list[bytes], certs: dict[int, bytes], start: int,
            mutate: Callable[[Block], Block]) -> tuple[list[bytes], dict[int, bytes]]:
    """Rewrite block ``start`` with ``mutate`` and re-sign it and every later block with
    all validator keys (same timestamps), as a forger holding every key would."""
    out = list(blocks[: start - 1])
    new_certs = {h: c for h, c in certs.items() if h < start}
    prev_cert = CommitCertificate.decode(certs[start - 1]) if start > 1 else None
    for h in range(start, len(blocks) + 1):
        block = Block.decode(blocks[h - 1])
        if h == start:
            block = mutate(block)
        hdr = block.header
        if prev_cert is not None:
            hdr = replace(hdr, last_block_id=prev_cert.block_id,
                          last_commit_hash=prev_cert.hash())
        block = Block(hdr, block.txs, block.evidence, prev_cert)
        old = CommitCertificate.decode(certs[h])
        cert = b.certify(h, block.block_id(), old.sigs[0].timestamp)
        out.append(block.encode())
        new_certs[h] = cert.encode()
        prev_cert = cert
    return out, new_certs


# ---- validator set changes (test-only governance) ------------------------------------------

# a change committed in block H: the set before -> the set from H+2 and its recorded reasons
SetChange = Callable[[ValidatorSet], tuple[ValidatorSet, list[dict[str, Any]]]]


def add_validator(k: PrivateKey, power: int, name: str) -> SetChange:
    def change(old: ValidatorSet) -> tuple[ValidatorSet, list[dict[str, Any]]]:
        return (ValidatorSet([*old.validators, Validator(k.public_key.raw, power, name)]),
                [{"kind": "add", "name": name, "pub_key": k.public_key.raw, "power": power}])
    return change


def rotate_key(index: int, new: PrivateKey) -> SetChange:
    def change(old: ValidatorSet) -> tuple[ValidatorSet, list[dict[str, Any]]]:
        vals = list(old.validators)
        vals[index] = replace(vals[index], pub_key=new.public_key.raw)
        return ValidatorSet(vals), [{"kind": "rotate_key", "index": index,
                                     "pub_key": old[index].pub_key,
                                     "new_pub_key": new.public_key.raw}]
    return change


def remove_validator(index: int) -> SetChange:
    def change(old: ValidatorSet) -> tuple[ValidatorSet, list[dict[str, Any]]]:
        vals = list(old.validators)
        gone = vals.pop(index)
        return ValidatorSet(vals), [{"kind": "remove", "index": index,
                                     "pub_key": gone.pub_key}]
    return change


def set_power(index: int, power: int) -> SetChange:
    def change(old: ValidatorSet) -> tuple[ValidatorSet, list[dict[str, Any]]]:
        vals = list(old.validators)
        vals[index] = replace(vals[index], power=power)
        return ValidatorSet(vals), [{"kind": "power", "index": index, "power": power}]
    return change


@contextlib.contextmanager
def set_changes(plan: dict[int, SetChange]) -> Iterator[None]:
    """While active, every ``Application`` (the builder's and the auditor's replay alike)
    ends block H of ``plan`` by writing the changed set at H+2 the way the contracts
    record a passed validator proposal (``vset/<H+2>`` and the ``vsets`` index,
    contracts/records.py). A stand-in for governance transactions: the chain, its
    headers and certificates are exactly those a governed chain would have."""
    # an inner plan replaces an outer one while it is active (never both at once)
    original = getattr(Application.end_block, "original", Application.end_block)

    def end_block(self: Application) -> Any:
        h = self._block[0] if self._block is not None else None
        if h in plan:
            new, changes = plan[h](self.validators_at(h + 2))
            records.store(self.state, records.vset_key(h + 2),
                          {"validators": new.to_maps(), "changes": changes})
            idx = records.load(self.state, records.VSETS_KEY)
            if idx["heights"][-1] != h + 2:
                idx["heights"].append(h + 2)
            records.store(self.state, records.VSETS_KEY, idx)
        return original(self)

    end_block.original = original  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        import pytest

        mp = stack.enter_context(pytest.MonkeyPatch.context())
        mp.setattr(Application, "end_block", end_block)
        # no proposal made these changes: the audit's governance model must not ask for one
        # (an empty plan: a chain governed by real transactions, checked in full)
        mp.setattr(GovernanceModel, "CHECK_SET_ORIGINS", not plan)
        yield


def with_header(block: Block, **fields: Any) -> Block:
    return Block(replace(block.header, **fields), block.txs, block.evidence, block.last_commit)


def rebuild_block(raw: bytes, edit: Callable[[dict], None]) -> bytes:
    """Decode a block to its map, edit it, re-encode canonically (no re-signing)."""
    m = encoding.decode(raw, max_size=1 << 24)
    edit(m)
    return encoding.encode(m)


# ---- the shared scenario ----------------------------------------------------------------

S = 1000
MEMBERS = 7


class Scenario:
    """Members join, jurors are approved, a waiting-period claim is rejected, an accident
    claim is objected to and paid after an open jury votes, a second claim is approved and
    paid without objection, an appealed denial is heard, arrears are recorded and paid, a
    member leaves, and three periods settle (devnet schedule: 60 s periods, notice at +20 s,
    settlement at +45 s)."""

    def __init__(self, b: ChainBuilder) -> None:
        self.b = b
        self.m = [key(f"member-{i}") for i in range(MEMBERS)]
        self.jury_vote_heights: list[int] = []
        self.settle_heights: list[int] = []
        self.run()

    def run(self) -> None:
        b, m, g = self.b, self.m, GENESIS_MS
        reg = [b.tx(b.registrar, "register_member", register_body(k, i))
               for i, k in enumerate(m)]
        b.commit_at(g, reg)
        b.commit_at(g + 11 * S, [b.tx(b.registrar, "approve_juror",
                                      {"member": m[i].public_key.raw,
                                       "exam_ref": sha256(b"exam%d" % i)})
                                 for i in (1, 2, 3, 4)])
        # m0: accident inside the waiting period (covered); m6: illness inside it (rejected)
        b.commit_at(g + 12 * S, [
            b.tx(m[0], "file_claim", {"disease": "malignant_tumor", "diagnosed_ms": g + 5 * S,
                                      "accident": True, "evidence_hash": sha256(b"ev0")}),
            b.tx(m[6], "file_claim", {"disease": "stroke_sequelae", "diagnosed_ms": g + 6 * S,
                                      "accident": False, "evidence_hash": sha256(b"ev6")}),
        ])
        b.commit_at(g + 13 * S, [b.tx(b.assessor, "assess_claim", {
            "claim_id": 1, "approve": True, "accident": True,
            "report_hash": sha256(b"r1")})])
        b.commit_at(g + 20 * S)                         # notice 1
        b.commit_at(g + 22 * S, [b.tx(m[1], "object_claim", {
            "claim_id": 1, "reason_hash": sha256(b"o1")})])
        b.commit_at(g + 30 * S)                         # objection close: open jury
        b.commit_at(g + 32 * S, [b.tx(m[i], "jury_vote", {"claim_id": 1, "pay": i != 4})
                                 for i in (2, 3, 4)])
        self.jury_vote_heights.append(b.height)
        b.commit_at(g + 45 * S)                         # jury closes, settlement 1 pays
        self.settle_heights.append(b.height)
        b.commit_at(g + 50 * S, [b.tx(b.registrar, "record_arrears", {
            "member": m[4].public_key.raw, "period": 1})])
        b.commit_at(g + 51 * S, [
            b.tx(b.registrar, "record_payment", {"member": m[4].public_key.raw, "period": 1}),
            b.tx(m[2], "file_claim", {"disease": "thyroid_cancer", "diagnosed_ms": g + 50 * S,
                                      "accident": False, "evidence_hash": sha256(b"ev2")}),
            b.tx(m[5], "file_claim", {"disease": "deafness", "diagnosed_ms": g + 50 * S,
                                      "accident": False, "evidence_hash": sha256(b"ev5")}),
        ])
        b.commit_at(g + 52 * S, [
            b.tx(b.assessor, "assess_claim", {"claim_id": 3, "approve": True,
                                              "report_hash": sha256(b"r3")}),
            b.tx(b.assessor, "assess_claim", {"claim_id": 4, "approve": False,
                                              "report_hash": sha256(b"r4")}),
        ])
        b.commit_at(g + 55 * S, [b.tx(m[5], "appeal_claim", {
            "claim_id": 4, "reason_hash": sha256(b"a4")})])
        b.commit_at(g + 57 * S, [b.tx(m[i], "jury_vote", {"claim_id": 4, "pay": False})
                                 for i in (1, 3)])
        b.commit_at(g + 60 * S, [b.tx(m[3], "leave", {})])
        b.commit_at(g + 75 * S)                         # appeal jury closes: no quorum
        b.commit_at(g + 80 * S)                         # notice 2 (claim 3)
        b.commit_at(g + 105 * S)                        # settlement 2 pays claim 3
        self.settle_heights.append(b.height)
        b.commit_at(g + 140 * S)                        # notice 3
        b.commit_at(g + 165 * S)                        # settlement 3: nothing to pay
        self.settle_heights.append(b.height)
        b.commit_at(g + 166 * S)


def build_scenario(params_override: dict[str, Any] | None = None,
                   kv: KV | None = None) -> tuple[ChainBuilder, Scenario]:
    b = ChainBuilder(params_override, kv=kv)
    return b, Scenario(b)


# ---- tests of the builder and of a clean audit --------------------------------------------

def test_scenario_is_a_valid_chain_and_every_transaction_applies() -> None:
    b, sc = build_scenario()
    codes = [r.code for a in b.applied for r in a.receipts]
    assert codes and set(codes) == {"ok"}, codes
    period = b.ex.app.get_period(1)
    assert period["status"] == "settled" and period["claims"] == [1]
    assert b.ex.app.get_claim(1)["status"] == "paid"
    assert b.ex.app.get_claim(2)["status"] == "rejected_waiting"
    assert b.ex.app.get_claim(3)["status"] == "paid"
    assert b.ex.app.get_claim(4)["status"] == "denied_final"
    assert b.ex.app.get_period(3)["status"] == "settled"


def test_the_replay_keeps_only_the_roots_its_checks_read() -> None:
    # the replay prunes as a node does, so its memory follows the state, not the history
    b, _ = build_scenario()
    auditor = Auditor(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert auditor.run().ok
    assert b.height > 10
    roots = [k for k, _ in auditor.executor.state_kv.iterate(b"r")]
    assert len(roots) == REPLAY_ROOTS


def test_an_on_disk_replay_reports_the_same_and_removes_itself(tmp_path) -> None:
    b, _ = build_scenario()
    in_memory = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    on_disk = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01,
                    work_dir=tmp_path)
    assert on_disk.ok and in_memory.ok
    for field in ("blocks", "txs", "applied", "rejected", "periods", "state_root",
                  "certificates", "signatures", "stats", "verdicts"):
        assert getattr(on_disk, field) == getattr(in_memory, field), field
    assert list(tmp_path.iterdir()) == []


def test_clean_chain_passes_with_every_figure_in_the_report() -> None:
    b, _ = build_scenario()
    report = audit(b.genesis, b.source(), workers=0, verify_seconds=0.01)
    assert report.ok, report.first_error
    assert report.blocks == b.height
    assert report.state_root == b.ex.state_root.hex()
    assert report.periods == 3
    assert report.stats["claims_paid"] == 2
    assert report.stats["waiting_rejections"] == 1
    assert report.stats["juries"] == 2
    assert report.verdicts == {"pay": 1, "no_quorum": 1}
    assert report.txs == sum(len(a.receipts) for a in b.applied)
    p1 = b.ex.app.get_period(1)
    assert report.stats["fees_fen"] == sum(b.ex.app.get_period(n)["F"] for n in (1, 2, 3))
    assert report.stats["shared_fen"] == sum(b.ex.app.get_period(n)["collected"]
                                             for n in (1, 2, 3))
    assert p1["F"] == p1["P"] * 800 // 10_000
