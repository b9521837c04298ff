"""The operators' subcommands of ``mutual``: keys, genesis, init, start, recover-wal, and
``node rotate-key`` (a validator's new consensus key, proposed by its operator account)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.cliutil import EXIT_FAIL, CliError, print_json, seconds

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
        # NAME=PUBKEY[,power=N][,node_key=HEX|FILE][,operator=HEX|FILE]
        name, sep, rest = spec.partition("=")
        if not sep:
            raise CliError(f"--validator {spec!r}: expected "
                           "NAME=PUBKEY[,power=N][,node_key=K][,operator=K]")
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
            elif k == "operator":
                # the account that signs this validator's governance transactions
                entry["operator_account"] = _pub_from(v, f"validator {i} operator")
            else:
                raise CliError(f"--validator {spec!r}: unknown option {opt!r}")
        validators.append(entry)
    if not validators:
        raise CliError("at least one --validator is required")
    consensus_keys = {v["pub_key"] for v in validators}
    for v in validators:
        # an operator account signs transactions, a consensus key votes: never one key
        if v.get("operator_account") in consensus_keys:
            raise CliError(f"--validator {v['name']}: its operator account is a consensus "
                           "key; give each validator a separate operator key "
                           "(`mutual keys new --out operator_key.json`)")
    try:
        params = profile(args.profile)
    except (KeyError, ValueError) as exc:
        raise CliError(f"--profile: {exc}") from None
    time_text = args.genesis_time or datetime.now(UTC).replace(microsecond=0).isoformat()
    doc = {
        "format": 2,  # chain.genesis.GENESIS_FORMAT (docs/genesis.md)
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
    if not any(v.get("operator_account") for v in validators):
        print("mutual: warning: no validator names an operator account (operator=...): "
              "nobody will be able to propose or vote on governance changes",
              file=sys.stderr)
    print_json({"file": str(out), "chain_id": genesis.chain_id, "hash": genesis.hash.hex()})
    return 0


# --- init / start -----------------------------------------------------------------------

OPERATOR_KEY_FILE = "operator_key.json"  # the validator's operator account, in its home
OPERATOR_KEY_ATTR = "operator_key"

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
    if args.no_validator and args.operator_key:
        raise CliError("--no-validator and --operator-key contradict each other")
    imported = {attr: read_key(path) for attr, path in
                (("validator_key_file", args.validator_key), ("node_key_file", args.node_key),
                 (OPERATOR_KEY_ATTR, args.operator_key))
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
    for attr in ("node_key_file", "validator_key_file", OPERATOR_KEY_ATTR):
        if attr == OPERATOR_KEY_ATTR:
            # not a config option: the node never signs with it; it lives beside the
            # validator key so that `mutual gov` and `mutual node rotate-key` find it
            if args.no_validator:
                continue
            path = home / OPERATOR_KEY_FILE
        else:
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
                "node_key": keys.get("node_key_file"),
                "validator_key": keys.get("validator_key_file"),
                "operator_account": keys.get(OPERATOR_KEY_ATTR)})
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


# --- node rotate-key ----------------------------------------------------------------------

# the config option naming the second consensus key a node holds across a rotation, and
# the file rotate-key writes it to (docs/operators-governance.md)
NEXT_KEY_OPTION = "next_validator_key_file"
NEXT_KEY_FILE = "next_validator_key.json"


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from chain.crypto import PrivateKey
    from chain.keyfile import read_key, write_key
    from client import Client, ClientError
    from client.gov_cli import (
        change_doc,
        get_proposal,
        parse_deadline,
        proposal_id_from_receipt,
        propose_body,
        send_governance,
    )
    from node import config as cfg

    home = Path(args.home)
    config = cfg.load(home)
    if not hasattr(config.node, NEXT_KEY_OPTION):
        raise CliError(f"this node has no [node] {NEXT_KEY_OPTION} option, so it cannot hold "
                       "the new key beside the old one: update the node first")
    if not config.node.validator_key_file:
        raise CliError(f"{home} is a full node (no validator_key_file): no key to rotate")
    old = read_key(config.path(config.node.validator_key_file))
    op_path = Path(args.key) if args.key else home / OPERATOR_KEY_FILE
    if not op_path.is_file():
        raise CliError(f"no operator key at {op_path} (give --key OPERATOR_KEY_FILE)")
    operator = read_key(op_path)
    if operator.public_key.raw == old.public_key.raw:
        raise CliError(f"{op_path} is the consensus key itself, not an operator account")
    try:
        deadline_ms = parse_deadline(args.deadline, int(datetime.now(UTC).timestamp() * 1000))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    client = Client(args.node or f"http://{config.api.listen}", timeout=args.timeout)
    # refuse before writing anything when the node does not know this validator as ours
    listed = [v for v in client.validators().get("validators", [])
              if v.get("pub_key") == old.public_key.hex()]
    if not listed:
        raise CliError(f"validator key {old.public_key.hex()[:16]}… is not in the current "
                       f"validator set served by {client.base_url}", EXIT_FAIL)
    if listed[0].get("operator") not in (None, operator.public_key.hex()):
        raise CliError(f"the validator's operator account is {listed[0]['operator'][:16]}…, "
                       f"not the key in {op_path}", EXIT_FAIL)
    named = getattr(config.node, NEXT_KEY_OPTION)
    next_path = config.path(named) if named else home / NEXT_KEY_FILE
    if next_path.exists():
        # an earlier run that stopped before the proposal: reuse, a key is never overwritten
        new = read_key(next_path)
        if new.public_key.raw == old.public_key.raw:
            raise CliError(f"{next_path} holds the current key; move it away first")
    else:
        new = PrivateKey.generate()
        write_key(next_path, new)
    if not named:
        setattr(config.node, NEXT_KEY_OPTION, next_path.name if next_path.parent == home
                else str(next_path))
        (home / "config.toml").write_text(cfg.render(config))
    out: dict[str, Any] = {"home": str(home), "pub_key": old.public_key.hex(),
                           "new_pub_key": new.public_key.hex(), "new_key_file": str(next_path),
                           "config": f"[node] {NEXT_KEY_OPTION} = {getattr(config.node, NEXT_KEY_OPTION)!r}"}
    if args.no_submit:
        out["next"] = (f"restart the node (mutual start --home {home}) so it holds the new "
                       "key, then run this command again without --no-submit")
        print_json(out)
        return 0
    body = propose_body("rotate_key", change_doc(
        "rotate_key", pub_key=old.public_key.hex(), new_pub_key=new.public_key.hex()),
        deadline_ms)
    result = send_governance(client, str(op_path), "propose", body)
    pid = proposal_id_from_receipt(result)
    status = None
    if pid is not None:
        with contextlib.suppress(ClientError):  # the proposal is in; this is a courtesy
            status = get_proposal(client, pid).get("status")
    out.update({"hash": result.get("hash"), "height": result.get("height"),
                "code": result.get("code"), "proposal_id": pid, "status": status,
                "next": "signed by this validator's own operator account, the rotation "
                        "passes at once and the new key signs from two heights after "
                        f"{result.get('height')}; a node started before this command must "
                        "be restarted to load the new key"})
    print_json(out)
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
                    help="NAME=PUBKEY|KEYFILE[,power=N][,node_key=PUBKEY|KEYFILE]"
                         "[,operator=PUBKEY|KEYFILE]; repeat")
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
    ini.add_argument("--operator-key", metavar="FILE",
                     help="use this key file as the validator's operator account (default: "
                          f"a new {OPERATOR_KEY_FILE} in the home)")
    ini.add_argument("--no-validator", action="store_true", help="a full node without a key")
    ini.add_argument("--force", action="store_true")
    ini.set_defaults(func=cmd_init)

    st = sub.add_parser("start", help="run a node")
    st.add_argument("--home", required=True)
    st.set_defaults(func=cmd_start)

    rw = sub.add_parser("recover-wal", help="keep the valid prefix of a damaged consensus WAL")
    rw.add_argument("--home", required=True)
    rw.set_defaults(func=cmd_recover_wal)

    nd = sub.add_parser("node", help="a running validator's own changes").add_subparsers(
        dest="node_command", metavar="ACTION")
    nd.required = True
    rk = nd.add_parser("rotate-key", help="new consensus key: write it beside the old one, "
                                          "name it in the config, propose rotate_key")
    rk.add_argument("--home", required=True)
    rk.add_argument("--key", metavar="OPERATOR_KEY_FILE",
                    help=f"the operator account's key file (default: HOME/{OPERATOR_KEY_FILE})")
    rk.add_argument("--node", help="node API URL (default: the home's [api] listen)")
    rk.add_argument("--timeout", type=seconds, default=30.0)
    rk.add_argument("--deadline", default="1h", help="the proposal's deadline (default 1h)")
    rk.add_argument("--no-submit", action="store_true",
                    help="only write the key and the config (restart the node, then submit)")
    rk.set_defaults(func=cmd_rotate_key)
