"""Block sync: a node that is behind fetches committed blocks from its peers.

Every node announces its committed height (``status``) every second and on connect. When
a peer is ahead, the node asks for the next heights (a small window in flight, each
request timed out and re-asked from another peer). A fetched block is accepted only with
a commit certificate that verifies, for exactly that block, against the validator set of
its height (which follows governance changes: ``SyncHost.validators_at``), and then only
as the next block after the driver re-validates it; blocks that arrive out of order wait
in a bounded buffer. The set of a height is known once the block two below it is
committed, so a block further ahead waits in the buffer unverified and is checked when
its turn comes (a bad one is dropped and its sender blamed). ``catching_up`` is true while a peer is more
than one block ahead.

Wire bodies (p2p message types, canonical msgpack):
``status {"height": uint}``; ``block_request {"height": uint}`` or
``{"height": uint, "block_id": bin(32)}`` (an uncommitted proposed block);
``block_response {"height": uint, "block": bin | nil, "certificate": bin | nil}``
(``certificate`` nil for an uncommitted block; ``block`` nil when not found).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from chain.block import Block
from chain.certificate import CommitCertificate, verify_certificate
from chain.genesis import Genesis
from chain.hashing import HASH_SIZE
from chain.validators import ValidatorSet
from chain.vote import MessageError
from node.store.blockstore import BlockStore
from p2p.errors import InvalidMessage

log = logging.getLogger("node.sync")

STATUS_INTERVAL_S = 1.0
REQUEST_TIMEOUT_S = 5.0
WINDOW = 8
MAX_BUFFERED = 64


def _uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 63


class SyncHost(Protocol):
    """What block sync asks of the node: its height, its peers and its consensus."""

    @property
    def height(self) -> int:
        """The last committed height."""

    async def broadcast(self, msg_type: str, body: Any) -> None:
        """Send to every connected peer."""

    async def send(self, peer: bytes, msg_type: str, body: Any) -> bool:
        """Send to one peer; False when it is not connected or cannot keep up."""

    def proposed_block(self, block_id: bytes) -> Block | None:
        """A block proposed in the current height, for a peer that asks for it by id."""

    def submit_to_consensus(self, kind: str, item: Any, peer: bytes | None) -> None:
        """Hand a fetched block to the consensus driver's inbox (``block``/``synced``)."""

    def last_progress_at(self) -> float:
        """``time.monotonic()`` of the last commit (or of the start, before one)."""

    def validators_at(self, height: int) -> ValidatorSet:
        """The validator set that signs block ``height`` (known up to latest + 2)."""

    def report_peer(self, peer: bytes, reason: str) -> None:
        """Blame a peer that sent a forged block or certificate."""


class BlockSync:
    """Fetches committed blocks from peers for ``host``; serves its own from ``store``;
    checks certificates against the set of each height (``host.validators_at``);
    ``set_catching_up`` exports the state."""

    def __init__(self, host: SyncHost, store: BlockStore, genesis: Genesis,
                 set_catching_up: Callable[[bool], None]) -> None:
        self.host = host
        self.store = store
        self.genesis = genesis
        self._set_catching_up = set_catching_up
        self.peer_heights: dict[bytes, int] = {}
        self.inflight: dict[int, tuple[bytes, float]] = {}
        # height -> (block, certificate, peer, certificate verified yet)
        self.buffer: dict[int, tuple[Block, CommitCertificate, bytes, bool]] = {}
        self._task: asyncio.Task | None = None
        self._rr = 0

    @property
    def best_peer_height(self) -> int:
        return max(self.peer_heights.values(), default=0)

    @property
    def catching_up(self) -> bool:
        return self.best_peer_height > self.host.height + 1

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="blocksync")

    @property
    def task(self) -> asyncio.Task | None:
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _loop(self) -> None:
        while True:
            await self.host.broadcast("status", {"height": self.host.height})
            await self.request_more()
            self._set_catching_up(self.catching_up)
            await asyncio.sleep(STATUS_INTERVAL_S)

    def forget_peer(self, peer: bytes) -> None:
        self.peer_heights.pop(peer, None)
        for h, (p, _) in list(self.inflight.items()):
            if p == peer:
                del self.inflight[h]

    # ------------------------------------------------------------------ handlers

    async def on_status(self, peer: bytes, body: Any) -> None:
        height = body.get("height") if isinstance(body, dict) else None
        if not _uint(height):
            raise InvalidMessage("status needs a height")
        self.peer_heights[peer] = height
        if height > self.host.height:
            await self.request_more()

    async def on_block_request(self, peer: bytes, body: Any) -> None:
        height = body.get("height")
        if not _uint(height) or not set(body) <= {"height", "block_id"}:
            raise InvalidMessage("block_request needs a height (and optionally a block_id)")
        block_id = body.get("block_id")
        if block_id is not None:
            if not isinstance(block_id, bytes) or len(block_id) != HASH_SIZE:
                raise InvalidMessage("block_id must be 32 bytes")
            block = self.host.proposed_block(block_id)
            data = None if block is None else block.encode()
            cert = None
        else:
            data = self.store.block_bytes(height)
            cert = self.store.certificate_bytes(height) if data is not None else None
        await self.host.send(peer, "block_response",
                             {"block": data, "certificate": cert, "height": height})

    async def on_block_response(self, peer: bytes, body: Any) -> None:
        if not set(body) == {"block", "certificate", "height"} or not _uint(body["height"]):
            raise InvalidMessage("block_response needs block, certificate and height")
        height = body["height"]
        data, cert_bytes = body["block"], body["certificate"]
        if data is None:
            self.inflight.pop(height, None)
            return
        if not isinstance(data, bytes) or not (cert_bytes is None or isinstance(cert_bytes, bytes)):
            raise InvalidMessage("block and certificate must be bytes")
        if cert_bytes is None:  # an uncommitted proposed block we asked for by id
            self.host.submit_to_consensus("block", data, peer)
            return
        inflight = self.inflight.get(height)
        if inflight is None or inflight[0] != peer:
            return  # unsolicited or already answered elsewhere
        del self.inflight[height]
        try:
            block = Block.decode(data)
            cert = CommitCertificate.decode(cert_bytes)
        except MessageError as exc:
            raise InvalidMessage(f"block_response does not decode: {exc}") from None
        if block.height != height:
            raise InvalidMessage("block_response height does not match its block")
        known = height <= self.host.height + 2  # its set is final: check it now
        if known:
            why = self._certificate_error(block, cert)
            if why is not None:
                raise InvalidMessage(f"synced block {height} has a bad certificate: {why}")
        if height > self.host.height and len(self.buffer) < MAX_BUFFERED:
            self.buffer[height] = (block, cert, peer, known)
        self.drain()
        await self.request_more()

    def _certificate_error(self, block: Block, cert: CommitCertificate) -> str | None:
        """Why ``cert`` does not commit ``block`` by the set of its height (None: it does)."""
        ok, why = verify_certificate(cert, self.genesis.chain_id,
                                     self.host.validators_at(block.height), block.height,
                                     block.block_id())
        return None if ok else why

    def drain(self) -> None:
        """Hand buffered blocks to the driver in height order."""
        for h in sorted(self.buffer):
            if h <= self.host.height:
                del self.buffer[h]
        nxt = self.host.height + 1
        if nxt in self.buffer:
            block, cert, peer, verified = self.buffer.pop(nxt)
            if not verified:
                why = self._certificate_error(block, cert)
                if why is not None:
                    self.host.report_peer(peer, f"synced block {nxt} has a bad "
                                                f"certificate: {why}")
                    return
            self.host.submit_to_consensus("synced", (block, cert), peer)

    async def request_more(self) -> None:
        """Keep up to WINDOW block requests in flight to peers that have the blocks."""
        now = time.monotonic()
        for h, (_, sent) in list(self.inflight.items()):
            if now - sent > REQUEST_TIMEOUT_S or h <= self.host.height:
                del self.inflight[h]
        best = self.best_peer_height
        start = self.host.height + 1
        # A peer exactly one ahead may just be a faster committer: give consensus a moment
        # unless we have been at this height for a while.
        if best <= self.host.height or (best == start and not self._stalled()):
            return
        for h in range(start, min(best, start + WINDOW - 1) + 1):
            if h in self.inflight or h in self.buffer:
                continue
            peers = [p for p, ph in self.peer_heights.items() if ph >= h]
            if not peers:
                break
            self._rr += 1
            peer = peers[self._rr % len(peers)]
            if await self.host.send(peer, "block_request", {"height": h}):
                self.inflight[h] = (peer, now)

    def _stalled(self) -> bool:
        return time.monotonic() - self.host.last_progress_at() > 2 * STATUS_INTERVAL_S
