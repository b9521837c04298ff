"""The operators' subcommands of ``mutual``: keys, genesis, init, start, recover-wal."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.cliutil import CliError, print_json

# --- keys -------------------------------------------------------------------------------

def cmd_keys_new(args: argparse.Namespace) -> int:
    from chain.crypto import PrivateKey
    from chain.keyfile import write_key

    key = PrivateKey.generate()
    write_key(args.out, key, overwrite=args.force)
    print_json({"pub_key": key.public_key.hex(), "file": str(args.out)})
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from chain.keyfile import read_key

    print_json({"pub_key": read_key(args.file).public_key.hex()})
    return 0


# --- genesis ----------------------------------------------------------------------------

def _pub_from(value: str, what: str) -> str:
    """A public key given as 64 hex characters or as a key file path."""
    from chain.crypto import CryptoError, PublicKey
    from chain.keyfile import read_key

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
    print_json({"file": str(out), "chain_id": genesis.chain_id, "hash": genesis.hash.hex()})
    return 0


# --- init / start -----------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    from chain.crypto import PrivateKey
    from chain.genesis import Genesis
    from chain.keyfile import read_key, write_key
    from node import config as cfg

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
    print_json({"home": str(home), "config": str(conf_path),
            "node_key": keys.get("node_key_file"), "validator_key": keys.get("validator_key_file")})
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from node.runner import run_node

    return run_node(Path(args.home))


def cmd_recover_wal(args: argparse.Namespace) -> int:
    from node import config as cfg
    from node.store.wal import recover

    config = cfg.load(args.home)
    path = config.path(config.node.data_dir) / "consensus.wal"
    if not path.exists():
        raise CliError(f"no WAL at {path}")
    report = recover(path)
    print_json({"wal": str(path), **dataclasses.asdict(report)})
    return 0


def register(sub: Any) -> None:
    """Add the operators' commands to the ``mutual`` parser's subcommands."""
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
