"""Blocks and block headers.

Header (canonical map; the block id is sha256 of its encoding):

    {"chain_id": str, "evidence_hash": bin(32), "height": uint,
     "last_block_id": bin(32) | nil, "last_commit_hash": bin(32) | nil,
     "next_validators_hash": bin(32), "proposer": uint (validator index),
     "state_root": bin(32), "time": uint (ms, UTC), "txs_hash": bin(32),
     "validators_hash": bin(32)}

``validators_hash`` is the hash of the set that signs this block's certificate;
``next_validators_hash`` the hash of the set of the next height. A change committed in
block H takes effect at H+2, so both are known when the block is built and a light client
follows the set from one certified header to the next (docs/governance.md).

``state_root`` is the application state root after executing every block *before* this
one (block 1 carries the genesis state root). ``last_commit_hash`` is the hash of the
commit certificate of block ``height - 1``, which the block carries in full, so each block
proves the finality of its parent. ``time`` is the weighted median of that certificate's
timestamps (genesis time for block 1).

Block: ``{"evidence": [evidence map], "header": header map, "last_commit": cert map | nil,
"txs": [bin]}`` with each tx the signed canonical transaction bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chain import encoding
from chain.certificate import CommitCertificate
from chain.evidence import Evidence, evidence_from_map
from chain.hashing import HASH_SIZE, merkle_root, sha256
from chain.vote import MessageError

MAX_BLOCK_SIZE = 4 * 1024 * 1024
_HEADER_KEYS = frozenset({
    "chain_id", "evidence_hash", "height", "last_block_id", "last_commit_hash",
    "next_validators_hash", "proposer", "state_root", "time", "txs_hash", "validators_hash",
})


def _hash_field(name: str, value: Any, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MessageError(f"header field {name} must be 32 bytes")


@dataclass(frozen=True)
class BlockHeader:
    chain_id: str
    height: int
    time: int
    last_block_id: bytes | None
    last_commit_hash: bytes | None
    txs_hash: bytes
    evidence_hash: bytes
    state_root: bytes
    validators_hash: bytes
    proposer: int
    next_validators_hash: bytes

    def __post_init__(self) -> None:
        for name in ("height", "time", "proposer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MessageError(f"header field {name} must be a non-negative integer")
        if self.height < 1:
            raise MessageError("height starts at 1")
        _hash_field("last_block_id", self.last_block_id, nullable=True)
        _hash_field("last_commit_hash", self.last_commit_hash, nullable=True)
        for name in ("txs_hash", "evidence_hash", "state_root", "validators_hash",
                     "next_validators_hash"):
            _hash_field(name, getattr(self, name))
        if (self.height == 1) != (self.last_block_id is None):
            raise MessageError("only block 1 has no last_block_id")
        if (self.height == 1) != (self.last_commit_hash is None):
            raise MessageError("only block 1 has no last_commit_hash")

    def to_map(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "evidence_hash": self.evidence_hash,
            "height": self.height,
            "last_block_id": self.last_block_id,
            "last_commit_hash": self.last_commit_hash,
            "next_validators_hash": self.next_validators_hash,
            "proposer": self.proposer,
            "state_root": self.state_root,
            "time": self.time,
            "txs_hash": self.txs_hash,
            "validators_hash": self.validators_hash,
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    def block_id(self) -> bytes:
        return sha256(self.encode())

    @classmethod
    def from_map(cls, m: Any) -> BlockHeader:
        if not isinstance(m, dict) or set(m) != _HEADER_KEYS:
            raise MessageError(f"header must be a map with fields {sorted(_HEADER_KEYS)}")
        if not isinstance(m["chain_id"], str):
            raise MessageError("chain_id must be text")
        return cls(m["chain_id"], m["height"], m["time"], m["last_block_id"],
                   m["last_commit_hash"], m["txs_hash"], m["evidence_hash"], m["state_root"],
                   m["validators_hash"], m["proposer"], m["next_validators_hash"])


def txs_hash(txs: list[bytes]) -> bytes:
    """Merkle root of the transaction ids (sha256 of each signed transaction)."""
    return merkle_root([sha256(tx) for tx in txs])


def evidence_hash(evidence: list[Evidence]) -> bytes:
    return merkle_root([ev.hash() for ev in evidence])


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[bytes, ...]
    evidence: tuple[Evidence, ...]
    last_commit: CommitCertificate | None

    @property
    def height(self) -> int:
        return self.header.height

    def block_id(self) -> bytes:
        return self.header.block_id()

    def to_map(self) -> dict[str, Any]:
        return {
            "evidence": [ev.to_map() for ev in self.evidence],
            "header": self.header.to_map(),
            "last_commit": None if self.last_commit is None else self.last_commit.to_map(),
            "txs": list(self.txs),
        }

    def encode(self) -> bytes:
        return encoding.encode(self.to_map())

    @classmethod
    def from_map(cls, m: Any) -> Block:
        if not isinstance(m, dict) or set(m) != {"evidence", "header", "last_commit", "txs"}:
            raise MessageError("block must be a map with evidence, header, last_commit, txs")
        if not isinstance(m["txs"], list) or not all(isinstance(t, bytes) for t in m["txs"]):
            raise MessageError("block txs must be a list of byte strings")
        if not isinstance(m["evidence"], list):
            raise MessageError("block evidence must be a list")
        header = BlockHeader.from_map(m["header"])
        last_commit = (None if m["last_commit"] is None
                       else CommitCertificate.from_map(m["last_commit"]))
        evidence = tuple(evidence_from_map(e) for e in m["evidence"])
        return cls(header, tuple(m["txs"]), evidence, last_commit)

    @classmethod
    def decode(cls, data: bytes, max_size: int = MAX_BLOCK_SIZE) -> Block:
        try:
            return cls.from_map(encoding.decode(data, max_size=max_size))
        except encoding.EncodingError as exc:
            raise MessageError(str(exc)) from exc

    def check_structure(self) -> None:
        """Check that the header commits to this block's contents; raise if not."""
        if self.header.txs_hash != txs_hash(list(self.txs)):
            raise MessageError("txs_hash does not match the transactions")
        if self.header.evidence_hash != evidence_hash(list(self.evidence)):
            raise MessageError("evidence_hash does not match the evidence")
        if self.header.height == 1:
            if self.last_commit is not None:
                raise MessageError("block 1 carries no last_commit")
        else:
            if self.last_commit is None:
                raise MessageError("block carries no certificate of its parent")
            if self.header.last_commit_hash != self.last_commit.hash():
                raise MessageError("last_commit_hash does not match the certificate")
            if self.last_commit.height != self.header.height - 1:
                raise MessageError("last_commit is not for the parent height")
            if self.last_commit.block_id != self.header.last_block_id:
                raise MessageError("last_commit is not for last_block_id")
