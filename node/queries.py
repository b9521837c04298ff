"""What the API reads from a node's committed chain: blocks, transactions, certificates,
records with their proofs, accounts, shares and the validator set.

Every answer comes from the block store and the executor's committed state (or a view of
an older root), never from consensus in progress; the API sees only this object, not the
node process.
"""

from __future__ import annotations

from typing import Any

from chain import encoding
from chain.certificate import CommitCertificate
from chain.genesis import Genesis
from chain.tx import Transaction, to_jsonable
from node.executor import Executor
from node.mempool import Mempool
from node.store.blockstore import BlockStore


class ChainQueries:
    """The read side of one node: committed blocks and state, and pending transactions."""

    def __init__(self, genesis: Genesis, store: BlockStore, executor: Executor,
                 mempool: Mempool) -> None:
        self.genesis = genesis
        self.store = store
        self.executor = executor
        self.mempool = mempool

    @property
    def height(self) -> int:
        return self.executor.height

    def validators_json(self) -> dict[str, Any]:
        vs = self.genesis.validators
        return {"validators": [{"index": i, "name": v.name, "pub_key": v.pub_key.hex(),
                                "power": v.power} for i, v in enumerate(vs.validators)],
                "total_power": vs.total_power, "hash": vs.hash().hex()}

    def account(self, pub: bytes) -> dict[str, Any]:
        return self.executor.app.get_account(pub)

    def tx(self, tx_hash: bytes) -> dict[str, Any] | None:
        rec = self.store.tx(tx_hash)
        if rec is None:
            if self.mempool.has(tx_hash):
                return {"hash": tx_hash.hex(), "pending": True}
            return None
        tx = Transaction.decode(rec.tx)
        return {"hash": tx_hash.hex(), "height": rec.height, "index": rec.index,
                "tx": tx.to_json(), "receipt": to_jsonable(encoding.decode(rec.receipt))}

    def block_bytes(self, height: int) -> bytes | None:
        return self.store.block_bytes(height)

    def certificate(self, height: int) -> CommitCertificate | None:
        return self.store.certificate(height)

    def block_json(self, height: int) -> dict[str, Any] | None:
        block = self.store.block(height)
        if block is None:
            return None
        receipts = self.store.receipts(height)
        txs = []
        for i, data in enumerate(block.txs):
            tx = Transaction.decode(data).to_json()
            if i < len(receipts):
                r = encoding.decode(receipts[i])
                tx["code"], tx["reason"] = r.get("code"), r.get("reason")
            txs.append(tx)
        cert = self.store.certificate(height)
        return {
            "block_id": block.block_id().hex(),
            "header": to_jsonable(block.header.to_map()),
            "txs": txs,
            "evidence": [to_jsonable(e.to_map()) for e in block.evidence],
            "last_commit": None if block.last_commit is None
            else to_jsonable(block.last_commit.to_map()),
            "certificate": None if cert is None else to_jsonable(cert.to_map()),
        }

    def record(self, kind: str, ident: str, proof: bool) -> dict[str, Any] | None:
        """A member, claim or period record; with ``proof``, bundled with a Merkle proof
        against the state root in the latest committed header and that header's
        certificate."""
        if not proof:
            return self._lookup(self.executor.app, kind, ident)
        height = self.height
        block = self.store.block(height) if height else None
        cert = self.store.certificate(height) if height else None
        if block is None or cert is None:
            return None
        app, tree = self.executor.view_at(block.header.state_root)
        record = self._lookup(app, kind, ident)
        key = self._key(app, kind, ident)
        if key is None:
            return None
        value = tree.get(key)
        return {
            "record": record, "key": key.hex(), "value": None if value is None else value.hex(),
            "proof": tree.prove(key).encode().hex(),
            "state_root": block.header.state_root.hex(), "height": height,
            "header": block.header.encode().hex(), "certificate": cert.encode().hex(),
        }

    @staticmethod
    def _lookup(app: Any, kind: str, ident: str) -> dict[str, Any] | None:
        if kind == "member":
            return app.get_member(ident)
        if kind == "claim":
            return app.get_claim(ident)
        if kind == "period":
            return app.get_period(int(ident)) if ident.isdigit() else None
        raise ValueError(f"unknown record kind {kind}")

    @staticmethod
    def _key(app: Any, kind: str, ident: str) -> bytes | None:
        try:
            if kind == "member":
                return app.member_key(ident)
            if kind == "claim":
                return app.claim_key(int(ident))
            return app.period_key(int(ident))
        except (ValueError, TypeError):
            return None

    def member_share(self, member_id: str, period: int) -> dict[str, Any] | None:
        return self.executor.app.member_share(member_id, period)
