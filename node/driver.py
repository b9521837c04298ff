"""The consensus driver: runs the sans-I/O ``ConsensusMachine`` inside the node.

One task consumes a bounded inbox (peer messages, timer firings, synced blocks), feeds the
machine and executes its actions in order, so the machine, the executor and the stores
are only ever touched by one coroutine at a time.

Crash safety: the signer persists before releasing any signature, and every own proposal
or vote is appended to the WAL with fsync before it is sent. Every received proposal and
vote of the current height is appended too (no fsync), so after a restart the driver
replays the WAL into a fresh machine and carries on at the same height and round with
the same tallies; the signer returns the stored signature for identical bytes and
refuses anything else, so a restarted validator never signs two values for one step.

The driver sees the node through ``DriverHost``, the few things it uses, and carries out
the machine's actions as a ``consensus.events.ActionHandler``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from chain import encoding
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.evidence import DuplicateVoteEvidence
from chain.tx import Transaction
from chain.validators import ValidatorSet
from chain.vote import MessageError, Proposal, Vote
from consensus.events import (
    MISBEHAVIOUR,
    Action,
    BlockValidated,
    BroadcastProposal,
    BroadcastVote,
    Commit,
    EmitEvidence,
    ProposalReceived,
    Rejected,
    RequestBlock,
    RequestValue,
    ScheduleTimeout,
    SignerRefused,
    TimeoutFired,
    ValueReady,
    VoteReceived,
    execute,
)
from consensus.machine import ConsensusMachine, TimeoutConfig
from consensus.signer import PersistError, Signer
from contracts.kv import KVError
from node.executor import BlockInvalid
from node.logs import event
from node.store.blockstore import BlockStoreError
from node.store.wal import WAL, WALError

if TYPE_CHECKING:  # pragma: no cover
    from chain.genesis import Genesis
    from node.executor import Applied, Executor
    from node.mempool import Mempool
    from node.metrics import Metrics

log = logging.getLogger("node.consensus")

INBOX_SIZE = 10_000
REBROADCAST_S = 1.5
MAX_PENDING_BLOCKS = 64
# next-height proposals and votes held while the next height has another validator set
MAX_HELD = 1000


def now_ms() -> int:
    return int(time.time() * 1000)


class FatalError(Exception):
    """The driver cannot go on safely (e.g. the signer cannot persist); the node stops."""


def _diverged(height: int, how: str, exc: BlockInvalid) -> FatalError:
    """A committed block that this node finds invalid: its state is not the chain's (a
    damaged database, or execution that differs from the other validators'). Going on
    would only stall it at this height, or worse; the operator must resync it."""
    return FatalError(f"block {height}, {how}, is invalid on this node ({exc}): its state "
                      "has diverged from the chain; stop it and rebuild its database from "
                      "its peers (README: lost or damaged database)")


class DriverHost(Protocol):
    """What the driver needs from the node around it (``node.node.Node`` is one).

    Kept to what the driver really uses, so a test can stand one up from stubs and the
    driver cannot grow into the rest of the node unnoticed. Only ``genesis`` is read at
    construction; everything else is looked up on the host at each use (tests swap them).
    """

    genesis: Genesis
    """The chain's genesis: chain id, validator set and consensus parameters."""
    executor: Executor
    """Validates, builds headers for and applies blocks; its height is the last stored."""
    mempool: Mempool
    """Transactions waiting: whether any are ready, and a batch to propose."""
    metrics: Metrics
    """Where the round gauge and the missed-precommit counters go."""

    def gossip(self, msg_type: str, body: Any, exclude: bytes | None = None) -> None:
        """Send a message to every peer (but ``exclude``) without waiting."""

    def request_block_by_id(self, height: int, block_id: bytes) -> None:
        """Ask the peers for a block a quorum voted for that this node lacks."""

    def add_evidence(self, ev: DuplicateVoteEvidence, gossip: bool) -> None:
        """Keep double-sign evidence for a future block, gossiping it if ``gossip``."""

    def pending_evidence(self, height: int) -> list[DuplicateVoteEvidence]:
        """Evidence to put in the block this node proposes at ``height``."""

    def after_commit(self, block: Block, cert: CommitCertificate, applied: Applied,
                     seconds: float, synced: bool) -> None:
        """Tell the rest of the node a block is stored (metrics, mempool, subscribers)."""

    def report_peer(self, peer: bytes, reason: str) -> None:
        """Blame a peer that sent a malformed or forged message."""


@dataclass
class _Item:
    kind: str  # proposal | vote | timeout | block | synced | start | evidence | call
    payload: Any
    peer: bytes | None = None


class ConsensusDriver:
    """Feeds the node's inputs to the consensus machine and carries out its actions."""

    def __init__(self, host: DriverHost, signer: Signer | None, wal: WAL, *,
                 empty_block_interval_ms: int, catching_up: Callable[[], bool],
                 more_signers: Sequence[Signer] = ()) -> None:
        """``empty_block_interval_ms`` (a config setting) and ``catching_up`` (is block
        sync behind a peer?) are the two pieces of the node the driver needs beyond
        ``DriverHost``. ``signer`` and ``more_signers`` are every consensus key this node
        holds (its key, and the next one after a rotation); at each height the driver
        signs with the one in that height's validator set, or with none (an observer)."""
        self.host = host
        self.empty_block_interval_ms = empty_block_interval_ms
        self.catching_up = catching_up
        self.genesis = host.genesis
        self.chain_id = host.genesis.chain_id
        self.signers: list[Signer] = [s for s in (signer, *more_signers) if s is not None]
        # the signer of the current height (None: not in its set); set by _begin_height
        self.signer: Signer | None = None
        self.wal = wal
        self.machine = ConsensusMachine(self.chain_id, None,
                                        TimeoutConfig.from_params(self.genesis.consensus))
        self.inbox: asyncio.Queue[_Item] = asyncio.Queue(INBOX_SIZE)
        # blocks proposed at the current or next height, by id, with their decoded txs
        self.blocks: dict[bytes, Block] = {}
        self.block_txs: dict[bytes, list[Transaction]] = {}
        self.own_messages: list[tuple[str, Any]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._task: asyncio.Task | None = None
        self._rebroadcast: asyncio.Task | None = None
        self._replaying = False
        # the peer whose input is being handled (None: own or timer), for ``rejected``
        self._peer: bytes | None = None
        self.last_commit_at: float | None = None
        self._waiting_next_height = False
        # timeout_commit_ms has passed since this height's commit: the node idles in the
        # empty-block wait, and a new transaction may start the next height at once
        self._commit_wait_over = False
        self._next_height_seen = False
        self._start_poked = False
        # the height this node decided itself (Commit from its own machine): its precommit
        # bookkeeping is complete enough to count missed precommits when it moves on
        self._decided_height: int | None = None
        # next-height messages waiting for the next height's validator set
        self._held: list[_Item] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        height = self.host.executor.height + 1
        self._begin_height(height, replay=True)
        self._task = asyncio.create_task(self._run(), name="consensus")
        self._rebroadcast = asyncio.create_task(self._rebroadcast_loop(), name="rebroadcast")

    async def stop(self) -> None:
        for task in (self._rebroadcast, self._task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for t in self._timers:
            t.cancel()
        self._timers.clear()

    @property
    def task(self) -> asyncio.Task | None:
        return self._task

    @property
    def services(self) -> list[asyncio.Task]:
        """The driver's long-lived tasks (consensus, rebroadcast), once started: each must
        run as long as the node does."""
        return [t for t in (self._task, self._rebroadcast) if t is not None]

    def _begin_height(self, height: int, replay: bool = False) -> None:
        """Start consensus on ``height``; on the first start replay the WAL first."""
        for t in self._timers:
            t.cancel()
        self._timers.clear()
        self._count_missed_precommits()
        self._waiting_next_height = False
        self._commit_wait_over = False
        self._next_height_seen = False
        self._start_poked = False
        self.own_messages = []
        self.blocks = {k: b for k, b in self.blocks.items() if b.height >= height}
        self.block_txs = {k: v for k, v in self.block_txs.items() if k in self.blocks}
        validators = self.host.executor.validators_at(height)
        self._use_signer(height, validators)
        actions = self.machine.start_height(height, validators, now_ms())
        records = self.wal.replay(height) if replay else []
        self._execute(actions, None)
        if records:
            self._replaying = True
            try:
                for rec in records:
                    self._replay_record(rec)
            finally:
                self._replaying = False
            event(log, "replayed consensus WAL", height=height, records=len(records),
                  round=self.machine.round)
        # messages held for this height's new set (_hold_for_next_set) go in now
        held, self._held = self._held, []
        for item in held:
            msg = item.payload[0] if item.kind == "proposal" else item.payload
            if msg.height == height:
                self._dispatch(item)
        # blocks that arrived early for this height can be judged now
        for block_id, block in list(self.blocks.items()):
            if block.height == height and block_id not in self.block_txs:
                self._judge(block_id, block, None)
        self.host.metrics.round.set(self.machine.round)

    def signer_for(self, validators: ValidatorSet) -> Signer | None:
        """The key of this node that ``validators`` holds (None: not a validator there)."""
        for s in self.signers:
            if validators.index_of(s.public_key) is not None:
                return s
        return None

    def _use_signer(self, height: int, validators: ValidatorSet) -> None:
        """Sign ``height`` with the key its set holds: a key added to the set starts
        signing at its first height, a removed or rotated-away one signs nothing more
        (each key keeps its own double-sign state file)."""
        signer = self.signer_for(validators)
        if signer is not self.signer:
            event(log, "consensus key for height", height=height,
                  pub_key=None if signer is None else signer.public_key.hex(),
                  previous=None if self.signer is None else self.signer.public_key.hex())
        self.signer = signer
        if self.machine.signer is signer:
            return
        use = getattr(self.machine, "use_signer", None)
        if use is not None:
            # height - 1 is over: decided by this machine, or committed from block sync
            use(signer, committed=height - 1)
        else:
            self.machine.signer = signer

    def _replay_record(self, data: bytes) -> None:
        try:
            rec = encoding.decode(data, max_size=16 * 1024 * 1024)
            kind = rec["k"]
            if kind in ("p", "own_p"):
                self._on_proposal(Proposal.from_map(rec["proposal"]), rec["block"], None)
            elif kind in ("v", "own_v"):
                self._feed(VoteReceived(Vote.from_map(rec["vote"])), None)
        except (encoding.EncodingError, KeyError, TypeError, MessageError) as exc:
            raise FatalError(f"WAL record does not decode ({exc}); run mutual recover-wal") \
                from None

    # ------------------------------------------------------------------ inputs

    def submit(self, kind: str, payload: Any, peer: bytes | None = None) -> bool:
        """Queue an input; False if the inbox is full (the message is dropped)."""
        try:
            self.inbox.put_nowait(_Item(kind, payload, peer))
            return True
        except asyncio.QueueFull:
            return False

    async def _run(self) -> None:
        while True:
            item = await self.inbox.get()
            try:
                self._dispatch(item)
            except FatalError:
                raise
            except PersistError as exc:
                raise FatalError(f"signer cannot persist its state: {exc}") from exc
            except KVError as exc:
                # e.g. a full disk: the block was decided but not saved, and nothing may go
                # on from state that is not on disk; the consensus WAL holds the decision,
                # so a restart (with the cause fixed) commits it again
                raise FatalError(f"the database failed: {exc}") from exc
            except BlockStoreError as exc:
                # the store refused a decided block or cannot read its own records: a
                # damaged database or a diverged state; either way this node cannot go on
                raise FatalError(f"the block store failed: {exc}") from exc
            except WALError as exc:
                # own messages are not sent unless logged first: without a WAL this node
                # cannot take part, and every later input would fail the same way
                raise FatalError(f"the consensus WAL failed: {exc}") from exc
            except Exception:  # a bug in one input must not stop consensus
                log.exception("error handling consensus input %s", item.kind)

    def _dispatch(self, item: _Item) -> None:
        if item.kind in ("proposal", "vote") and self._hold_for_next_set(item):
            return
        if item.kind == "proposal":
            proposal, block_bytes = item.payload
            self._on_proposal(proposal, block_bytes, item.peer)
        elif item.kind == "vote":
            vote = item.payload
            if vote.height == self.machine.height + 1:
                self._next_height_seen = True
            self._wal_input({"k": "v", "vote": vote.to_map()}, vote.height)
            self._feed(VoteReceived(vote), item.peer, relay=("vote", vote.to_map()))
        elif item.kind == "timeout":
            self._feed(item.payload, None)
        elif item.kind == "block":  # a block fetched for a RequestBlock
            self._on_fetched_block(item.payload, item.peer)
        elif item.kind == "synced":
            block, cert = item.payload
            self._on_synced(block, cert, item.peer)
        elif item.kind in ("next_height", "commit_wait_over"):
            if item.payload == self.machine.height and self._waiting_next_height:
                if item.kind == "commit_wait_over":
                    self._commit_wait_over = True
                if not self._commit_wait_over:
                    return  # never before timeout_commit_ms; its timer comes back here
                if self._ready_for_next_height():
                    self._begin_height(item.payload + 1)
                else:
                    self._recheck_later(item.payload)
        elif item.kind == "call":
            item.payload()

    def _hold_for_next_set(self, item: _Item) -> bool:
        """Keep a next-height proposal or vote here when the next height has another
        validator set: the machine checks next-height messages against the current set,
        which would refuse (and blame the sender for) a new validator's or a rotated key's
        honest message. Held messages (at most MAX_HELD) are handed over once the next
        height starts with its own set."""
        msg = item.payload[0] if item.kind == "proposal" else item.payload
        height = getattr(msg, "height", None)
        if height != self.machine.height + 1 or self.machine.validators is None:
            return False
        try:
            next_set = self.host.executor.validators_at(height)
        except ValueError:
            return False
        if next_set is self.machine.validators:
            return False
        self._next_height_seen = True
        if len(self._held) < MAX_HELD:
            self._held.append(item)
        return True

    def on_txs_added(self) -> None:
        """New transactions wait: a node idling in the empty-block wait (timeout_commit_ms
        already over, nothing to propose) starts the next height now. During the
        timeout_commit_ms wait itself nothing happens: the transactions are included when
        it ends."""
        if self._waiting_next_height and self._commit_wait_over and not self._start_poked:
            self._start_poked = True
            self.submit("next_height", self.machine.height)

    def _ready_for_next_height(self) -> bool:
        """Once timeout_commit_ms is over: start the next height at once when there is
        work; with none, wait up to the empty-block interval (blocks still come, so block
        time keeps moving)."""
        if self.host.mempool.ready_count() > 0 or self.catching_up():
            return True
        if self._next_height_seen:
            return True  # a peer already proposes or votes there
        last = self.last_commit_at or 0.0
        return time.monotonic() - last >= self.empty_block_interval_ms / 1000

    def _recheck_later(self, height: int) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(0.05, lambda: self.submit("next_height", height))
        self._timers.add(handle)

    def _wal_input(self, record: dict[str, Any], height: int) -> None:
        """Log an input of the current height before it is handled (no fsync needed:
        losing it only loses a message peers re-send)."""
        if height == self.machine.height and not self._replaying:
            self.wal.append(encoding.encode(record), sync=False)

    def _on_proposal(self, proposal: Proposal, block_bytes: bytes, peer: bytes | None) -> None:
        try:
            block = Block.decode(block_bytes)
        except MessageError as exc:
            self._misbehaved(peer, f"proposal block does not decode: {exc}")
            return
        if block.block_id() != proposal.block_id:
            self._misbehaved(peer, "proposal names another block id")
            return
        if proposal.height < self.machine.height:
            return  # stale
        if proposal.height > self.machine.height + 1:
            return  # too far ahead; block sync will bring us there
        if len(self.blocks) >= MAX_PENDING_BLOCKS and proposal.block_id not in self.blocks:
            return
        self.blocks[proposal.block_id] = block
        if proposal.height == self.machine.height:
            self._wal_input({"k": "p", "proposal": proposal.to_map(), "block": block_bytes},
                            proposal.height)
            valid, block_time = self._judge_block(proposal.block_id, block)
            self._feed(ProposalReceived(proposal, valid, block_time), peer,
                       relay=("proposal", {"proposal": proposal.to_map(),
                                           "block": block_bytes}))
        else:
            self._next_height_seen = True
            self._feed(ProposalReceived(proposal), peer)

    def _judge_block(self, block_id: bytes, block: Block) -> tuple[bool, int]:
        if block_id in self.block_txs:
            return True, block.header.time
        try:
            self.block_txs[block_id] = self.host.executor.validate(block)
            return True, block.header.time
        except BlockInvalid as exc:
            event(log, "invalid block proposed", logging.WARNING, height=block.height,
                  block_id=block_id.hex(), reason=str(exc))
            return False, block.header.time

    def _judge(self, block_id: bytes, block: Block, peer: bytes | None) -> None:
        valid, block_time = self._judge_block(block_id, block)
        self._feed(BlockValidated(block.height, block_id, valid, block_time), peer)

    def _on_fetched_block(self, block_bytes: bytes, peer: bytes | None) -> None:
        try:
            block = Block.decode(block_bytes)
        except MessageError:
            self._misbehaved(peer, "fetched block does not decode")
            return
        block_id = block.block_id()
        if block.height != self.machine.height or block_id in self.block_txs:
            return
        self.blocks[block_id] = block
        self._judge(block_id, block, peer)

    def _on_synced(self, block: Block, cert: CommitCertificate, peer: bytes | None) -> None:
        """A committed block from block sync (its certificate already verified)."""
        executor = self.host.executor
        if block.height != executor.height + 1:
            return
        try:
            txs = executor.validate(block)
        except BlockInvalid as exc:
            # its certificate verified: +2/3 of the validators committed exactly this
            # block, so the fault is this node's state, not the peer that sent it
            raise _diverged(block.height, "certified by +2/3 of the voting power",
                            exc) from exc
        self._commit(block, cert, txs, synced=True)
        self._begin_height(block.height + 1)

    def _feed(self, ev: Any, peer: bytes | None, relay: tuple[str, Any] | None = None) -> None:
        actions = self.machine.handle(ev, now_ms())
        rejected = self._execute(actions, peer)
        if relay is not None and not rejected and not self._replaying:
            self.host.gossip(relay[0], relay[1], exclude=peer)

    # ------------------------------------------------------------------ actions

    def _execute(self, actions: list[Action], peer: bytes | None) -> bool:
        """Carry out actions in order (``consensus.events.execute``, with this driver as the
        handler); return True if the input from ``peer`` was rejected."""
        outer, self._peer = self._peer, peer  # request_value executes actions of its own
        try:
            rejected = execute(actions, self)
        finally:
            self._peer = outer
        self.host.metrics.round.set(self.machine.round)
        return rejected

    def broadcast_vote(self, a: BroadcastVote) -> None:
        """Log the own vote (fsynced), then gossip it."""
        vote_map = a.vote.to_map()
        self._send_own("vote", vote_map, {"k": "own_v", "vote": vote_map})

    def broadcast_proposal(self, a: BroadcastProposal) -> None:
        """Log the own proposal with its block (fsynced), then gossip both."""
        block = self.blocks.get(a.proposal.block_id)
        if block is None:
            log.error("no block for own proposal %s", a.proposal.block_id.hex())
            return
        body = {"proposal": a.proposal.to_map(), "block": block.encode()}
        self._send_own("proposal", body, {"k": "own_p", **body})

    def request_block(self, a: RequestBlock) -> None:
        """Ask the peers for the block (not while replaying the WAL: it is a live input)."""
        if not self._replaying:
            self.host.request_block_by_id(a.height, a.block_id)

    def emit_evidence(self, a: EmitEvidence) -> None:
        """Keep the evidence for a block; gossip it unless replaying the WAL."""
        self.host.add_evidence(a.evidence, gossip=not self._replaying)

    def rejected(self, a: Rejected) -> None:
        """Blame the sending peer for misbehaviour; benign rejections pass quietly."""
        if a.kind in MISBEHAVIOUR:
            self._misbehaved(self._peer, f"{a.kind}: {a.reason}")

    def signer_refused(self, a: SignerRefused) -> None:
        """Nothing was signed or sent: say so loudly."""
        event(log, "signer refused", logging.WARNING, height=a.height, round=a.round,
              step=int(a.step), reason=a.reason)

    def _send_own(self, msg_type: str, body: Any, record: dict[str, Any]) -> None:
        if not self._replaying:
            # fsynced before it leaves: a restart replays it and never signs anew
            self.wal.append(encoding.encode(record), sync=True)
        self.own_messages.append((msg_type, body))
        self.host.gossip(msg_type, body)

    def schedule_timeout(self, a: ScheduleTimeout) -> None:
        """A loop timer that queues ``TimeoutFired``; a new height cancels it."""
        loop = asyncio.get_running_loop()
        ev = TimeoutFired(a.height, a.round, a.step)
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._timers.discard(handle)  # type: ignore[arg-type]
            self.submit("timeout", ev)

        handle = loop.call_later(a.duration_ms / 1000, fire)
        self._timers.add(handle)

    def request_value(self, a: RequestValue) -> None:
        """Build and check a block from the mempool, then answer with ``ValueReady``."""
        executor = self.host.executor
        if a.height != executor.height + 1:
            return
        limits = self.genesis.consensus
        last_commit = (executor.store.certificate(a.height - 1) if a.height > 1 else None)
        if a.height > 1 and last_commit is None:
            log.error("cannot propose: no certificate stored for height %d", a.height - 1)
            return
        txs = self.host.mempool.reap(limits["max_block_txs"], limits["max_block_bytes"])
        evidence = self.host.pending_evidence(a.height)
        index = self.machine.validator_index or 0
        header = executor.header_for(txs, evidence, last_commit, index)
        block = Block(header, tuple(txs), tuple(evidence), last_commit)
        block_id = block.block_id()
        try:
            self.block_txs[block_id] = executor.validate(block)
        except BlockInvalid as exc:
            # a tx that became invalid between reap and now: propose an empty block instead
            event(log, "own block invalid; proposing without transactions", logging.WARNING,
                  reason=str(exc))
            header = executor.header_for([], [], last_commit, index)
            block = Block(header, (), (), last_commit)
            block_id = block.block_id()
            self.block_txs[block_id] = []
        self.blocks[block_id] = block
        self._execute(self.machine.handle(
            ValueReady(a.height, a.round, block_id, header.time), now_ms()), None)

    def commit(self, a: Commit) -> None:
        """Store and apply the decided block, then wait timeout_commit_ms for the next."""
        block = self.blocks.get(a.block_id)
        if block is None:
            raise FatalError(f"decided block {a.block_id.hex()} at height {a.height} is unknown")
        if a.height <= self.host.executor.height:
            return  # already stored (block sync won the race)
        txs = self.block_txs.get(a.block_id)
        if txs is None:
            try:
                txs = self.host.executor.validate(block)
            except BlockInvalid as exc:
                raise _diverged(a.height, "decided by +2/3 of the voting power", exc) from exc
        self._commit(block, a.certificate, txs)
        self._decided_height = a.height
        self._waiting_next_height = True
        self._commit_wait_over = False
        # Precommits still arriving during this wait are counted by the machine (it stays
        # at this height), so _count_missed_precommits sees them when the node moves on.
        delay = self.genesis.consensus["timeout_commit_ms"] / 1000
        loop = asyncio.get_running_loop()
        height = a.height

        def wait_over() -> None:
            if not self.submit("commit_wait_over", height):  # inbox full: try again soon
                self._timers.add(loop.call_later(0.05, wait_over))

        self._timers.add(loop.call_later(delay, wait_over))

    def _count_missed_precommits(self) -> None:
        """The node leaves a height it decided itself: count, in
        ``mutual_missed_precommits_total``, every validator of which the machine holds no
        precommit at that height (any round, for any block or nil). Precommits that came
        in after the commit, during timeout_commit_ms, count as received; heights this node
        took from block sync (it did not follow their voting) are not counted."""
        height, self._decided_height = self._decided_height, None
        votes = self.machine.votes
        if height is None or votes is None or votes.height != height:
            return
        missed = []
        for i, v in enumerate(votes.validators.validators):
            if not any((rv := votes.precommits(r)) is not None and rv.get(i) is not None
                       for r in votes.rounds_of(i)):
                missed.append(v.name or str(i))
        self.host.metrics.count_missed_precommits(missed)

    def _commit(self, block: Block, cert: CommitCertificate, txs: list[Transaction],
                synced: bool = False) -> None:
        started = time.perf_counter()
        applied = self.host.executor.apply(block, cert, txs)
        self.wal.end_height(block.height)
        if self.wal.size > 4 * 1024 * 1024:
            self.wal.rotate()
        self.host.after_commit(block, cert, applied, time.perf_counter() - started, synced)

    def _misbehaved(self, peer: bytes | None, reason: str) -> None:
        if peer is not None and not self._replaying:
            self.host.report_peer(peer, reason)

    # ------------------------------------------------------------------ rebroadcast

    async def _rebroadcast_loop(self) -> None:
        """Re-send this node's messages of the current height now and then, so a peer that
        restarted or was partitioned gets them again (peers drop ones they have seen)."""
        while True:
            await asyncio.sleep(REBROADCAST_S)
            for msg_type, body in list(self.own_messages)[-4:]:
                self.host.gossip(msg_type, body)
            proposal = self.machine.proposal(self.machine.round)
            if proposal is not None and proposal.block_id in self.blocks:
                self.host.gossip("proposal", {
                    "proposal": proposal.to_map(),
                    "block": self.blocks[proposal.block_id].encode()})
