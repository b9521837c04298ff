"""Turn a JSON transaction body (as typed on the command line) into the msgpack body.

JSON has no byte strings, so ``bin32`` fields are given as 64 hex characters; the schema
of each type comes from ``contracts.txtypes`` and the result is checked against it. An
optional field (``assess_claim``'s ``accident``) is converted the same way when given and
left out of the body when not.
"""

from __future__ import annotations

from typing import Any

from contracts.errors import RuleError
from contracts.txtypes import TX_TYPES, check_body


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
        body[name] = value
    try:
        check_body(tx_type, body)
    except RuleError as exc:
        raise ValueError(exc.reason) from None
    return body


def fields_help(tx_type: str) -> str:
    t = TX_TYPES.get(tx_type)
    if t is None:
        return ""
    return ", ".join([f"{k}:{v}" for k, v in t.fields.items()]
                     + [f"[{k}:{v}]" for k, v in t.optional.items()])
