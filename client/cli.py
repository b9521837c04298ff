"""The clients' subcommands of ``mutual``: status, tx, query.

A member's app, a registrar or an assessor signs and submits a transaction, or reads a
record (with its proof), from a node's HTTP API (docs/api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from client.cliutil import EXIT_FAIL, CliError, add_node_args, json_fields, print_json


def _client(args: argparse.Namespace) -> Any:
    from client import Client

    return Client(args.node, timeout=args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    print_json(_client(args).status())
    return 0


def cmd_tx(args: argparse.Namespace) -> int:
    from chain.keyfile import read_key
    from client import Account
    from client.txjson import body_from_json

    body = json_fields(args.body, "--body", args.field, "field {item!r}: expected name=value")
    try:
        typed = body_from_json(args.type, body)
    except ValueError as exc:
        raise CliError(f"{args.type}: {exc}") from None
    client = _client(args)
    key = read_key(args.key)
    chain_id = args.chain_id or client.status()["chain_id"]
    account = Account(key, chain_id, client)
    result = account.send(args.type, typed, mode=args.mode)
    print_json(result)
    return 0 if result.get("code") == "ok" else EXIT_FAIL


def cmd_query(args: argparse.Namespace) -> int:
    client = _client(args)
    kind, ident = args.kind, args.id
    if kind == "member":
        doc = client.member(ident, proof=args.proof)
    elif kind == "claim":
        doc = client.claim(ident, proof=args.proof)
    elif kind == "period":
        doc = client.period(int(ident), proof=args.proof)
    elif kind == "block":
        doc = client.block(ident)
    elif kind == "tx":
        doc = client.tx(ident)
    elif kind == "account":
        doc = client.account(ident)
    else:  # pragma: no cover - argparse restricts choices
        raise CliError(f"unknown query {kind}")
    print_json(doc)
    return 0


def read_identity_keys(path: str) -> dict[int, bytes]:
    """A registrar's identity-key file: a JSON object ``{"<key id>": "<hex key>"}``, each
    key at least 32 bytes (docs/privacy.md). It is a plan secret: keep it 0600."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CliError(f"cannot read identity keys {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"identity keys {path} are not JSON: {exc}") from None
    if not isinstance(doc, dict) or not doc:
        raise CliError(f"identity keys {path} must be a JSON object of key id -> hex key")
    keys: dict[int, bytes] = {}
    for k, v in doc.items():
        try:
            kid, key = int(k), bytes.fromhex(v)
        except (TypeError, ValueError):
            raise CliError(f"identity keys {path}: entry {k!r} is not id -> hex key") from None
        if len(key) < 32:
            raise CliError(f"identity keys {path}: key {k} is shorter than 32 bytes")
        keys[kid] = key
    return keys


def cmd_identity_tags(args: argparse.Namespace) -> int:
    from contracts.identity import IdentityError, canonical_resident_id, identity_tags

    keys = read_identity_keys(args.keys)
    try:
        key_ids = [int(x) for x in args.key_ids.split(",")]
    except ValueError:
        raise CliError("--key-ids must be comma-separated integers (the chain's "
                       "identity_key_ids, in order)") from None
    # read from stdin, not argv: an identity number on a command line lands in shell
    # history and in every process listing
    text = sys.stdin.readline()
    try:
        tags = identity_tags(keys, key_ids, canonical_resident_id(text))
    except IdentityError as exc:
        raise CliError(str(exc)) from None
    print(json.dumps([[k, t.hex()] for k, t in tags]))
    return 0


def register(sub: Any) -> None:
    """Add status, tx and query to the ``mutual`` parser's subcommands."""
    s = sub.add_parser("status", help="a node's status")
    add_node_args(s)
    s.set_defaults(func=cmd_status)

    t = sub.add_parser("tx", help="build, sign, submit a transaction and show the receipt")
    t.add_argument("type", help="transaction type (docs/transactions.md)")
    t.add_argument("field", nargs="*", help="body fields as name=value (JSON values allowed)")
    t.add_argument("--key", required=True, help="the sender's key file")
    t.add_argument("--body", help="the whole body as a JSON object")
    t.add_argument("--mode", default="commit", choices=["async", "sync", "commit"])
    t.add_argument("--chain-id", help="default: asked from the node")
    add_node_args(t)
    t.set_defaults(func=cmd_tx)

    i = sub.add_parser("identity-tags", help="a registrar's identity tags for a resident ID "
                       "read from stdin (register_member's identity_tags, docs/privacy.md)")
    i.add_argument("--keys", required=True,
                   help="identity-key file: JSON {\"<key id>\": \"<hex key>\"}, kept 0600")
    i.add_argument("--key-ids", required=True,
                   help="the chain's identity_key_ids, comma-separated, in order")
    i.set_defaults(func=cmd_identity_tags)

    q = sub.add_parser("query", help="read a record, block, transaction or account")
    q.add_argument("kind", choices=["member", "claim", "period", "block", "tx", "account"])
    q.add_argument("id")
    q.add_argument("--proof", action="store_true")
    add_node_args(q)
    q.set_defaults(func=cmd_query)
