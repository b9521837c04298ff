"""The validator node: storage, executor, mempool, peers, consensus, sync and the API.

``Node.run`` starts the services (p2p, consensus driver, block sync, API) with every task
in one ``Supervisor`` and stops them all, in reverse order, when any task fails or a stop
is requested; the database is closed last. Each service sees the node through a narrow
interface of its own (``DriverHost`` in node/driver.py, ``SyncHost`` in node/sync.py,
``ApiNode`` and ``ChainQueries`` for the API), never this class.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiohttp import web

from chain.block import Block
from chain.certificate import CommitCertificate
from chain.crypto import PrivateKey
from chain.evidence import DuplicateVoteEvidence
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.tx import Transaction
from chain.validators import ValidatorSet
from chain.vote import MessageError, Proposal, Vote
from consensus.signer import Signer, SignerStateError
from node.api import Api
from node.config import Config, parse_hostport
from node.driver import ConsensusDriver, FatalError
from node.eventhub import EventHub
from node.evidence import EvidencePool, check_evidence, evidence_from_map, proposed_node_keys
from node.executor import Applied, Executor
from node.logs import event
from node.mempool import Mempool, MempoolConfig, TxRejected
from node.metrics import Metrics
from node.queries import ChainQueries
from node.store import leveldb_env
from node.store.blockstore import BlockStore
from node.store.kvstore import open_kv
from node.store.signer_file import FileSignerBackend, check_owner, state_file_for
from node.store.wal import WAL
from node.supervisor import Supervisor
from node.sync import BlockSync
from p2p.errors import InvalidMessage
from p2p.network import Network, NetworkConfig

log = logging.getLogger("node")


class NodeError(Exception):
    """The node cannot start or must stop; the message is for the operator."""


class Node:
    def __init__(self, config: Config, genesis: Genesis, node_key: PrivateKey,
                 validator_key: PrivateKey | None,
                 next_validator_key: PrivateKey | None = None) -> None:
        """``next_validator_key``: a second consensus key for a key rotation (config
        ``[node] next_validator_key_file``); at each height the node signs with the key
        of the two that the height's validator set holds."""
        self.config = config
        self.genesis = genesis
        self.node_key = node_key
        self.validator_key = validator_key
        self.next_validator_key = next_validator_key
        self.metrics = Metrics()
        self.events = EventHub()
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()
        self.stop_reason: str | None = None
        self._commit_waiters: dict[bytes, list[asyncio.Future]] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")
        self.supervisor = Supervisor()
        self._recent_blocks: deque[float] = deque(maxlen=2)
        self.kv = None
        self._api_runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    def open_storage(self) -> None:
        data_dir = self.config.path(self.config.node.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            sc = self.config.storage
            self.kv = open_kv(data_dir / "db", cache_bytes=sc.cache_mb << 20,
                              max_open_files=sc.max_open_files,
                              compression=None if sc.compression == "none" else sc.compression)
        except Exception as exc:  # plyvel raises IOError subclasses for a held lock
            raise NodeError(f"cannot open database {data_dir / 'db'}: {exc} "
                            "(is another node running on this home?)") from None
        self.store = BlockStore(self.kv)
        self.executor = Executor(self.genesis, self.kv, self.store, self._sig_check,
                                 known_tx=lambda h: self.mempool.get_tx(h),
                                 keep_roots=sc.state_history or None,
                                 tree_cache=sc.state_cache_groups)
        mc = self.config.mempool
        self.mempool = Mempool(
            self.genesis.chain_id,
            check=lambda tx: self.executor.app.check_tx(tx),
            next_nonce=lambda sender: self.executor.app.next_nonce(sender),
            config=MempoolConfig(max_txs=mc.max_txs, max_bytes=mc.max_bytes,
                                 max_per_sender=mc.max_per_sender),
        )
        self.evidence = EvidencePool(self.kv, self.store, self.gossip,
                                     on_new=self.metrics.evidence.inc)
        self.queries = ChainQueries(self.genesis, self.store, self.executor, self.mempool)
        self.wal = WAL.open(data_dir / "consensus.wal",
                            recovery_hint=f"mutual recover-wal --home {self.config.home}")
        if self.wal.created:
            self.wal.end_height(self.executor.height)
        self.signers = self._open_signers(data_dir)
        current = self.executor.validators
        if self.signers and not any(current.index_of(sg.public_key) is not None
                                    for sg in self.signers):
            # it may be added by governance later: it then signs from that height on
            event(log, "validator key is not in the current validator set: running as a "
                  "full node until it is added", logging.WARNING,
                  pub_key=[sg.public_key.hex() for sg in self.signers],
                  height=self.executor.height + 1)
        self.metrics.height.set(self.executor.height)

    def _open_signers(self, data_dir: Path) -> list[Signer]:
        """A double-sign-safe signer per consensus key this node holds, each over its own
        state file (``node.store.signer_file.state_file_for``)."""
        signers: list[Signer] = []
        for key, primary in ((self.validator_key, True), (self.next_validator_key, False)):
            if key is None:
                continue
            pub = key.public_key.raw
            if any(sg.public_key == pub for sg in signers):
                raise NodeError("validator_key_file and next_validator_key_file hold the "
                                "same key")
            try:
                path = state_file_for(data_dir, pub, primary)
                backend = FileSignerBackend(path)
                check_owner(backend.load(), pub, path)
                signers.append(Signer(key, backend))
            except SignerStateError as exc:
                raise NodeError(str(exc)) from None
        return signers

    def allowed_peers(self) -> set[bytes]:
        """Node keys that may connect: the validators of the sets of heights h, h+1 and h+2
        (h the latest committed; a validator without a node key uses its consensus key),
        the node keys named in open add-validator proposals (so a candidate can sync
        while it is voted on), and config ``[p2p] allowed_keys``."""
        h = self.executor.height
        keys = {bytes.fromhex(k) for k in self.config.p2p.allowed_keys}
        for height in (max(1, h), h + 1, h + 2):
            keys |= {v.node_key or v.pub_key
                     for v in self.executor.validators_at(height).validators}
        keys |= proposed_node_keys(self.executor.app)
        return keys

    def _update_allowed(self) -> None:
        """After a commit: follow the validator set; a peer that left is disconnected."""
        network = getattr(self, "network", None)
        if network is None:
            return
        keys = frozenset(self.allowed_peers())
        if keys != network.allowed:
            event(log, "peer allow-list changed", height=self.height,
                  added=sorted(k.hex()[:16] for k in keys - network.allowed),
                  removed=sorted(k.hex()[:16] for k in network.allowed - keys))
            network.set_allowed(keys)

    async def start(self) -> None:
        self.open_storage()
        p2p = self.config.p2p
        allowed = self.allowed_peers()
        self.network = Network(
            self.genesis.chain_id, self.node_key, genesis_hash=self.genesis.hash,
            listen=parse_hostport(p2p.listen, "[p2p] listen"),
            allowed=allowed,
            persistent_peers=[parse_hostport(p, "[p2p] persistent_peers")
                              for p in p2p.persistent_peers],
            config=NetworkConfig(max_frame_size=p2p.max_frame_bytes, max_peers=p2p.max_peers,
                                 queue_max_messages=p2p.send_queue),
            on_task_failure=self.supervisor.report,
        )
        self.driver = ConsensusDriver(
            self, self.signers[0] if self.signers else None, self.wal,
            empty_block_interval_ms=self.config.consensus.empty_block_interval_ms,
            catching_up=lambda: self.sync.catching_up, more_signers=self.signers[1:])
        self.sync = BlockSync(self, self.store, self.genesis,
                              lambda behind: self.metrics.catching_up.set(int(behind)))
        net = self.network
        net.on("tx", self._on_tx)
        net.on("txs", self._on_txs)
        net.on("proposal", self._on_proposal)
        net.on("vote", self._on_vote)
        net.on("evidence", self._on_evidence)
        net.on("status", self.sync.on_status)
        net.on("block_request", self.sync.on_block_request)
        net.on("block_response", self.sync.on_block_response)
        net.on_connect(self._on_connect)
        net.on_disconnect(self.sync.forget_peer)
        try:
            await net.start()
        except Exception as exc:
            raise NodeError(f"cannot start p2p on {p2p.listen}: {exc}") from None
        await self.driver.start()
        await self.sync.start()
        for task in [*self.driver.services, self.sync.task]:
            if task is not None:
                self.supervisor.watch(task, service=True)
        api = Api(self, self.queries, self.events, self.metrics, self.config.api.max_body_bytes)
        self._api_runner = web.AppRunner(api.app, access_log=None)
        await self._api_runner.setup()
        host, port = parse_hostport(self.config.api.listen, "[api] listen")
        site = web.TCPSite(self._api_runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise NodeError(f"cannot listen for the API on {host}:{port}: {exc.strerror}") \
                from None
        event(log, "node started", chain_id=self.genesis.chain_id, height=self.height,
              node_id=self.node_key.public_key.hex(), api=self.config.api.listen,
              p2p=p2p.listen, validator=self.validator_index,
              leveldb_table_reads=leveldb_env.table_reads())

    async def run(self) -> None:
        """Start, then wait until a stop is requested or a service fails."""
        try:
            try:
                await self.start()
            except Exception as exc:
                # shutdown logs "node stopped" with stop_reason: a failed start is why
                self.stop_reason = self.stop_reason or f"start failed: {exc}"
                raise
            waits = [asyncio.create_task(self._stop.wait()),
                     asyncio.create_task(self.supervisor.wait_failure())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            self.stop_reason = self.supervisor.failure
        finally:
            await self.shutdown()
        if self.stop_reason:
            raise NodeError(self.stop_reason)

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        """Stop services in reverse order of start, then close the database."""
        self.supervisor.stopping()
        if self._api_runner is not None:
            self.events.close()
            await self._api_runner.cleanup()
            self._api_runner = None
        for name in ("sync", "driver"):
            svc = getattr(self, name, None)
            if svc is not None:
                await svc.stop()
        if getattr(self, "network", None) is not None:
            await self.network.stop()
        for futs in self._commit_waiters.values():
            for f in futs:
                if not f.done():
                    f.cancel()
        await self.supervisor.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if getattr(self, "wal", None) is not None and not self.wal.closed:
            self.wal.close()
        if self.kv is not None:
            self.kv.close()
            self.kv = None
        event(log, "node stopped", reason=self.stop_reason or "requested")

    # ------------------------------------------------------------------ plumbing

    @property
    def height(self) -> int:
        return self.executor.height

    @property
    def validator_index(self) -> int | None:
        """This node's index in the set of the height consensus is on (None: not in it)."""
        driver = getattr(self, "driver", None)
        if driver is not None and driver.machine.height >= 1:
            return driver.machine.validator_index
        current = self.executor.validators
        for sg in self.signers:
            index = current.index_of(sg.public_key)
            if index is not None:
                return index
        return None

    @property
    def signer(self) -> Signer | None:
        """The signer of the current height (None: this node does not sign there)."""
        driver = getattr(self, "driver", None)
        return driver.signer if driver is not None else None

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set of ``height`` (block sync checks certificates with it)."""
        return self.executor.validators_at(height)

    def _sig_check(self, tx_hash: bytes, tx: Transaction) -> bool:
        return self.mempool.check_signature(tx)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        self.supervisor.spawn(coro, name)

    def gossip(self, msg_type: str, body: Any, exclude: bytes | None = None) -> None:
        self._spawn(self._broadcast(msg_type, body, exclude), f"gossip {msg_type}")

    async def broadcast(self, msg_type: str, body: Any) -> None:
        await self._broadcast(msg_type, body, None)

    async def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        return await self.network.send(peer, msg_type, body)

    def submit_to_consensus(self, kind: str, item: Any, peer: bytes | None) -> None:
        self.driver.submit(kind, item, peer)

    def last_progress_at(self) -> float:
        return self.driver.last_commit_at or self.started_at

    def precheck_unsigned(self, data: bytes) -> None:
        self.mempool.precheck_unsigned(data)

    async def _broadcast(self, msg_type: str, body: Any, exclude: bytes | None) -> None:
        try:
            await self.network.broadcast(msg_type, body, exclude=exclude)
        except Exception as exc:  # an oversize message is our bug; never crash gossip
            log.warning("broadcast of %s failed: %s", msg_type, exc)

    def report_peer(self, peer: bytes, reason: str) -> None:
        event(log, "peer misbehaved", logging.WARNING, peer=peer.hex()[:16], reason=reason)
        self.network.report(peer, reason)

    def request_block_by_id(self, height: int, block_id: bytes) -> None:
        self.gossip("block_request", {"height": height, "block_id": block_id})

    def proposed_block(self, block_id: bytes) -> Block | None:
        return self.driver.blocks.get(block_id)

    async def _on_connect(self, peer: bytes) -> None:
        await self.network.send(peer, "status", {"height": self.height})

    # ------------------------------------------------------------------ p2p handlers

    async def _on_tx(self, peer: bytes, body: Any) -> None:
        await self.admit_many([body], peer)

    async def _on_txs(self, peer: bytes, body: Any) -> None:
        await self.admit_many(body, peer)

    async def _on_proposal(self, peer: bytes, body: Any) -> None:
        if set(body) != {"proposal", "block"} or not isinstance(body["block"], bytes):
            raise InvalidMessage("proposal needs proposal and block")
        try:
            proposal = Proposal.from_map(body["proposal"])
        except MessageError as exc:
            raise InvalidMessage(f"bad proposal: {exc}") from None
        if proposal.height > self.height + 1:
            self.network.forget("proposal", body)  # usable once we catch up
        self.driver.submit("proposal", (proposal, body["block"]), peer)

    async def _on_vote(self, peer: bytes, body: Any) -> None:
        try:
            vote = Vote.from_map(body)
        except MessageError as exc:
            raise InvalidMessage(f"bad vote: {exc}") from None
        if vote.height > self.height + 1:
            self.network.forget("vote", body)
        self.driver.submit("vote", vote, peer)

    async def _on_evidence(self, peer: bytes, body: Any) -> None:
        try:
            ev = evidence_from_map(body)
        except MessageError as exc:
            raise InvalidMessage(f"bad evidence: {exc}") from None
        why = check_evidence(ev, self.genesis.chain_id, self.executor.height,
                             self.executor.validators_at)
        if why is not None:
            raise InvalidMessage(f"invalid evidence: {why}")
        self.add_evidence(ev, gossip=True, exclude=peer)

    # ------------------------------------------------------------------ evidence pool

    def add_evidence(self, ev: DuplicateVoteEvidence, gossip: bool,
                     exclude: bytes | None = None) -> None:
        self.evidence.add(ev, gossip, exclude)

    def pending_evidence(self, height: int) -> list[DuplicateVoteEvidence]:
        return self.evidence.pending(height)

    # ------------------------------------------------------------------ mempool entry

    async def admit_many(self, datas: list[bytes], peer: bytes | None = None
                         ) -> list[dict[str, Any]]:
        """Admit a batch: decode and verify off the event loop in one go, add in order,
        relay what was accepted as one ``txs`` message."""
        if not all(isinstance(d, bytes) for d in datas):
            raise InvalidMessage("txs must be byte strings")

        def precheck_all() -> list[Any]:
            out: list[Any] = []
            for d in datas:
                try:
                    out.append(self.mempool.precheck(d))
                except TxRejected as exc:
                    out.append(exc)
            return out

        checked = await asyncio.get_running_loop().run_in_executor(self._pool, precheck_all)
        if peer is not None and any(isinstance(item, TxRejected) and item.code in (
                "bad_signature", "bad_encoding") for item in checked):
            raise InvalidMessage("gossiped a transaction with a bad encoding or signature")
        results, accepted = [], []
        for data, item in zip(datas, checked, strict=True):
            res = item.result() if isinstance(item, TxRejected) else self.mempool.add_checked(item)
            if res.ok:
                accepted.append(data)
            else:
                self.metrics.txs_rejected.labels(res.code).inc()
            results.append(self._result(res))
        if accepted:
            self.gossip("txs", accepted, exclude=peer)
            self.driver.on_txs_added()
        return results

    @staticmethod
    def _result(res: Any) -> dict[str, Any]:
        return {"hash": res.tx_hash.hex() if res.tx_hash else None, "code": res.code,
                "reason": res.reason}

    # ------------------------------------------------------------------ commit hook

    def after_commit(self, block: Block, cert: CommitCertificate, applied: Applied,
                     seconds: float, synced: bool) -> None:
        now = time.monotonic()
        self.driver.last_commit_at = now
        if self._recent_blocks:
            self.metrics.block_interval.observe(now - self._recent_blocks[-1])
        self._recent_blocks.append(now)
        self.metrics.height.set(block.height)
        self.metrics.block_txs.observe(len(block.txs))
        self.metrics.txs_committed.inc(len(block.txs))
        self.metrics.commit_seconds.observe(seconds)
        # mutual_missed_precommits_total is counted by the driver when it moves on to the
        # next height (ConsensusDriver._count_missed_precommits), not from the certificate
        app = self.executor.app
        self.mempool.update(applied.tx_hashes, app.next_nonce, app.check_tx)
        self.evidence.committed(block)
        self._update_allowed()
        for index, (tx_hash, receipt) in enumerate(zip(applied.tx_hashes, applied.receipts,
                                                       strict=True)):
            result = {"hash": tx_hash.hex(), "height": block.height, "index": index,
                      "code": receipt.code, "reason": receipt.reason,
                      "events": [e.to_map() for e in receipt.events]}
            for fut in self._commit_waiters.pop(tx_hash, []):
                if not fut.done():
                    fut.set_result(result)
            self.events.publish({"type": "tx", "hash": tx_hash.hex(), "height": block.height,
                                 "index": index, "code": receipt.code})
        self.events.publish({"type": "block", "height": block.height,
                             "block_id": applied.block_id.hex(), "txs": len(block.txs),
                             "time": block.header.time})
        self.sync.drain()
        event(log, "committed block", height=block.height, txs=len(block.txs),
              round=cert.round, block_id=applied.block_id.hex()[:16],
              ms=round(seconds * 1000, 1), synced=synced)

    # ------------------------------------------------------------------ API facade

    async def submit_tx(self, data: bytes, mode: str) -> dict[str, Any]:
        if mode == "async":
            tx_hash = sha256(data)
            self._spawn(self.admit_many([data]), f"admit {tx_hash.hex()[:16]}")
            return {"hash": tx_hash.hex(), "code": "ok", "reason": "queued"}
        fut: asyncio.Future | None = None
        if mode == "commit":
            fut = asyncio.get_running_loop().create_future()
            self._commit_waiters.setdefault(sha256(data), []).append(fut)
        try:
            result = (await self.admit_many([data]))[0]
            if fut is None or result["code"] != "ok":
                return result
            try:
                return await asyncio.wait_for(fut, self.config.api.commit_timeout_s)
            except TimeoutError:
                return {**result, "code": "timeout",
                        "reason": "not committed within the commit timeout (it may still be)"}
        finally:
            if fut is not None:
                # answered, refused, timed out, or the caller went away (the API gives up
                # waiters when the node stops): nobody waits on this future any more
                self._drop_waiter(sha256(data), fut)

    def _drop_waiter(self, tx_hash: bytes, fut: asyncio.Future) -> None:
        futs = self._commit_waiters.get(tx_hash, [])
        if fut in futs:
            futs.remove(fut)
        if not futs:
            self._commit_waiters.pop(tx_hash, None)

    def status(self) -> dict[str, Any]:
        tip = self.store.tip()
        return {
            "chain_id": self.genesis.chain_id,
            "node_id": self.node_key.public_key.hex(),
            "moniker": self.config.node.moniker,
            "height": self.height,
            "latest_block_id": tip.block_id.hex() if tip and tip.block_id else None,
            "latest_block_time": tip.time if tip else None,
            "state_root": self.executor.state_root.hex(),
            "catching_up": self.sync.catching_up,
            "peers": [p.hex() for p in self.network.peers()],
            "validator_index": self.validator_index,
            "consensus": {"height": self.driver.machine.height,
                          "round": self.driver.machine.round,
                          "step": int(self.driver.machine.step)},
            "mempool_txs": self.mempool.size(),
            "genesis_hash": self.genesis.hash.hex(),
        }

    def health(self) -> tuple[bool, str]:
        if self.stop_reason:
            return False, self.stop_reason
        if self.driver.task is not None and self.driver.task.done():
            return False, "consensus stopped"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Whether this node is worth sending traffic to: alive (``health``), connected to
        a peer when there is more than one validator, not catching up, and committing
        blocks (one at least every ``stall_after_s``; blocks come even when idle, every
        empty_block_interval_ms). ``/healthz`` stays the liveness check."""
        ok, why = self.health()
        if not ok:
            return ok, why
        if self.sync.catching_up:
            return False, "catching up with peers"
        if len(self.executor.validators) > 1 and not self.network.peers():
            return False, "no peer connected"
        stall = self.stall_after_s()
        last = self.driver.last_commit_at or self.started_at
        idle = time.monotonic() - last
        if idle > stall:
            what = "no block committed yet" if self.height == 0 else "no block committed"
            return False, f"{what} for {idle:.0f} s (more than {stall:.0f} s)"
        return True, "ok"

    def stall_after_s(self) -> float:
        """How long without a commit makes the node not ready: ten empty-block intervals,
        and at least 10 s."""
        return max(10.0, 10 * self.config.consensus.empty_block_interval_ms / 1000)

    def refresh_metrics(self) -> None:
        self.metrics.mempool_size.set(self.mempool.size())
        self.metrics.mempool_bytes.set(self.mempool.bytes())
        self.metrics.peers.set(len(self.network.peers()))
        self.metrics.catching_up.set(1 if self.sync.catching_up else 0)


__all__ = ["Node", "NodeError", "FatalError"]
