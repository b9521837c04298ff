"""The evidence pool: equivocations seen by this node, waiting to be put on chain.

Evidence (two signed votes of one validator for one step) is kept durably (a restart
keeps it), at most ``MAX_PENDING_EVIDENCE`` items; a proposer takes up to
``EVIDENCE_PER_BLOCK`` of those older than the block it builds, and committed items leave
the pool in the commit's own write.

Evidence from a peer is checked (``check_evidence``) against the validator set of the
height it is about, not the current one: a validator that has since left the set, or
rotated its key, is still answerable for what it signed while it was in it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from chain import encoding
from chain.block import Block
from chain.evidence import DuplicateVoteEvidence
from chain.validators import ValidatorSet
from chain.vote import MessageError
from contracts.kv import KV
from node.logs import event
from node.store.blockstore import PREFIXES, BlockStore

log = logging.getLogger("node")

MAX_PENDING_EVIDENCE = 100
EVIDENCE_PER_BLOCK = 10
# the pool takes no evidence about a height this far below the latest block (a policy of
# this node's pool, not a rule of block validity)
MAX_EVIDENCE_AGE = 100_000
# open proposals read per call of the rules' list_proposals (it serves at most 500)
PROPOSAL_PAGE = 500

try:  # every kind of evidence (helper B's second kind), once chain/ has it
    from chain.evidence import evidence_from_map  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - until then, the one kind
    evidence_from_map = DuplicateVoteEvidence.from_map


def check_evidence(ev: Any, chain_id: str, latest_height: int,
                   validators_at: Callable[[int], ValidatorSet]) -> str | None:
    """Why evidence from a peer is refused (None: it is valid). It must be about a height
    this node knows the set of and that is not too old: 1 .. latest + 1 (the height being
    voted on), at most ``MAX_EVIDENCE_AGE`` below the latest; its signatures are checked
    against the set of that height."""
    height = ev.height
    if height < 1:
        return f"evidence height {height} is not a block height"
    if height > latest_height + 1:
        return (f"evidence for height {height} is in the future (latest block "
                f"{latest_height})")
    if height < latest_height - MAX_EVIDENCE_AGE:
        return (f"evidence for height {height} is too old (more than {MAX_EVIDENCE_AGE} "
                f"below the latest block {latest_height})")
    ok, why = ev.verify(chain_id, validators_at(height))
    return None if ok else why


def proposed_node_keys(app: Any) -> set[bytes]:
    """Node keys named in open add-validator proposals, from ``app.list_proposals`` when
    the application has it (an empty set otherwise). A proposal names them as bytes or
    hex under ``node_key`` in the proposal, its ``change`` or its ``validator``."""
    lister = getattr(app, "list_proposals", None)
    if lister is None:
        return set()
    keys: set[bytes] = set()
    after = 0
    for _ in range(100):  # bounded: at most 100 pages
        try:
            page = lister("open", after, PROPOSAL_PAGE)
        except (TypeError, ValueError, KeyError):
            return keys
        items = page.get("proposals", []) if isinstance(page, dict) else page
        if not items:
            break
        for p in items:
            if isinstance(p, dict):
                key = _node_key_of(p)
                if key is not None:
                    keys.add(key)
        last = items[-1]
        after = last.get("id") if isinstance(last, dict) else None
        if not isinstance(after, int) or len(items) < PROPOSAL_PAGE:
            break
    return keys


def _node_key_of(proposal: dict[str, Any]) -> bytes | None:
    if "add" not in str(proposal.get("kind", "")):
        return None
    for where in (proposal, proposal.get("change"), proposal.get("validator")):
        if not isinstance(where, dict):
            continue
        for inner in (where, where.get("validator")):
            if not isinstance(inner, dict):
                continue
            key = inner.get("node_key")
            if isinstance(key, str):
                try:
                    key = bytes.fromhex(key)
                except ValueError:
                    key = None
            if isinstance(key, bytes) and len(key) == 32:
                return key
    return None

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
                ev = evidence_from_map(encoding.decode(raw))
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
