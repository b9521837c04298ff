"""The node follows the validator set height by height (docs/governance.md, "What the
node does"): the executor's per-height sets, block sync's certificates, evidence from
peers, the p2p allow-list, the signer switch at a key rotation, and the API's
/validators, /validators/changes, /proposals and /params/history.

Until the governance transactions exist, a set change is simulated the way the rules
will write one: in the block that decides it (end_block of height H), a ``vset/<H+2>``
record and its height in the ``vsets`` index (``schedule_change``). It is part of the
block's state, so every executor that applies the block agrees on it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chain.block import Block
from chain.certificate import CommitCertificate, verify_certificate
from chain.crypto import PrivateKey
from chain.evidence import DuplicateVoteEvidence
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Vote, VoteType
from consensus.events import Step, TimeoutFired
from consensus.signer import MemorySignerBackend, Signer
from contracts import records
from contracts.app import Application
from contracts.kv import MemoryKV
from node import config as cfg
from node import evidence as evmod
from node.api import Api
from node.driver import ConsensusDriver
from node.eventhub import EventHub
from node.evidence import check_evidence, proposed_node_keys
from node.executor import Executor
from node.metrics import Metrics
from node.node import Node, NodeError
from node.queries import ChainQueries
from node.store.blockstore import BlockStore
from node.sync import BlockSync
from p2p.errors import InvalidMessage
from tests.test_driver_timing import StubWAL
from tests.test_executor import CHAIN, GENESIS, VALS

NEW0 = PrivateKey(b"\x77" * 32)  # validator 0's key after the rotation
NODE_KEYS = [PrivateKey(bytes([0x40 + i]) * 32) for i in range(5)]
SET_A = GENESIS.validators
# validator 0 rotated to NEW0 (same index, power, name), with a node key of its own
SET_B = ValidatorSet([Validator(NEW0.public_key.raw, 10, "v0", NODE_KEYS[4].public_key.raw,
                                None), *SET_A.validators[1:]])
DECIDED_IN = 2          # the block whose execution writes the change
EFFECTIVE = DECIDED_IN + 2  # the first height SET_B signs
REASON = {"kind": "rotate_key", "index": 0, "pub_key": NEW0.public_key.raw}


def schedule_change(monkeypatch: pytest.MonkeyPatch, decided_in: int,
                    new_set: ValidatorSet | Callable[[], ValidatorSet],
                    reasons: list[dict[str, Any]]) -> None:
    """Make every Application write ``new_set`` (or what it returns then) as the set of
    ``decided_in + 2`` when it executes block ``decided_in`` (the record layout of
    contracts/records.py)."""
    real = Application.end_block

    def end_block(self: Application) -> Any:
        height = self._block[0] if self._block is not None else None
        out = real(self)
        if height == decided_in:
            effective = height + 2
            vset = new_set if isinstance(new_set, ValidatorSet) else new_set()
            heights = records.load(self.state, records.VSETS_KEY)["heights"]
            records.store(self.state, records.vset_key(effective),
                          {"validators": vset.to_maps(), "changes": reasons})
            records.store(self.state, records.VSETS_KEY, {"heights": [*heights, effective]})
        return out

    monkeypatch.setattr(Application, "end_block", end_block)


def keys_of(vset: ValidatorSet) -> list[PrivateKey]:
    by_pub = {k.public_key.raw: k for k in [*VALS, NEW0]}
    return [by_pub[v.pub_key] for v in vset.validators]


def cert(block: Block, vset: ValidatorSet, signers: tuple[int, ...] = (0, 1, 2)
         ) -> CommitCertificate:
    """A certificate for ``block`` signed by validators ``signers`` of ``vset``."""
    keys = keys_of(vset)
    t = block.header.time + 1000
    votes = [Vote(VoteType.PRECOMMIT, block.height, 0, block.block_id(), t + i, i)
             .signed(keys[i], CHAIN) for i in signers]
    return CommitCertificate.from_votes(votes)


def fresh() -> Executor:
    kv = MemoryKV()
    return Executor(GENESIS, kv, BlockStore(kv))


def grow(ex: Executor, upto: int) -> list[tuple[Block, CommitCertificate]]:
    """Commit empty blocks up to ``upto``, each certified by its height's set."""
    out = []
    for _ in range(ex.height, upto):
        last = ex.store.certificate(ex.height) if ex.height else None
        header = ex.header_for([], [], last, 0)
        block = Block(header, (), (), last)
        c = cert(block, ex.validators_at(block.height))
        ex.apply(block, c)
        out.append((block, c))
    return out


@pytest.fixture
def changed(monkeypatch: pytest.MonkeyPatch) -> None:
    schedule_change(monkeypatch, DECIDED_IN, SET_B, [REASON])


# ---------------------------------------------------------------------- executor


def test_executor_serves_each_heights_set_one_object_per_set(changed: None) -> None:
    ex = fresh()
    grow(ex, 1)
    assert ex.validators_at(3) == SET_A  # block 2 not executed: the change is not known
    grow(ex, DECIDED_IN)
    assert ex.validator_set_heights() == [1, EFFECTIVE]
    assert ex.validators_at(EFFECTIVE - 1) is ex.validators_at(1) == SET_A
    assert ex.validators_at(EFFECTIVE) is ex.validators_at(EFFECTIVE) == SET_B
    blocks = grow(ex, 6)
    # the headers commit to the set of their height and of the next
    by_height = {b.height: b for b, _ in blocks}
    assert by_height[3].header.validators_hash == SET_A.hash()
    assert by_height[3].header.next_validators_hash == SET_B.hash()
    assert by_height[EFFECTIVE].header.validators_hash == SET_B.hash()
    # the same objects after more blocks (the machine reuses buffered votes by identity)
    assert ex.validators_at(5) is ex.validators_at(EFFECTIVE)
    reopened = Executor(GENESIS, ex.kv, BlockStore(ex.kv))
    assert reopened.validators_at(EFFECTIVE) == SET_B
    with pytest.raises(ValueError):
        ex.validators_at(0)


# ---------------------------------------------------------------------- block sync


class SyncHost:
    """Block sync's view of a follower node: an executor that applies what sync hands it."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self.reported: list[tuple[bytes, str]] = []
        self.sync: BlockSync

    @property
    def height(self) -> int:
        return self.ex.height

    async def broadcast(self, msg_type: str, body: Any) -> None:
        pass

    async def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        return False

    def proposed_block(self, block_id: bytes) -> None:
        return None

    def submit_to_consensus(self, kind: str, item: Any, peer: bytes | None) -> None:
        assert kind == "synced"
        block, c = item
        self.ex.apply(block, c)  # the driver re-validates it: apply does
        self.sync.drain()  # as Node.after_commit does

    def last_progress_at(self) -> float:
        return time.monotonic()

    def validators_at(self, height: int) -> ValidatorSet:
        return self.ex.validators_at(height)

    def report_peer(self, peer: bytes, reason: str) -> None:
        self.reported.append((peer, reason))


PEER = b"\x99" * 32


async def deliver(sync: BlockSync, block: Block, c: CommitCertificate) -> None:
    sync.inflight[block.height] = (PEER, time.monotonic())
    await sync.on_block_response(PEER, {"height": block.height, "block": block.encode(),
                                        "certificate": c.encode()})


def follower() -> tuple[Executor, SyncHost, BlockSync]:
    ex = fresh()
    host = SyncHost(ex)
    host.sync = BlockSync(host, ex.store, GENESIS, lambda behind: None)
    return ex, host, host.sync


async def test_sync_checks_each_certificate_against_its_heights_set(changed: None) -> None:
    src = fresh()
    chain = grow(src, 7)
    ex, host, sync = follower()
    for block, c in chain:
        await deliver(sync, block, c)
    assert ex.height == 7 and ex.state_root == src.state_root
    assert ex.validators_at(EFFECTIVE) == SET_B and host.reported == []
    # what sync verified: SET_A before the change, SET_B from it on
    for block, c in chain:
        vset = SET_B if block.height >= EFFECTIVE else SET_A
        assert verify_certificate(c, CHAIN, vset, block.height, block.block_id())[0]


async def test_sync_refuses_a_certificate_of_the_old_set_after_the_change(changed: None) -> None:
    src = fresh()
    chain = dict((b.height, (b, c)) for b, c in grow(src, 6))
    block4, _ = chain[EFFECTIVE]
    by_old_set = cert(block4, SET_A)  # VALS[0] signs as validator 0: no longer its key
    assert verify_certificate(by_old_set, CHAIN, SET_A, EFFECTIVE, block4.block_id())[0]

    # a follower two blocks below: the set of the block is final, checked at once
    ex, host, sync = follower()
    for h in range(1, EFFECTIVE):
        await deliver(sync, *chain[h])
    with pytest.raises(InvalidMessage, match="bad certificate"):
        await deliver(sync, block4, by_old_set)
    assert ex.height == EFFECTIVE - 1
    # and before the change the new set's certificate is refused the same way
    ex2, _, sync2 = follower()
    block3, _ = chain[3]
    await deliver(sync2, *chain[1])
    with pytest.raises(InvalidMessage, match="bad certificate"):
        await deliver(sync2, block3, cert(block3, SET_B))

    # a follower further behind buffers the block unverified and checks it in turn
    ex3, host3, sync3 = follower()
    await deliver(sync3, *chain[1])
    await deliver(sync3, block4, by_old_set)  # height 4 > 1 + 2: its set is not final
    assert EFFECTIVE in sync3.buffer
    await deliver(sync3, *chain[2])
    await deliver(sync3, *chain[3])
    assert ex3.height == EFFECTIVE - 1  # the forged block 4 was not applied
    assert EFFECTIVE not in sync3.buffer
    assert host3.reported and host3.reported[0][0] == PEER
    assert "bad certificate" in host3.reported[0][1]
    await deliver(sync3, *chain[EFFECTIVE])  # the real one is taken
    assert ex3.height == EFFECTIVE


# ---------------------------------------------------------------------- evidence


def double_vote(key: PrivateKey, index: int, height: int) -> DuplicateVoteEvidence:
    a = Vote(VoteType.PREVOTE, height, 0, sha256(b"a"), 5, index).signed(key, CHAIN)
    b = Vote(VoteType.PREVOTE, height, 0, None, 6, index).signed(key, CHAIN)
    return DuplicateVoteEvidence.create(a, b)


def test_evidence_is_checked_against_the_set_of_its_height(
        changed: None, monkeypatch: pytest.MonkeyPatch) -> None:
    ex = fresh()
    grow(ex, 6)
    old = double_vote(VALS[0], 0, 2)  # validator 0 under its old key, before the rotation
    assert check_evidence(old, CHAIN, ex.height, ex.validators_at) is None
    assert not old.verify(CHAIN, ex.validators)[0]  # the current set would refuse it
    # after the rotation the old key signs for nobody
    late = double_vote(VALS[0], 0, 5)
    assert check_evidence(late, CHAIN, ex.height, ex.validators_at) is not None
    assert check_evidence(double_vote(NEW0, 0, 5), CHAIN, ex.height, ex.validators_at) is None
    # the height being voted on is fine, further is the future
    assert check_evidence(double_vote(NEW0, 0, 7), CHAIN, ex.height, ex.validators_at) is None
    why = check_evidence(double_vote(NEW0, 0, 8), CHAIN, ex.height, ex.validators_at)
    assert why is not None and "future" in why
    monkeypatch.setattr(evmod, "MAX_EVIDENCE_AGE", 2)
    why = check_evidence(old, CHAIN, ex.height, ex.validators_at)
    assert why is not None and "too old" in why


async def test_node_refuses_gossiped_evidence_by_its_heights_set(
        changed: None, tmp_path: Path) -> None:
    ex = fresh()
    grow(ex, 6)
    node = Node(cfg.Config(home=tmp_path), GENESIS, NODE_KEYS[0], None)
    added: list[Any] = []
    node.executor = ex
    node.add_evidence = lambda ev, gossip, exclude=None: added.append(ev)  # type: ignore
    await node._on_evidence(PEER, double_vote(VALS[1], 1, 3).to_map())
    assert len(added) == 1
    with pytest.raises(InvalidMessage, match="invalid evidence"):
        await node._on_evidence(PEER, double_vote(VALS[0], 0, 5).to_map())
    with pytest.raises(InvalidMessage, match="future"):
        await node._on_evidence(PEER, double_vote(VALS[1], 1, 9).to_map())
    assert len(added) == 1
    node._pool.shutdown(wait=False)


# ---------------------------------------------------------------------- allow-list


def test_proposed_node_keys_come_from_open_add_proposals() -> None:
    key = NODE_KEYS[3].public_key.raw
    calls: list[tuple] = []

    def list_proposals(status: str, after: int | None, limit: int) -> dict[str, Any]:
        calls.append((status, after, limit))
        return {"proposals": [
            {"id": 1, "kind": "add_validator", "change": {"node_key": key.hex()}},
            {"id": 2, "kind": "remove_validator", "change": {"node_key": b"\x01" * 32}},
            {"id": 3, "kind": "add_validator", "change": {"validator": {"node_key": "zz"}}},
        ]}

    assert proposed_node_keys(SimpleNamespace(list_proposals=list_proposals)) == {key}
    assert calls == [("open", 0, 500)]
    assert proposed_node_keys(SimpleNamespace()) == set()


async def test_allow_list_follows_the_set_and_drops_a_removed_peer(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Validator 3 (node key NODE_KEYS[3]) is removed in block 2 (effective 4): once the
    node has committed the block after which no set of h .. h+2 holds it, its connection
    is closed; config allowed_keys stay."""
    from p2p.network import Network

    with_nodes = ValidatorSet(Validator(k.public_key.raw, 10, f"v{i}",
                                        NODE_KEYS[i].public_key.raw, None)
                              for i, k in enumerate(VALS))
    without_3 = ValidatorSet(with_nodes.validators[:3])
    sets = {"change": None}

    def validators_at(h: int) -> ValidatorSet:
        return without_3 if sets["change"] is not None and h >= sets["change"] else with_nodes

    kept = PrivateKey(b"\x55" * 32)
    config = cfg.Config(home=tmp_path)
    config.p2p.allowed_keys = [kept.public_key.hex()]
    node = Node(config, GENESIS, NODE_KEYS[0], None)
    node.executor = SimpleNamespace(height=1, validators_at=validators_at,  # type: ignore
                                    app=SimpleNamespace())
    assert node.allowed_peers() == {k.public_key.raw for k in NODE_KEYS[:4]} | {
        kept.public_key.raw}

    nets = [Network(CHAIN, k, listen=("127.0.0.1", 0), allowed=allowed)
            for k, allowed in ((NODE_KEYS[0], node.allowed_peers()),
                               (NODE_KEYS[3], {NODE_KEYS[0].public_key.raw}),
                               (kept, {NODE_KEYS[0].public_key.raw}))]
    try:
        for n in nets:
            await n.start()
        node.network = nets[0]
        host, port = nets[0].listen_address
        await nets[1].connect(host, port)
        await nets[2].connect(host, port)
        await until(lambda: len(nets[0].peers()) == 2, "both peers connected")
        node._update_allowed()  # nothing changed: nobody is dropped
        assert len(nets[0].peers()) == 2
        sets["change"] = 4
        node.executor.height = 1  # the sets of 1..3 still hold validator 3
        node._update_allowed()
        assert NODE_KEYS[3].public_key.raw in nets[0].peers()
        node.executor.height = 4  # sets of 4..6: validator 3 is gone
        node._update_allowed()
        await until(lambda: NODE_KEYS[3].public_key.raw not in nets[0].peers(),
                    "the removed validator disconnected")
        assert nets[0].peers() == [kept.public_key.raw]
        assert NODE_KEYS[3].public_key.raw not in nets[0].allowed
    finally:
        for n in nets:
            await n.stop()
        node._pool.shutdown(wait=False)


async def until(cond: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------------- signer switch


def driver_for(sets: dict[int, ValidatorSet], keys: list[PrivateKey]
               ) -> tuple[ConsensusDriver, list[Signer]]:
    """A driver over stubs whose executor serves ``sets`` (set by first height); the
    stub executor never builds a block (its height is not the one before), so a node
    signs only the prevotes its propose timeouts make."""
    starts = sorted(sets)

    def validators_at(h: int) -> ValidatorSet:
        return sets[max(s for s in starts if s <= h)]

    host = SimpleNamespace(
        genesis=SimpleNamespace(chain_id=CHAIN, validators=sets[1], consensus={
            "timeout_propose_ms": 60_000, "timeout_prevote_ms": 60_000,
            "timeout_precommit_ms": 60_000, "timeout_delta_ms": 0,
            "timeout_commit_ms": 1000}),
        executor=SimpleNamespace(height=-5, validators_at=validators_at),
        metrics=Metrics(), gossip=lambda *a, **k: None)
    signers = [Signer(k, MemorySignerBackend()) for k in keys]
    driver = ConsensusDriver(host, signers[0], StubWAL(),  # type: ignore[arg-type]
                             empty_block_interval_ms=1000, catching_up=lambda: False,
                             more_signers=signers[1:])
    return driver, signers


def run_height(driver: ConsensusDriver, height: int) -> None:
    """Start ``height`` and let its round-0 propose timeout fire (a prevote, if signing)."""
    driver._begin_height(height)
    driver._feed(TimeoutFired(height, 0, Step.PROPOSE), None)
    for t in driver._timers:
        t.cancel()
    driver._timers.clear()


def last_height(signer: Signer) -> int | None:
    last = signer.state.last
    return None if last is None else last.height


async def test_the_rotated_key_signs_from_the_switch_height_and_the_old_one_stops() -> None:
    driver, (old, new) = driver_for({1: SET_A, EFFECTIVE: SET_B}, [VALS[0], NEW0])
    run_height(driver, EFFECTIVE - 1)
    assert driver.signer is old and driver.machine.validator_index == 0
    assert last_height(old) == EFFECTIVE - 1 and last_height(new) is None
    for h in (EFFECTIVE, EFFECTIVE + 1):
        run_height(driver, h)
        assert driver.signer is new and driver.machine.signer is new
        assert driver.machine.validator_index == 0
        assert last_height(new) == h
        assert last_height(old) == EFFECTIVE - 1  # the old key signs nothing at or after


async def test_a_key_added_to_the_set_starts_signing_and_a_removed_one_stops() -> None:
    without_0 = ValidatorSet(SET_A.validators[1:])
    added = ValidatorSet([*SET_A.validators, Validator(NEW0.public_key.raw, 1, "new")])
    driver, (signer,) = driver_for({1: SET_A, 3: added, 5: SET_A}, [NEW0])
    run_height(driver, 2)
    assert driver.signer is None and driver.machine.validator_index is None
    assert last_height(signer) is None  # an observer until it is in the set
    run_height(driver, 3)
    assert driver.machine.validator_index == 4 and last_height(signer) == 3
    run_height(driver, 5)
    assert driver.signer is None and last_height(signer) == 3  # removed: stops
    driver, (signer,) = driver_for({1: SET_A, 3: without_0}, [VALS[0]])
    run_height(driver, 2)
    assert last_height(signer) == 2
    run_height(driver, 3)
    assert driver.signer is None and last_height(signer) == 2


def test_each_key_has_its_own_signer_state_file(tmp_path: Path) -> None:
    from node.store.signer_file import PRIMARY_STATE_FILE, FileSignerBackend, state_file_for

    config = cfg.Config(home=tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    node = Node(config, GENESIS, NODE_KEYS[0], VALS[0], NEW0)
    signers = node._open_signers(data)
    assert [s.public_key for s in signers] == [VALS[0].public_key.raw, NEW0.public_key.raw]
    vote = Vote(VoteType.PREVOTE, 3, 0, None, 5, 0)
    signers[0].sign_vote(vote, CHAIN)
    signers[1].sign_vote(Vote(VoteType.PREVOTE, 4, 0, None, 5, 0), CHAIN)
    assert (data / PRIMARY_STATE_FILE).exists()
    assert state_file_for(data, NEW0.public_key.raw, False) == \
        data / f"signer_state_{NEW0.public_key.raw.hex()}.json"
    assert FileSignerBackend(data / PRIMARY_STATE_FILE).load().last.height == 3
    # key files swapped after the rotation: the new key must not take the old one's file
    swapped = Node(config, GENESIS, NODE_KEYS[0], NEW0, VALS[0])
    again = swapped._open_signers(data)
    assert again[0].state.last.height == 4  # its own file, not signer_state.json
    assert again[1].public_key == VALS[0].public_key.raw
    assert again[1].state.last.height == 3  # signer_state.json: it signed the record
    # a state file of another key is refused, never silently used
    own = data / f"signer_state_{NEW0.public_key.raw.hex()}.json"
    own.write_bytes((data / PRIMARY_STATE_FILE).read_bytes())
    with pytest.raises(NodeError, match="another key"):
        Node(config, GENESIS, NODE_KEYS[0], NEW0)._open_signers(data)
    for n in (node, swapped):
        n._pool.shutdown(wait=False)


# ---------------------------------------------------------------------- API


class ApiStub:
    def status(self) -> dict[str, Any]:
        return {}


async def api_client(ex: Executor, app_extra: dict[str, Any] | None = None) -> TestClient:
    mempool = SimpleNamespace(has=lambda h: False)
    queries = ChainQueries(GENESIS, ex.store, ex, mempool)  # type: ignore[arg-type]
    if app_extra:
        for name, fn in app_extra.items():
            setattr(ex.app, name, fn)
    api = Api(ApiStub(), queries, EventHub(), Metrics(), 1 << 20)  # type: ignore[arg-type]
    client = TestClient(TestServer(api.app))
    await client.start_server()
    return client


async def get(client: TestClient, path: str) -> tuple[int, Any]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def test_validators_by_height(changed: None) -> None:
    ex = fresh()
    grow(ex, 3)  # latest 3: sets known for 1 .. 5
    client = await api_client(ex)
    try:
        status, doc = await get(client, "/validators")
        assert status == 200 and doc["height"] == 4  # the next height
        assert doc["hash"] == SET_B.hash().hex() and doc["next_hash"] == SET_B.hash().hex()
        assert doc["total_power"] == 40
        assert doc["validators"][0] == {
            "index": 0, "name": "v0", "pub_key": NEW0.public_key.hex(), "power": 10,
            "node_key": NODE_KEYS[4].public_key.hex(), "operator": None}
        status, doc = await get(client, "/validators?height=3")
        assert doc["hash"] == SET_A.hash().hex() and doc["next_hash"] == SET_B.hash().hex()
        assert doc["validators"][0]["pub_key"] == VALS[0].public_key.hex()
        assert [v["index"] for v in doc["validators"]] == [0, 1, 2, 3]
        status, doc = await get(client, "/validators?height=5")
        assert status == 200 and doc["next_hash"] is None  # height 6 is not known yet
        for bad in ("abc", "-1", "1.5", "99999999999999999999"):
            status, doc = await get(client, f"/validators?height={bad}")
            assert status == 400 and doc["error"] == "bad_height", bad
        for missing in ("0", "6", "1000"):
            status, doc = await get(client, f"/validators?height={missing}")
            assert status == 404 and doc["error"] == "not_found", missing
    finally:
        await client.close()


async def test_validator_changes_carry_what_a_light_client_checks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # two changes: rotation decided in 2 (at 4), validator 3 removed in 5 (at 7)
    schedule_change(monkeypatch, DECIDED_IN, SET_B, [REASON])
    set_c = ValidatorSet(SET_B.validators[:3])
    schedule_change(monkeypatch, 5, set_c, [{"kind": "remove_validator", "index": 3}])
    ex = fresh()
    grow(ex, 5)  # block 6 (the one before the second change) not committed yet
    client = await api_client(ex)
    try:
        status, doc = await get(client, "/validators/changes")
        assert status == 200 and doc["next_from"] is None
        assert [c["height"] for c in doc["changes"]] == [EFFECTIVE, 7]
        first, second = doc["changes"]
        assert first["hash"] == SET_B.hash().hex()
        assert first["reasons"] == [{"kind": "rotate_key", "index": 0,
                                     "pub_key": NEW0.public_key.hex()}]
        assert len(first["validators"]) == 4
        # the light client's step: the certificate of E-1 by the old set, and the
        # header of E-1 naming the old set and the new one
        from chain.block import BlockHeader
        from chain.encoding import decode

        header = BlockHeader.from_map(decode(bytes.fromhex(first["header"])))
        c = CommitCertificate.decode(bytes.fromhex(first["certificate"]))
        assert header.height == EFFECTIVE - 1
        assert header.validators_hash == SET_A.hash()
        assert header.next_validators_hash == bytes.fromhex(first["hash"])
        block = ex.store.block(EFFECTIVE - 1)
        assert verify_certificate(c, CHAIN, SET_A, EFFECTIVE - 1, block.block_id())[0]
        assert second["hash"] == set_c.hash().hex() and second["header"] is None
        assert second["certificate"] is None and len(second["validators"]) == 3
        status, doc = await get(client, f"/validators/changes?from={EFFECTIVE}")
        assert [c["height"] for c in doc["changes"]] == [7]
        status, doc = await get(client, "/validators/changes?limit=1")
        assert [c["height"] for c in doc["changes"]] == [EFFECTIVE]
        assert doc["next_from"] == EFFECTIVE
        for bad in ("limit=0", "limit=1001", "limit=x", "from=-2", "from=a"):
            status, doc = await get(client, f"/validators/changes?{bad}")
            assert status == 400, bad
    finally:
        await client.close()


async def test_proposals_and_params_history_need_the_governance_rules() -> None:
    ex = fresh()
    client = await api_client(ex)
    try:
        for path in ("/proposals", "/proposals/1", "/params/history"):
            status, doc = await get(client, path)
            if hasattr(ex.app, "list_proposals"):  # the rules have them (after A merges)
                assert status in (200, 404), path
            else:
                assert status == 501 and doc["error"] == "not_implemented", path
        status, doc = await get(client, "/proposals?status=nope")
        assert status == 400 and doc["error"] == "bad_query"
    finally:
        await client.close()


async def test_proposals_are_served_from_the_rules_queries() -> None:
    ex = fresh()
    seen: list[tuple] = []

    def list_proposals(status: str | None, after: int | None, limit: int) -> Any:
        seen.append((status, after, limit))
        return [{"id": 7, "kind": "add_validator", "pub_key": b"\x01" * 32}]

    client = await api_client(ex, {
        "list_proposals": list_proposals,
        "get_proposal": lambda pid: {"id": pid, "status": "open"} if pid == 7 else None,
        "params_history": lambda: [{"from_period": 3, "params": {"fee": 1}}]})
    try:
        status, doc = await get(client, "/proposals?status=open&after=2&limit=5")
        assert status == 200 and seen == [("open", 2, 5)]
        assert doc == {"proposals": [{"id": 7, "kind": "add_validator",
                                      "pub_key": "01" * 32}]}
        status, doc = await get(client, "/proposals")
        assert seen[-1] == (None, 0, 100)
        assert (await get(client, "/proposals/7")) == (200, {"id": 7, "status": "open"})
        status, doc = await get(client, "/proposals/8")
        assert status == 404
        status, doc = await get(client, "/proposals/x")
        assert status == 400
        status, doc = await get(client, "/params/history")
        assert doc == {"history": [{"from_period": 3, "params": {"fee": 1}}]}
    finally:
        await client.close()


# ---------------------------------------------------------------------- live nodes


async def test_live_nodes_follow_an_added_validator_and_a_key_rotation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four validators and a fifth node, in-process on loopback. Block 2 adds the fifth
    (effective 4): the others let its node key in, it syncs and signs from then on with
    no restart. Block 5 rotates validator 0's key (effective 7): node 0, holding both keys,
    switches; its old key signs nothing at or after 7. Every certificate verifies against
    the set of its height."""
    from chain.genesis import Genesis
    from chain.keyfile import write_key
    from devnet.cluster import Cluster, free_base_port
    from p2p.network import Network

    vkey4, nkey4, rotated = PrivateKey.generate(), PrivateKey.generate(), PrivateKey.generate()

    def make_cluster(root: Path) -> tuple[Cluster, Path]:
        """Four validator homes (devnet's layout) and a fifth node's home."""
        base = free_base_port(10)
        cluster = Cluster.create(root, validators=4, base_port=base)
        home4 = root / "node4"
        home4.mkdir()
        write_key(home4 / "validator_key.json", vkey4)
        write_key(home4 / "node_key.json", nkey4)
        config4 = cfg.Config(home=home4)
        config4.node.genesis_file = str(cluster.genesis_path)
        config4.api.listen = f"127.0.0.1:{base + 9}"
        config4.p2p.listen = f"127.0.0.1:{base + 8}"
        config4.p2p.persistent_peers = [f"127.0.0.1:{n.p2p_port}" for n in cluster.nodes]
        (home4 / "config.toml").write_text(cfg.render(config4))
        write_key(cluster.nodes[0].home / "next_validator_key.json", rotated)
        return cluster, home4

    def sets_for(genesis: Genesis) -> tuple[ValidatorSet, ValidatorSet, ValidatorSet]:
        set1 = genesis.validators
        set4 = ValidatorSet([*set1.validators, Validator(
            vkey4.public_key.raw, 10, "validator-4", nkey4.public_key.raw, None)])
        v0 = set4.validators[0]
        set7 = ValidatorSet([Validator(rotated.public_key.raw, v0.power, v0.name,
                                       v0.node_key, None), *set4.validators[1:]])
        return set1, set4, set7

    # each attempt has its own genesis keys: the changes read the sets of the attempt
    current: dict[str, ValidatorSet] = {}
    schedule_change(monkeypatch, 2, lambda: current["4"],
                    [{"kind": "add_validator", "index": 4}])
    schedule_change(monkeypatch, 5, lambda: current["7"], [{"kind": "rotate_key", "index": 0}])
    # dial again quickly once the new validator is allowed in
    monkeypatch.setattr(Network, "backoff", lambda self, attempt: 0.2)
    blamed: list[str] = []
    real_report = Node.report_peer
    monkeypatch.setattr(Node, "report_peer", lambda self, peer, reason: (
        blamed.append(reason), real_report(self, peer, reason)))

    for attempt in range(3):  # another process may take a port between pick and bind
        cluster, home4 = make_cluster(tmp_path / f"net{attempt}")
        genesis = Genesis.load(cluster.genesis_path)
        set1, set4, set7 = sets_for(genesis)
        current.update({"4": set4, "7": set7})
        if await _run_live(cluster, home4, genesis, (set1, set4, set7), nkey4, blamed):
            return
    pytest.fail("no free ports for the in-process nodes in three attempts")


async def _run_live(cluster: Any, home4: Path, genesis: Any,
                    sets: tuple[ValidatorSet, ValidatorSet, ValidatorSet],
                    nkey4: PrivateKey, blamed: list[str]) -> bool:
    """Run the five nodes to height 11 and check them; False if a node could not bind
    its ports (the caller retries on others)."""
    from chain.keyfile import read_key

    set1, set4, set7 = sets
    nodes = []
    for home in [n.home for n in cluster.nodes] + [home4]:
        config = cfg.load(home)
        config.consensus.empty_block_interval_ms = 150
        if home == cluster.nodes[0].home:
            config.node.next_validator_key_file = "next_validator_key.json"
        nxt = config.node.next_validator_key_file
        nodes.append(Node(config, genesis, read_key(home / "node_key.json"),
                          read_key(home / "validator_key.json"),
                          read_key(home / nxt) if nxt else None))
    tasks = [asyncio.create_task(n.run()) for n in nodes]
    target = 11
    try:
        def signed_since(node: Node, index: int, height: int) -> bool:
            signers = getattr(node, "signers", [])
            last = signers[index].state.last if len(signers) > index else None
            return last is not None and last.height >= height

        # every node at the target, and the added node and node 0's rotated key signing
        await until(lambda: any(t.done() for t in tasks) or (
            all(getattr(n, "executor", None) is not None and n.height >= target
                for n in nodes)
            and signed_since(nodes[4], 0, 7) and signed_since(nodes[0], 1, 7)),
            f"every node at height {target}, the new keys signing", 90)
        failed = [str(t.exception()) for t in tasks if t.done()]
        if failed and all("cannot start p2p" in f or "cannot listen" in f for f in failed):
            return False
        assert not failed, failed
        n0, n4 = nodes[0], nodes[4]
        store = n0.store
        for h in range(1, target + 1):
            vset = set1 if h < 4 else set4 if h < 7 else set7
            assert n4.executor.validators_at(h) == vset, h
            block, c = store.block(h), store.certificate(h)
            ok, why = verify_certificate(c, genesis.chain_id, vset, h, block.block_id())
            assert ok, (h, why)
            assert block.header.validators_hash == vset.hash()
        # the added node signs from its first height on, without a restart
        assert n4.validator_index == 4
        assert n4.signers[0].state.last is not None
        assert n4.signers[0].state.last.height >= 7
        # node 0: the old key stopped before 7, the rotated one took over at index 0
        old, new = n0.signers
        assert old.public_key == set1.validators[0].pub_key
        assert old.state.last.height < 7
        assert new.state.last is not None and new.state.last.height >= 7
        assert n0.validator_index == 0 and n0.signer is new
        assert nkey4.public_key.raw in n0.network.allowed
        assert nkey4.public_key.raw in n0.network.peers()
        # nobody was blamed for an honest message of the new set
        assert sum(n.network.metrics.bans for n in nodes) == 0
        assert not blamed, blamed[:3]
        return True
    finally:
        for n in nodes:
            n.request_stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)


async def test_next_height_messages_of_a_new_set_wait_for_it_and_blame_nobody() -> None:
    """At height 3, a prevote for height 4 by validator 0's rotated key (and one by an
    added validator 4) would fail the machine's check against the set of 3: the driver
    holds them and hands them over when height 4 starts with its own set."""
    added = ValidatorSet([*SET_B.validators, Validator(NODE_KEYS[0].public_key.raw, 1, "x")])
    driver, _ = driver_for({1: SET_A, EFFECTIVE: added}, [VALS[1]])
    blamed: list[str] = []
    driver.host.report_peer = lambda peer, reason: blamed.append(reason)
    run_height(driver, EFFECTIVE - 1)
    by_new = Vote(VoteType.PREVOTE, EFFECTIVE, 0, None, 5, 0).signed(NEW0, CHAIN)
    by_added = Vote(VoteType.PREVOTE, EFFECTIVE, 0, None, 5, 4).signed(NODE_KEYS[0], CHAIN)
    forged = Vote(VoteType.PREVOTE, EFFECTIVE, 0, None, 5, 2).signed(NEW0, CHAIN)
    for vote in (by_new, by_added, forged):
        driver._dispatch(SimpleNamespace(kind="vote", payload=vote, peer=PEER))
    assert blamed == [] and len(driver._held) == 3
    run_height(driver, EFFECTIVE)
    votes = driver.machine.votes
    assert votes.prevotes(0) is not None
    assert votes.prevotes(0).get(0) is not None and votes.prevotes(0).get(4) is not None
    # the forgery is judged by the right set once it applies, and its sender blamed
    assert len(blamed) == 1 and "signature" in blamed[0]
    assert driver._held == []


def test_next_validator_key_file_is_a_config_option(tmp_path: Path) -> None:
    text = cfg.render_default()
    assert 'next_validator_key_file = ""' in text
    config = cfg.from_dict({"node": {"next_validator_key_file": "next.json"}}, tmp_path)
    assert config.path(config.node.next_validator_key_file) == tmp_path / "next.json"
    with pytest.raises(cfg.ConfigError, match="next_validator_key_file"):
        cfg.from_dict({"node": {"next_validator_key_file": 3}}, tmp_path)
