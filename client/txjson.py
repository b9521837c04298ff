"""Turn a JSON transaction body (as typed on the command line) into the msgpack body.

JSON has no byte strings, so ``bin32`` fields are given as 64 hex characters (and a
``tags`` field as ``[[key_id, "<64 hex>"], ...]``, or text holding that array); the schema
of each type comes from ``contracts.txtypes`` and the result is checked against it. An
optional field (``assess_claim``'s ``accident``) is converted the same way when given and
left out of the body when not. A ``map`` field (``propose``'s ``params``) is a JSON
object, or text holding one (as typed on a command line). ``propose`` takes the fields of
its ``kind`` (``kind_fields_help``; docs/transactions.md).
"""

from __future__ import annotations

import json
from typing import Any

from contracts.errors import RuleError
from contracts.txtypes import GOV_KIND_FIELDS, GOV_KIND_OPTIONAL, TX_TYPES, check_body


def body_from_json(tx_type: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Convert and validate; raise ``ValueError`` with a readable reason."""
    t = TX_TYPES.get(tx_type)
    if t is None:
        raise ValueError(f"unknown transaction type (known: {', '.join(sorted(TX_TYPES))})")
    body: dict[str, Any] = {}
    for name, value in doc.items():
        kind = t.all_fields.get(name)
        if kind == "bin32" and isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ValueError(f"field {name!r} must be 64 hex characters") from None
        elif kind == "bool" and isinstance(value, str) and value in ("true", "false"):
            value = value == "true"
        elif kind == "tags":
            value = _tags_from_json(name, value)
        elif kind == "map" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError(f"field {name!r} must be a JSON object") from None
        body[name] = value
    try:
        check_body(tx_type, body)
    except RuleError as exc:
        raise ValueError(exc.reason) from None
    return body


def _tags_from_json(name: str, value: Any) -> Any:
    """``[[key_id, "<64 hex>"], ...]`` (or text holding it) to ``[[key_id, bytes], ...]``;
    anything else is left for the schema check to refuse."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"field {name!r} must be a JSON array of [key_id, hex tag]"
                             ) from None
    if not isinstance(value, list):
        return value
    out = []
    for pair in value:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
            try:
                pair = [pair[0], bytes.fromhex(pair[1])]
            except ValueError:
                raise ValueError(f"field {name!r}: a tag must be 64 hex characters") from None
        out.append(pair)
    return out


def fields_help(tx_type: str) -> str:
    t = TX_TYPES.get(tx_type)
    if t is None:
        return ""
    return ", ".join([f"{k}:{v}" for k, v in t.fields.items()]
                     + [f"[{k}:{v}]" for k, v in t.optional.items()])


def kind_fields_help() -> dict[str, str]:
    """For each ``propose`` kind, the fields it takes (optional ones in brackets)."""
    kinds = TX_TYPES["propose"].all_fields
    return {kind: ", ".join([f"{f}:{kinds[f]}" for f in need]
                            + [f"[{f}:{kinds[f]}]" for f in GOV_KIND_OPTIONAL.get(kind, ())])
            for kind, need in GOV_KIND_FIELDS.items()}
