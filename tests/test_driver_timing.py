"""When the consensus driver starts the next height (docs/node.md, step 6).

A real ``Node`` object (its ``after_commit``), a real ``ConsensusDriver`` and a real
``ConsensusMachine`` fed signed proposals and precommits by hand; storage, the mempool,
block sync and the network are small stubs. The test pumps the driver's inbox itself, so
what happens before the ``timeout_commit_ms`` timer fires is deterministic; the only real
waits are that timer (bounded) and nothing touches a socket.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet
from chain.vote import Proposal, Vote, VoteType
from consensus.events import ProposalReceived
from node import config as cfg
from node.driver import ConsensusDriver, _Item
from node.node import Node

CHAIN = "driver-test"
KEYS = [PrivateKey(sha256(b"driver-%d" % i)) for i in range(7)]
NAMES = [f"v{i}" for i in range(7)]
TIMEOUT_COMMIT_MS = 200


class StubWAL:
    size = 0

    def replay(self, height: int) -> list[bytes]:
        return []

    def append(self, data: bytes, sync: bool = False) -> None:
        pass

    def end_height(self, height: int) -> None:
        pass


class StubNetwork:
    allowed: frozenset[bytes] = frozenset()

    def set_allowed(self, keys: frozenset[bytes]) -> None:
        self.allowed = frozenset(keys)

    async def broadcast(self, msg_type: str, body: Any, exclude: bytes | None = None) -> None:
        pass


class Harness:
    """A node (observer: no validator key) in a set of seven equal validators; a quorum
    is five precommits."""

    def __init__(self, tmp_path: Any, empty_block_interval_ms: int = 60_000) -> None:
        validators = ValidatorSet(Validator(k.public_key.raw, 1, n)
                                  for k, n in zip(KEYS, NAMES, strict=True))
        self.genesis = SimpleNamespace(
            chain_id=CHAIN, validators=validators,
            consensus={"timeout_propose_ms": 30_000, "timeout_prevote_ms": 30_000,
                       "timeout_precommit_ms": 30_000, "timeout_delta_ms": 0,
                       "timeout_commit_ms": TIMEOUT_COMMIT_MS})
        config = cfg.Config(home=tmp_path)
        config.consensus.empty_block_interval_ms = empty_block_interval_ms
        node = self.node = Node(config, self.genesis, KEYS[0], None)  # type: ignore[arg-type]
        self.ready = 0  # transactions the stub mempool has ready
        self.started: dict[int, float] = {}  # height -> monotonic time it started
        self.committed: dict[int, float] = {}
        node.network = StubNetwork()
        node.sync = SimpleNamespace(catching_up=False, drain=lambda: None)
        node.evidence = SimpleNamespace(committed=lambda block: None, pending=lambda h: [])
        node.mempool = SimpleNamespace(ready_count=lambda: self.ready,
                                       update=lambda *a, **k: [])
        node.executor = SimpleNamespace(height=0, app=SimpleNamespace(
            next_nonce=lambda s: 1, check_tx=lambda tx: None), apply=self._apply,
            validators_at=lambda height: validators)
        self.driver = node.driver = ConsensusDriver(  # type: ignore[arg-type]
            node, None, StubWAL(), empty_block_interval_ms=empty_block_interval_ms,
            catching_up=lambda: False)
        real_begin = self.driver._begin_height

        def begin(height: int, replay: bool = False) -> None:
            self.started[height] = time.monotonic()
            real_begin(height, replay)

        self.driver._begin_height = begin  # type: ignore[method-assign]

    def _apply(self, block: Any, cert: Any, txs: Any) -> Any:
        self.node.executor.height = block.height
        self.committed[block.height] = time.monotonic()
        return SimpleNamespace(tx_hashes=(), receipts=(), block_id=block.id)

    def close(self) -> None:
        for t in self.driver._timers:
            t.cancel()
        self.node._pool.shutdown(wait=False)

    @property
    def height(self) -> int:
        return self.driver.machine.height

    def dispatch_queued(self) -> None:
        """Handle every input already queued (timers that fire later are not waited for)."""
        while not self.driver.inbox.empty():
            self.driver._dispatch(self.driver.inbox.get_nowait())

    async def pump_until(self, done: Any, timeout_s: float = 5.0) -> None:
        """Handle inputs as they come (timers included) until ``done()``; bounded."""
        deadline = time.monotonic() + timeout_s
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, "timed out pumping the driver's inbox"
            try:
                item = await asyncio.wait_for(self.driver.inbox.get(), left)
            except TimeoutError:
                continue
            self.driver._dispatch(item)

    def block(self, height: int) -> bytes:
        """Register a (stub) proposed block for ``height``; return its id."""
        block_id = sha256(b"block-%d" % height)
        self.driver.blocks[block_id] = SimpleNamespace(
            id=block_id, height=height, txs=(), evidence=(),
            header=SimpleNamespace(time=1_000 * height))
        self.driver.block_txs[block_id] = []
        return block_id

    def propose(self, height: int, block_id: bytes, round_: int = 0) -> None:
        p = self.driver.machine.proposer(height, round_)
        proposal = Proposal(height, round_, -1, block_id, 1_000 * height, p).signed(
            KEYS[p], CHAIN)
        self.driver._feed(ProposalReceived(proposal, True, 1_000 * height), None)

    def precommit(self, validator: int, height: int, block_id: bytes | None,
                  round_: int = 0) -> None:
        """A precommit arriving from the network, as the node's p2p handler submits it."""
        vote = Vote(VoteType.PRECOMMIT, height, round_, block_id, 1_000 * height + 1,
                    validator).signed(KEYS[validator], CHAIN)
        self.driver._dispatch(_Item("vote", vote, b"peer"))

    def decide(self, height: int, signers: range | list[int] = range(5)) -> bytes:
        """Proposal and a quorum of precommits: the machine commits ``height``."""
        assert self.height == height
        block_id = self.block(height)
        self.propose(height, block_id)
        for v in signers:
            self.precommit(v, height, block_id)
        assert self.node.executor.height == height, "the height was not committed"
        return block_id


async def test_transactions_during_timeout_commit_wait_for_it(tmp_path) -> None:
    h = Harness(tmp_path)
    try:
        h.driver._begin_height(1)
        h.decide(1)
        # transactions trickle in right after the commit, during timeout_commit_ms
        for _ in range(3):
            h.ready += 1
            h.node.driver.on_txs_added()
            h.dispatch_queued()
            assert h.height == 1, "the next height started before timeout_commit_ms"
        await h.pump_until(lambda: h.height == 2)
        waited = h.started[2] - h.committed[1]
        assert waited >= TIMEOUT_COMMIT_MS / 1000 - 0.01
        assert waited < 5.0  # and it did start when the wait ended (not the empty interval)
    finally:
        h.close()


async def test_idle_node_starts_the_next_height_when_a_transaction_arrives(tmp_path) -> None:
    h = Harness(tmp_path)  # empty-block interval 60 s: only a transaction can start it
    try:
        h.driver._begin_height(1)
        h.decide(1)
        await asyncio.sleep(TIMEOUT_COMMIT_MS / 1000 + 0.2)  # timeout_commit is over
        h.dispatch_queued()
        assert h.height == 1  # idling: nothing to propose, empty-block interval not over
        h.ready = 1
        h.driver.on_txs_added()
        h.dispatch_queued()  # no timer needed: the transaction starts it at once
        assert h.height == 2
    finally:
        h.close()
