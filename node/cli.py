"""The ``mutual`` command line: keys, genesis, init, start, transactions, queries, audit.

Every error is one readable line on stderr and a non-zero exit code (2 for usage and
input errors, 1 for a failed check or an unreachable node); never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXIT_FAIL = 1
EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _print(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


# --- keys -------------------------------------------------------------------------------

def cmd_keys_new(args: argparse.Namespace) -> int:
    from chain.crypto import PrivateKey
    from node.keys import write_key

    key = PrivateKey.generate()
    write_key(args.out, key, overwrite=args.force)
    _print({"pub_key": key.public_key.hex(), "file": str(args.out)})
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from node.keys import read_key

    _print({"pub_key": read_key(args.file).public_key.hex()})
    return 0


# --- genesis ----------------------------------------------------------------------------

def _pub_from(value: str, what: str) -> str:
    """A public key given as 64 hex characters or as a key file path."""
    from chain.crypto import CryptoError, PublicKey
    from node.keys import read_key

    if len(value) == 64:
        try:
            return PublicKey.from_hex(value).hex()
        except CryptoError:
            pass
    if Path(value).exists():
        return read_key(value).public_key.hex()
    raise CliError(f"{what}: {value!r} is neither 64 hex characters nor a key file")


def cmd_genesis_new(args: argparse.Namespace) -> int:
    from chain.genesis import Genesis
    from contracts.params import profile

    validators = []
    for i, spec in enumerate(args.validator or []):
        # NAME=PUBKEY[,power=N][,node_key=HEX|FILE]
        name, sep, rest = spec.partition("=")
        if not sep:
            raise CliError(f"--validator {spec!r}: expected NAME=PUBKEY[,power=N][,node_key=K]")
        parts = rest.split(",")
        entry: dict[str, Any] = {"name": name, "pub_key": _pub_from(parts[0], f"validator {i}"),
                                 "power": 10}
        for opt in parts[1:]:
            k, _, v = opt.partition("=")
            if k == "power":
                if not v.isdigit() or int(v) < 1:
                    raise CliError(f"--validator {spec!r}: power must be a positive integer, "
                                   f"not {v!r}")
                entry["power"] = int(v)
            elif k == "node_key":
                entry["node_key"] = _pub_from(v, f"validator {i} node_key")
            else:
                raise CliError(f"--validator {spec!r}: unknown option {opt!r}")
        validators.append(entry)
    if not validators:
        raise CliError("at least one --validator is required")
    try:
        params = profile(args.profile)
    except (KeyError, ValueError) as exc:
        raise CliError(f"--profile: {exc}") from None
    time_text = args.genesis_time or datetime.now(UTC).replace(microsecond=0).isoformat()
    doc = {
        "chain_id": args.chain_id,
        "genesis_time": time_text,
        "validators": validators,
        "registrars": [_pub_from(k, "registrar") for k in args.registrar or []],
        "assessors": [_pub_from(k, "assessor") for k in args.assessor or []],
        "operator": _pub_from(args.operator, "operator"),
        "params": params,
    }
    if args.consensus:
        try:
            doc["consensus"] = json.loads(args.consensus)
        except json.JSONDecodeError as exc:
            raise CliError(f"--consensus is not JSON: {exc}") from None
    genesis = Genesis.from_doc(doc)  # validates everything before writing
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists (use --force to overwrite)")
    genesis.dump(out)
    _print({"file": str(out), "chain_id": genesis.chain_id, "hash": genesis.hash.hex()})
    return 0


# --- init / start -----------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    from chain.crypto import PrivateKey
    from chain.genesis import Genesis
    from node import config as cfg
    from node.keys import read_key, write_key

    home = Path(args.home)
    conf_path = home / "config.toml"
    if conf_path.exists() and not args.force:
        raise CliError(f"{conf_path} already exists (use --force to overwrite)")
    if args.no_validator and args.validator_key:
        raise CliError("--no-validator and --validator-key contradict each other")
    # everything given is read before anything is written, so a mistake leaves no half home
    if args.genesis:
        Genesis.load(args.genesis)
    imported = {attr: read_key(path) for attr, path in
                (("validator_key_file", args.validator_key), ("node_key_file", args.node_key))
                if path}
    home.mkdir(parents=True, exist_ok=True)
    config = cfg.Config(home=home)
    config.node.moniker = args.moniker or home.name
    if args.api_listen:
        config.api.listen = args.api_listen
    if args.p2p_listen:
        config.p2p.listen = args.p2p_listen
    config.p2p.persistent_peers = list(args.peer or [])
    cfg.from_dict({"api": {"listen": config.api.listen}, "p2p": {
        "listen": config.p2p.listen, "persistent_peers": config.p2p.persistent_peers}}, home)
    if args.no_validator:
        config.node.validator_key_file = ""
    conf_path.write_text(cfg.render(config))
    keys = {}
    for attr in ("node_key_file", "validator_key_file"):
        name = getattr(config.node, attr)
        if not name:
            continue
        path = config.path(name)
        if attr in imported:
            key = imported[attr]
            if path.exists():
                if read_key(path).public_key.raw != key.public_key.raw:
                    raise CliError(f"{path} holds another key; move it away first (a key "
                                   "is never overwritten)")
            else:
                write_key(path, key)
            keys[attr] = key.public_key.hex()
        elif path.exists():
            keys[attr] = read_key(path).public_key.hex()
        else:
            key = PrivateKey.generate()
            write_key(path, key)
            keys[attr] = key.public_key.hex()
    if args.genesis:
        shutil.copyfile(args.genesis, config.path(config.node.genesis_file))
    _print({"home": str(home), "config": str(conf_path),
            "node_key": keys.get("node_key_file"), "validator_key": keys.get("validator_key_file")})
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from node.runner import run_node

    return run_node(Path(args.home))


def cmd_recover_wal(args: argparse.Namespace) -> int:
    from node import config as cfg
    from node.wal import recover

    config = cfg.load(args.home)
    path = config.path(config.node.data_dir) / "consensus.wal"
    if not path.exists():
        raise CliError(f"no WAL at {path}")
    report = recover(path)
    _print({"wal": str(path), **dataclasses.asdict(report)})
    return 0


# --- client commands --------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Any:
    from node.client import Client

    return Client(args.node, timeout=args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    _print(_client(args).status())
    return 0


def cmd_tx(args: argparse.Namespace) -> int:
    from node.client import Account
    from node.keys import read_key
    from node.txjson import body_from_json

    body: dict[str, Any] = {}
    if args.body:
        try:
            body = json.loads(args.body)
        except json.JSONDecodeError as exc:
            raise CliError(f"--body is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise CliError("--body must be a JSON object")
    for field in args.field or []:
        k, sep, v = field.partition("=")
        if not sep:
            raise CliError(f"field {field!r}: expected name=value")
        try:
            body[k] = json.loads(v)
        except json.JSONDecodeError:
            body[k] = v
    try:
        typed = body_from_json(args.type, body)
    except ValueError as exc:
        raise CliError(f"{args.type}: {exc}") from None
    client = _client(args)
    key = read_key(args.key)
    chain_id = args.chain_id or client.status()["chain_id"]
    account = Account(key, chain_id, client)
    result = account.send(args.type, typed, mode=args.mode)
    _print(result)
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
    _print(doc)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from node.archive import ArchiveError, from_client, from_store, write_archive

    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} already exists (use --force to overwrite)")
    try:
        if args.node:
            from node.client import Client

            count = write_archive(out, from_client(Client(args.node, timeout=args.timeout)))
        else:
            from node.audit import DataSource, SourceError

            try:
                source = DataSource(args.data)
            except SourceError as exc:
                raise CliError(str(exc)) from None
            try:
                count = write_archive(out, from_store(source.store))
            finally:
                source.close()
    except ArchiveError as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    _print({"file": str(out), "blocks": count})
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from node.audit import main as audit_main

    return audit_main(args)


def cmd_verify_share(args: argparse.Namespace) -> int:
    from node.verify_share import main as verify_main

    return verify_main(args)


# --- parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mutual", description="mutual-ledger node and client")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    keys = sub.add_parser("keys", help="create and show Ed25519 key files").add_subparsers(
        dest="keys_command", metavar="ACTION")
    keys.required = True
    kn = keys.add_parser("new", help="generate a key file (mode 0600)")
    kn.add_argument("--out", required=True, help="path of the new key file")
    kn.add_argument("--force", action="store_true", help="overwrite an existing file")
    kn.set_defaults(func=cmd_keys_new)
    ks = keys.add_parser("show", help="print a key file's public key")
    ks.add_argument("file")
    ks.set_defaults(func=cmd_keys_show)

    gen = sub.add_parser("genesis", help="create a genesis document").add_subparsers(
        dest="genesis_command", metavar="ACTION")
    gen.required = True
    gn = gen.add_parser("new", help="write a new genesis.json")
    gn.add_argument("--out", required=True)
    gn.add_argument("--chain-id", required=True)
    gn.add_argument("--validator", action="append",
                    help="NAME=PUBKEY|KEYFILE[,power=N][,node_key=PUBKEY|KEYFILE]; repeat")
    gn.add_argument("--registrar", action="append", help="public key or key file; repeat")
    gn.add_argument("--assessor", action="append", help="public key or key file; repeat")
    gn.add_argument("--operator", required=True, help="public key or key file")
    gn.add_argument("--profile", default="production", help="rule profile: production|devnet")
    gn.add_argument("--genesis-time", help="RFC 3339 time (default: now)")
    gn.add_argument("--consensus", help="JSON object of consensus parameters")
    gn.add_argument("--force", action="store_true")
    gn.set_defaults(func=cmd_genesis_new)

    ini = sub.add_parser("init", help="create a node home: config.toml and keys")
    ini.add_argument("--home", required=True)
    ini.add_argument("--moniker")
    ini.add_argument("--genesis", help="genesis.json to copy into the home")
    ini.add_argument("--api-listen", help="host:port of the HTTP API")
    ini.add_argument("--p2p-listen", help="host:port for peers")
    ini.add_argument("--peer", action="append", help="persistent peer host:port; repeat")
    ini.add_argument("--validator-key", metavar="FILE",
                     help="use this key file (from `mutual keys new`) as the validator key")
    ini.add_argument("--node-key", metavar="FILE",
                     help="use this key file as the peer-to-peer node key")
    ini.add_argument("--no-validator", action="store_true", help="a full node without a key")
    ini.add_argument("--force", action="store_true")
    ini.set_defaults(func=cmd_init)

    st = sub.add_parser("start", help="run a node")
    st.add_argument("--home", required=True)
    st.set_defaults(func=cmd_start)

    rw = sub.add_parser("recover-wal", help="keep the valid prefix of a damaged consensus WAL")
    rw.add_argument("--home", required=True)
    rw.set_defaults(func=cmd_recover_wal)

    def client_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--node", default=os.environ.get("MUTUAL_NODE", "http://127.0.0.1:26657"),
                        help="node API URL (env MUTUAL_NODE)")
        sp.add_argument("--timeout", type=_seconds, default=30.0)

    s = sub.add_parser("status", help="a node's status")
    client_args(s)
    s.set_defaults(func=cmd_status)

    t = sub.add_parser("tx", help="build, sign, submit a transaction and show the receipt")
    t.add_argument("type", help="transaction type (docs/transactions.md)")
    t.add_argument("field", nargs="*", help="body fields as name=value (JSON values allowed)")
    t.add_argument("--key", required=True, help="the sender's key file")
    t.add_argument("--body", help="the whole body as a JSON object")
    t.add_argument("--mode", default="commit", choices=["async", "sync", "commit"])
    t.add_argument("--chain-id", help="default: asked from the node")
    client_args(t)
    t.set_defaults(func=cmd_tx)

    q = sub.add_parser("query", help="read a record, block, transaction or account")
    q.add_argument("kind", choices=["member", "claim", "period", "block", "tx", "account"])
    q.add_argument("id")
    q.add_argument("--proof", action="store_true")
    client_args(q)
    q.set_defaults(func=cmd_query)

    ex = sub.add_parser("export", help="write every block and certificate to an archive file")
    exsrc = ex.add_mutually_exclusive_group(required=True)
    exsrc.add_argument("--node", help="node API URL")
    exsrc.add_argument("--data", help="a stopped node's home or data directory (read-only)")
    ex.add_argument("--out", required=True, help="the archive file to write")
    ex.add_argument("--force", action="store_true")
    ex.add_argument("--timeout", type=_seconds, default=30.0)
    ex.set_defaults(func=cmd_export)

    a = sub.add_parser("audit", help="replay and verify a whole chain from genesis")
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--node", help="node API URL")
    src.add_argument("--data", help="a node's data directory (read-only) or an archive file "
                                    "from `mutual export`")
    a.add_argument("--genesis", required=True, help="the genesis file YOU trust")
    a.add_argument("--json", action="store_true", help="only the JSON report")
    a.add_argument("--timeout", type=_seconds, default=30.0)
    a.add_argument("--work-dir", help="replay on disk, in a LevelDB database in a new "
                                      "directory here (removed at the end), instead of in "
                                      "memory: for chains whose blocks do not fit in memory")
    a.set_defaults(func=cmd_audit)

    v = sub.add_parser("verify-share", help="check one member's share without trusting a node")
    v.add_argument("--node", required=True)
    v.add_argument("--genesis", required=True)
    v.add_argument("--member", required=True)
    v.add_argument("--period", required=True, type=int)
    v.add_argument("--timeout", type=_seconds, default=30.0)
    v.set_defaults(func=cmd_verify_share)
    return p


def _seconds(text: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from chain.genesis import GenesisError
    from node.client import ClientError
    from node.config import ConfigError
    from node.keys import KeyFileError
    from node.wal import WALError

    try:
        return args.func(args)
    except CliError as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return exc.code
    except (ConfigError, KeyFileError, GenesisError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, WALError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"mutual: error: {exc.strerror or exc}: {getattr(exc, 'filename', '')}",
              file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
