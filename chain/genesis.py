"""The genesis document: the chain's identity, its validators and its rule parameters.

Genesis is a JSON object (see docs/genesis.md):

    {"format": 2, "chain_id": str, "genesis_time": RFC 3339 text,
     "validators": [{"name": str, "pub_key": hex, "power": int, "node_key": hex?,
                     "operator_account": hex?}],
     "registrars": [hex], "assessors": [hex], "operator": hex,
     "consensus": {...timeouts and block limits...}, "params": {...rule parameters...}}

Numbers are integers only (no floats anywhere). The genesis hash is sha256 of the
canonical encoding of the whole object, so every node and auditor agrees on it byte for
byte. Rule parameters are validated by ``contracts.params``; consensus parameters here.

``format`` is the genesis format version. Version 2 (identity tags keyed by registrar
keys, no credit score: docs/privacy.md) is the only one accepted; a document without it
is format 1 and is refused with a line saying how to regenerate it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from chain import encoding
from chain.crypto import CryptoError, PublicKey, check_chain_id
from chain.hashing import sha256
from chain.validators import Validator, ValidatorSet, ValidatorSetError

DEFAULT_CONSENSUS = {
    "timeout_propose_ms": 1000,
    "timeout_prevote_ms": 500,
    "timeout_precommit_ms": 500,
    "timeout_delta_ms": 250,
    "timeout_commit_ms": 200,
    "max_block_txs": 2000,
    "max_block_bytes": 2 * 1024 * 1024,
}


_VALIDATOR_FIELDS = frozenset({"name", "pub_key", "power", "node_key", "operator_account"})


#: the only genesis format this build accepts (docs/genesis.md, "Format versions")
GENESIS_FORMAT = 2


class GenesisError(ValueError):
    """The genesis document is malformed."""


def parse_time_ms(text: str) -> int:
    """RFC 3339 text (with a zone) to integer milliseconds since the Unix epoch."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError) as exc:
        raise GenesisError(f"invalid time {text!r}: {exc}") from exc
    if dt.tzinfo is None:
        raise GenesisError(f"time {text!r} has no time zone")
    return int(dt.timestamp() * 1000)


def _key(value: Any, what: str) -> bytes:
    try:
        return PublicKey.from_hex(value).raw
    except (CryptoError, AttributeError) as exc:
        raise GenesisError(f"{what}: invalid public key {value!r}") from exc


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: ValidatorSet
    registrars: tuple[bytes, ...]
    assessors: tuple[bytes, ...]
    operator: bytes
    consensus: dict[str, int]
    params: dict[str, Any]
    doc: dict[str, Any] = field(repr=False)
    hash: bytes = field(repr=False)

    @classmethod
    def from_doc(cls, doc: Any) -> Genesis:
        if not isinstance(doc, dict):
            raise GenesisError("genesis must be a JSON object")
        if doc.get("format") != GENESIS_FORMAT:
            got = doc.get("format", 1)
            raise GenesisError(
                f"genesis format {got!r} is not supported: this build reads format "
                f"{GENESIS_FORMAT} (keyed identity tags, no credit score); regenerate it "
                "with `mutual genesis new`")
        required = {"format", "chain_id", "genesis_time", "validators", "registrars",
                    "assessors", "operator", "params"}
        missing = required - set(doc)
        if missing:
            raise GenesisError(f"genesis is missing {sorted(missing)}")
        unknown = set(doc) - required - {"consensus"}
        if unknown:
            raise GenesisError(f"genesis has unknown fields {sorted(unknown)}")
        try:
            chain_id = check_chain_id(doc["chain_id"])
        except CryptoError as exc:
            raise GenesisError(str(exc)) from exc
        if not isinstance(doc["genesis_time"], str):
            raise GenesisError("genesis_time must be RFC 3339 text")
        time_ms = parse_time_ms(doc["genesis_time"])
        vals_doc = doc["validators"]
        if not isinstance(vals_doc, list) or not vals_doc:
            raise GenesisError("validators must be a non-empty list")
        vals = []
        for i, v in enumerate(vals_doc):
            if not isinstance(v, dict) or not {"pub_key", "power"} <= set(v):
                raise GenesisError(f"validator {i} needs pub_key and power")
            unknown_v = set(v) - _VALIDATOR_FIELDS
            if unknown_v:
                raise GenesisError(f"validator {i} has unknown fields {sorted(unknown_v)}")
            node_key = _key(v["node_key"], f"validator {i} node_key") if v.get(
                "node_key") else None
            operator_account = _key(v["operator_account"], f"validator {i} operator_account"
                                    ) if v.get("operator_account") else None
            try:
                vals.append(Validator(_key(v["pub_key"], f"validator {i}"), v["power"],
                                      str(v.get("name", f"validator-{i}")), node_key,
                                      operator_account))
            except ValidatorSetError as exc:
                raise GenesisError(f"validator {i}: {exc}") from exc
        try:
            vset = ValidatorSet(vals)
        except ValidatorSetError as exc:
            raise GenesisError(str(exc)) from exc
        for name in ("registrars", "assessors"):
            if not isinstance(doc[name], list):
                raise GenesisError(f"{name} must be a list of public keys")
        registrars = tuple(_key(k, "registrar") for k in doc["registrars"])
        assessors = tuple(_key(k, "assessor") for k in doc["assessors"])
        operator = _key(doc["operator"], "operator")
        consensus = dict(DEFAULT_CONSENSUS)
        given = doc.get("consensus", {})
        if not isinstance(given, dict):
            raise GenesisError("consensus must be an object")
        for k, v in given.items():
            if k not in DEFAULT_CONSENSUS:
                raise GenesisError(f"unknown consensus parameter {k!r}")
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise GenesisError(f"consensus parameter {k} must be a positive integer")
            consensus[k] = v
        if not isinstance(doc["params"], dict):
            raise GenesisError("params must be an object")
        try:
            digest = sha256(encoding.encode(doc))
        except encoding.EncodingError as exc:
            raise GenesisError(f"genesis is not canonically encodable: {exc}") from exc
        return cls(chain_id, time_ms, vset, registrars, assessors, operator, consensus,
                   dict(doc["params"]), doc, digest)

    @classmethod
    def load(cls, path: str | Path) -> Genesis:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise GenesisError(f"cannot read genesis {path}: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenesisError(f"genesis {path} is not valid JSON: {exc}") from exc
        return cls.from_doc(doc)

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.doc, indent=2, sort_keys=True) + "\n")
