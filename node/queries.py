"""What the API reads from a node's committed chain: blocks, transactions, certificates,
records with their proofs, accounts, shares, the validator set of any known height and
its changes, governance proposals and the parameter history.

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
from chain.validators import ValidatorSet
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

    @staticmethod
    def _validators_list(vs: ValidatorSet) -> list[dict[str, Any]]:
        return [{"index": i, "name": v.name, "pub_key": v.pub_key.hex(), "power": v.power,
                 "node_key": None if v.node_key is None else v.node_key.hex(),
                 "operator": None if v.operator is None else v.operator.hex()}
                for i, v in enumerate(vs.validators)]

    def validators_json(self, height: int | None = None) -> dict[str, Any] | None:
        """The set that signs block ``height`` (default: the next height), or None when
        the height is below 1 or beyond latest + 2 (not known yet)."""
        latest = self.executor.height
        if height is None:
            height = latest + 1
        if not 1 <= height <= latest + 2:
            return None
        vs = self.executor.validators_at(height)
        nxt = (self.executor.validators_at(height + 1).hash().hex()
               if height + 1 <= latest + 2 else None)
        return {"height": height, "hash": vs.hash().hex(), "next_hash": nxt,
                "total_power": vs.total_power, "validators": self._validators_list(vs)}

    def validator_changes(self, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """Every height E > max(1, ``after``) at which the set changed, ascending, at most
        ``limit``: the new set, the reasons recorded with it, and the header and
        certificate of block E-1 (null until committed) that a light client checks the
        change with (docs/governance.md). ``next_from``: pass it as ``after`` for the next
        page (null on the last)."""
        heights = [e for e in self.executor.validator_set_heights() if e > max(1, after)]
        page, more = heights[:limit], len(heights) > limit
        changes = []
        for e in page:
            rec = self.executor.validator_record(e)
            vs = self.executor.validators_at(e)
            block = self.store.block(e - 1)
            cert = self.store.certificate_bytes(e - 1) if block is not None else None
            changes.append({
                "height": e, "hash": vs.hash().hex(),
                "validators": self._validators_list(vs),
                "reasons": to_jsonable(rec["changes"] if rec is not None else []),
                "header": None if block is None else block.header.encode().hex(),
                "certificate": None if cert is None else cert.hex(),
            })
        return {"changes": changes, "next_from": page[-1] if more else None}

    def governance(self, method: str, *args: Any) -> Any:
        """Call the application's governance query ``method`` on committed state, with
        bytes turned to hex; ``NotImplementedError`` when the rules lack it."""
        fn = getattr(self.executor.app, method, None)
        if fn is None:
            raise NotImplementedError(method)
        return to_jsonable(fn(*args))

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

    def state_proofs(self, keys: Any) -> list[dict[str, Any]] | None:
        """Proof bundles (as ``record`` makes, without ``record``) of the raw state keys
        ``keys(state)`` chooses, all against the latest committed header (None before
        block 1): how a light client proves the parameter history (docs/governance.md,
        "What the auditor checks")."""
        height = self.height
        block = self.store.block(height) if height else None
        cert = self.store.certificate(height) if height else None
        if block is None or cert is None:
            return None
        _, tree = self.executor.view_at(block.header.state_root)
        head = {"state_root": block.header.state_root.hex(), "height": height,
                "header": block.header.encode().hex(), "certificate": cert.encode().hex()}
        out = []
        for key in keys(tree):
            value = tree.get(key)
            out.append({"key": key.hex(), "value": None if value is None else value.hex(),
                        "proof": tree.prove(key).encode().hex(), **head})
        return out

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
