"""How the replay is compared with what a source claims: the first differing field of two
records, a state key in readable form, the flat state and the tree records of a database."""

from __future__ import annotations

from typing import Any

import msgpack

from audit.report import ABSENT, AuditFailure
from chain.hashing import sha256
from chain.tx import to_jsonable
from contracts.kv import KV
from contracts.tree import node_record_ok

# ---- comparing records ----------------------------------------------------------------

def decode_or_bytes(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # undecodable bytes are compared as bytes
        return data


def first_difference(want: Any, got: Any, path: str = "") -> tuple[str, Any, Any]:
    """The first field (dotted path) where two decoded records differ; a field that only
    one side has is ``ABSENT`` on the other."""
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(set(want) | set(got), key=str):
            if want.get(k, ABSENT) != got.get(k, ABSENT):
                return first_difference(want.get(k, ABSENT), got.get(k, ABSENT),
                                         f"{path}.{k}" if path else k)
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            if a != b:
                return first_difference(a, b, f"{path}[{i}]")
    return (path or "(value)", want if want is ABSENT else to_jsonable(want),
            got if got is ABSENT else to_jsonable(got))


def key_name(key: bytes) -> str:
    """A state key in readable form: ``period/3``, ``member/<hex>``, ``vote/7/<hex>``."""
    prefix, sep, rest = key.partition(b"/")
    if not sep:
        return key.decode("ascii", "replace")
    name = prefix.decode("ascii", "replace")
    if name in ("member", "role", "acct", "ident"):
        return f"{name}/{rest.hex()}"
    if name in ("obj", "vote", "panel") and len(rest) == 40:
        return f"{name}/{int.from_bytes(rest[:8], 'big')}/{rest[8:].hex()}"
    if name == "arrq" and len(rest) == 16:
        return f"{name}/{int.from_bytes(rest[:8], 'big')}/{int.from_bytes(rest[8:], 'big')}"
    if len(rest) == 8:
        return f"{name}/{int.from_bytes(rest, 'big')}"
    return f"{name}/{rest.hex()}"


def compare_served(height: int, what: str, want: Any, got: Any) -> None:
    if want != got:
        name, ev, fv = first_difference(want, got)
        raise AuditFailure(height, f"{what} differs from the replay", field=name,
                           expected=ev, found=fv)


def compare_flat(height: int, replay: KV, stored: KV) -> None:
    """The flat copy of the latest state (what a node answers queries from) must hold
    exactly the replayed keys and values."""
    mine = replay.iterate(b"v")
    theirs = stored.iterate(b"v")
    a = next(mine, None)
    b = next(theirs, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            raise AuditFailure(height, f"state key {key_name(a[0][1:])} is missing from the "
                                       "database", field=key_name(a[0][1:]),
                               expected=to_jsonable(decode_or_bytes(a[1])), found=ABSENT)
        if a is None or b[0] < a[0]:
            raise AuditFailure(height, f"the database holds state key {key_name(b[0][1:])} "
                                       "that the replay does not", field=key_name(b[0][1:]),
                               expected=ABSENT, found=to_jsonable(decode_or_bytes(b[1])))
        if a[1] != b[1]:
            name, ev, fv = first_difference(decode_or_bytes(a[1]), decode_or_bytes(b[1]))
            key = key_name(a[0][1:])
            what = f"state value of {key} in the database differs from the replay"
            if key.startswith("vset/"):
                what += (f" (the validator set from height {key[5:]}: a forged validator "
                         "change)")
            raise AuditFailure(height, what, field=f"{key}.{name}", expected=ev, found=fv)
        a = next(mine, None)
        b = next(theirs, None)


def check_nodes(height: int, stored: KV, replay: KV) -> None:
    """Every stored tree record must hash to its address (records are content-addressed):
    a leaf's value must match its value hash, a group's binary nodes must hash to each
    other and to its address (``contracts.tree.node_record_ok``, docs/state.md §3)."""
    for k, rec in stored.iterate(b"n"):
        # the address is the key's last 32 bytes (anything between "n" and it only
        # clusters records by position, see docs/state.md)
        addr = k[-32:]
        if not node_record_ok(addr, rec):
            name = f"node {addr.hex()}"
            if rec[:1] == b"\x00" and len(rec) >= 65:
                kh = rec[1:33]
                for key, _ in replay.iterate(b"v"):
                    if sha256(key[1:]) == kh:
                        name = f"leaf of {key_name(key[1:])}"
                        break
            raise AuditFailure(height, f"stored state {name} does not match its hash (the "
                                       "database was altered or is damaged)",
                               field=f"state/{k[:1].decode()}{k[1:].hex()}")
