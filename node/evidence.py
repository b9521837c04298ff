"""The evidence pool: equivocations seen by this node, waiting to be put on chain.

Evidence (two signed votes of one validator for one step) is kept durably (a restart
keeps it), at most ``MAX_PENDING_EVIDENCE`` items; a proposer takes up to
``EVIDENCE_PER_BLOCK`` of those older than the block it builds, and committed items leave
the pool in the commit's own write.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from chain import encoding
from chain.block import Block
from chain.evidence import DuplicateVoteEvidence
from chain.vote import MessageError
from contracts.kv import KV
from node.logs import event
from node.store.blockstore import PREFIXES, BlockStore

log = logging.getLogger("node")

MAX_PENDING_EVIDENCE = 100
EVIDENCE_PER_BLOCK = 10

Gossip = Callable[[str, Any, bytes | None], None]


class EvidencePool:
    """Pending evidence over the ``evidence`` key space of the node's database."""

    def __init__(self, kv: KV, store: BlockStore, gossip: Gossip,
                 on_new: Callable[[], None] = lambda: None) -> None:
        self.kv = kv
        self._pool_kv = kv.prefixed(PREFIXES["evidence"])
        self.store = store
        self._gossip = gossip
        self._on_new = on_new
        self.items: dict[bytes, DuplicateVoteEvidence] = {}
        for _, raw in self._pool_kv.iterate():
            with contextlib.suppress(MessageError, encoding.EncodingError):
                ev = DuplicateVoteEvidence.from_map(encoding.decode(raw))
                self.items[ev.hash()] = ev

    def add(self, ev: DuplicateVoteEvidence, gossip: bool, exclude: bytes | None = None) -> None:
        """Keep verified evidence (durably) unless it is known, on chain, or the pool is
        full; relay it when ``gossip``."""
        h = ev.hash()
        if h in self.items or self.store.evidence_height(h) is not None:
            return
        if len(self.items) >= MAX_PENDING_EVIDENCE:
            return
        self.items[h] = ev
        batch = self._pool_kv.batch()
        batch.put(h, ev.encode())
        self.kv.write(batch, sync=True)
        self._on_new()
        event(log, "equivocation evidence", logging.WARNING, height=ev.height,
              validator=ev.validator, hash=h.hex())
        if gossip:
            self._gossip("evidence", ev.to_map(), exclude)

    def pending(self, height: int) -> list[DuplicateVoteEvidence]:
        """What a proposer of ``height`` puts in its block."""
        return [ev for ev in self.items.values() if ev.height < height][:EVIDENCE_PER_BLOCK]

    def committed(self, block: Block) -> None:
        """Forget the evidence ``block`` put on chain."""
        if not block.evidence:
            return
        batch = self._pool_kv.batch()
        for ev in block.evidence:
            h = ev.hash()
            self.items.pop(h, None)
            batch.delete(h)
        self.kv.write(batch, sync=False)
