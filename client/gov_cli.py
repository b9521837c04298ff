"""``mutual gov``: a validator operator proposes and votes on governance changes.

``propose`` signs one change (add/remove a validator, set its power, rotate its key,
grant/revoke a role, change rule parameters) with the operator account key and a
deadline; ``vote`` signs a yes or no; ``list`` and ``show`` read the proposals with their
tallies (docs/governance.md). The helpers (``change_doc``, ``propose_body``,
``parse_deadline``, ``find_proposal``, ...) are shared with ``python -m devnet
add-validator``/``remove-validator`` and ``mutual node rotate-key``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from client.cliutil import EXIT_FAIL, CliError, add_node_args, json_fields, print_json

CST = timezone(timedelta(hours=8), "CST")  # the plan's calendar (China Standard Time)
KINDS = ("add_validator", "remove_validator", "set_power", "rotate_key", "grant_role",
         "revoke_role", "set_params")
ROLES = ("registrar", "assessor", "operator")
STATUSES = ("open", "passed", "expired", "failed")
DEFAULT_DEADLINE = "24h"
# a deadline further out than this is a typo (the chain refuses it too: bad_deadline)
MAX_DEADLINE_S = 30 * 24 * 3600

_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


# --- pure helpers -------------------------------------------------------------------------

def parse_duration_s(text: str) -> int:
    """``90m``, ``2h``, ``1h30m``, ``2d``, ``45s`` -> seconds; ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not m or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration like 90m, 2h, 1h30m, 2d")
    return sum(int(v) * _UNIT_S[u] for v, u in zip(m.groups(), "dhms", strict=True) if v)


def parse_deadline(text: str, now_ms: int) -> int:
    """A deadline given as a duration from ``now_ms`` or as an RFC 3339 time (with its
    offset) -> ms since the epoch. Refuses a deadline in the past or beyond 30 days."""
    try:
        deadline_ms = now_ms + parse_duration_s(text) * 1000
    except ValueError:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"--deadline {text!r}: give a duration (90m, 2h, 1h30m, 2d) or "
                             "an RFC 3339 time such as 2026-12-09T18:00:00+08:00") from None
        if when.tzinfo is None:
            raise ValueError(f"--deadline {text!r}: an RFC 3339 time needs its offset "
                             "(Z, +08:00, ...)") from None
        deadline_ms = int(when.timestamp() * 1000)
    if deadline_ms <= now_ms:
        raise ValueError(f"--deadline {text!r} is not in the future")
    if deadline_ms - now_ms > MAX_DEADLINE_S * 1000:
        raise ValueError(f"--deadline {text!r} is more than 30 days ahead")
    return deadline_ms


def readable_span(ms: int) -> str:
    """``4_800_000`` -> ``1h 20m``; at most two units; ``0s`` for less than a second."""
    s = max(0, ms // 1000)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            parts.append(f"{s // size}{unit}")
            s %= size
    return " ".join(parts[:2]) or "0s"


def deadline_text(deadline_ms: int, now_ms: int) -> tuple[str, str]:
    """(the deadline in CST, ``in 1h 20m`` / ``1h 20m ago``)."""
    when = datetime.fromtimestamp(deadline_ms / 1000, CST).strftime("%Y-%m-%d %H:%M CST")
    left = deadline_ms - now_ms
    return when, (f"in {readable_span(left)}" if left > 0 else f"{readable_span(-left)} ago")


def pub_hex(value: str, what: str) -> str:
    """A public key as 64 hex characters, or read from a key file."""
    from chain.crypto import CryptoError, PublicKey
    from chain.keyfile import read_key

    if len(value) == 64:
        try:
            return PublicKey.from_hex(value).hex()
        except CryptoError:
            pass
    if Path(value).is_file():
        return read_key(value).public_key.hex()
    raise CliError(f"{what}: {value!r} is neither 64 hex characters nor a key file")


def change_doc(kind: str, **fields: Any) -> dict[str, Any]:
    """The JSON form of one change (hex keys), checked for the fields its kind needs."""
    needed = {"add_validator": ("pub_key", "power", "node_key", "name", "operator"),
              "remove_validator": ("pub_key",),
              "set_power": ("pub_key", "power"),
              "rotate_key": ("pub_key", "new_pub_key"),
              "grant_role": ("account", "role"), "revoke_role": ("account", "role"),
              "set_params": ("params", "from_period")}
    optional = {"rotate_key": ("new_node_key",)}
    if kind not in needed:
        raise CliError(f"unknown change kind {kind!r} (known: {', '.join(KINDS)})")
    missing = [f for f in needed[kind] if fields.get(f) is None]
    if missing:
        raise CliError(f"{kind} needs {', '.join('--' + f.replace('_', '-') for f in missing)}")
    allowed = set(needed[kind]) | set(optional.get(kind, ()))
    extra = sorted(f for f, v in fields.items() if v is not None and f not in allowed)
    if extra:
        raise CliError(f"{kind} takes no {', '.join('--' + f.replace('_', '-') for f in extra)}")
    if "power" in fields and fields["power"] is not None and (
            not isinstance(fields["power"], int) or fields["power"] < (
                0 if kind == "set_power" else 1)):
        raise CliError(f"--power must be a {'non-negative' if kind == 'set_power' else 'positive'}"
                       f" integer, not {fields['power']!r}")
    if kind in ("grant_role", "revoke_role") and fields["role"] not in ROLES:
        raise CliError(f"--role must be one of {', '.join(ROLES)}, not {fields['role']!r}")
    if kind == "set_params" and (not isinstance(fields["params"], dict) or not fields["params"]):
        raise CliError("set_params needs at least one parameter (--set NAME=VALUE)")
    return {k: v for k, v in fields.items() if v is not None}


def propose_body(kind: str, change: dict[str, Any], deadline_ms: int) -> dict[str, Any]:
    """The ``propose`` body for one change, in the layout of docs/transactions.md
    (checked against the transaction schema by ``client.txjson``)."""
    from client.txjson import body_from_json
    from contracts.txtypes import TX_TYPES

    t = TX_TYPES.get("propose")
    if t is None:
        raise CliError("this build has no governance transactions (propose)")
    if "change" in t.all_fields:  # the change as one nested map
        doc: dict[str, Any] = {"kind": kind, "change": change, "deadline_ms": deadline_ms}
    else:  # the change's fields beside kind and deadline_ms
        doc = {"kind": kind, "deadline_ms": deadline_ms, **change}
    try:
        return body_from_json("propose", doc)
    except ValueError as exc:
        raise CliError(f"propose {kind}: {exc}") from None


def vote_body(proposal_id: int, yes: bool) -> dict[str, Any]:
    from client.txjson import body_from_json

    try:
        return body_from_json("vote_proposal", {"proposal_id": proposal_id, "yes": yes})
    except ValueError as exc:
        raise CliError(f"vote_proposal: {exc}") from None


def proposal_id_from_receipt(result: dict[str, Any]) -> int | None:
    """The id of the proposal a committed ``propose`` opened, from its receipt's events."""
    def walk(obj: Any) -> int | None:
        if isinstance(obj, dict):
            for key in ("proposal_id", "proposal"):
                if isinstance(obj.get(key), int) and not isinstance(obj.get(key), bool):
                    return obj[key]
            if "proposal_opened" in (obj.get("type"), obj.get("kind"), obj.get("name")) and \
                    isinstance(obj.get("id"), int):
                return obj["id"]
            for v in obj.values():
                found = walk(v)
                if found is not None:
                    return found
        elif isinstance(obj, list):
            for v in obj:
                found = walk(v)
                if found is not None:
                    return found
        return None

    return walk(result.get("events", []))


def list_proposals(client: Any, status: str | None = None, limit: int = 100) -> list[dict]:
    """``GET /proposals`` (every page, oldest first)."""
    out: list[dict] = []
    after = 0
    for _ in range(1000):  # bounded: 1000 pages of ``limit``
        params: dict[str, Any] = {"after": after, "limit": limit}
        if status:
            params["status"] = status
        doc = client._request("GET", "/proposals", params=params)
        page = doc.get("proposals", []) if isinstance(doc, dict) else doc
        out.extend(page)
        if len(page) < limit:
            break
        after = max(int(p["id"]) for p in page)
    return out


def get_proposal(client: Any, proposal_id: int) -> dict[str, Any]:
    return client._request("GET", f"/proposals/{proposal_id}")


def _change_of(p: dict[str, Any]) -> dict[str, Any]:
    change = p.get("change")
    return change if isinstance(change, dict) else {}


def find_proposal(client: Any, kind: str, proposer: str, match: dict[str, Any],
                  status: str | None = "open") -> dict[str, Any] | None:
    """The newest proposal of ``kind`` by ``proposer`` whose change has ``match``'s values."""
    for p in reversed(list_proposals(client, status)):
        change = _change_of(p)
        if p.get("kind", change.get("kind")) == kind and p.get("proposer") == proposer and all(
                change.get(k) == v for k, v in match.items()):
            return p
    return None


def summary(p: dict[str, Any]) -> str:
    """One readable line for a proposal's change."""
    kind, c = p.get("kind"), _change_of(p)

    def short(k: Any) -> str:
        return f"{k[:8]}…" if isinstance(k, str) and len(k) == 64 else str(k)

    if kind == "add_validator":
        return f"add {c.get('name')} {short(c.get('pub_key'))} power {c.get('power')}"
    if kind == "remove_validator":
        return f"remove {short(c.get('pub_key'))}"
    if kind == "set_power":
        return f"power of {short(c.get('pub_key'))} -> {c.get('power')}"
    if kind == "rotate_key":
        return f"rotate {short(c.get('pub_key'))} -> {short(c.get('new_pub_key'))}"
    if kind in ("grant_role", "revoke_role"):
        verb = "grant" if kind == "grant_role" else "revoke"
        return f"{verb} {c.get('role')} {short(c.get('account'))}"
    if kind == "set_params":
        params = c.get("params") or {}
        names = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
        return f"from period {c.get('from_period')}: {names}"
    return json.dumps(c, sort_keys=True)


def table(proposals: list[dict[str, Any]], now_ms: int) -> str:
    """The readable table of ``mutual gov list``."""
    head = ("ID", "KIND", "STATUS", "SUMMARY", "YES/NEEDED/TOTAL", "DEADLINE", "")
    rows = [head]
    for p in proposals:
        when, rel = deadline_text(int(p.get("deadline_ms", 0)), now_ms)
        rows.append((str(p.get("id")), str(p.get("kind")), str(p.get("status")), summary(p),
                     f"{p.get('yes_power', '?')}/{p.get('needed', '?')}/"
                     f"{p.get('total_power', '?')}", when, rel))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


# --- commands -----------------------------------------------------------------------------

def _client(args: argparse.Namespace) -> Any:
    from client import Client

    return Client(args.node, timeout=args.timeout)


def _now_ms() -> int:
    return int(time.time() * 1000)


def send_governance(client: Any, key_file: str, tx_type: str, body: dict[str, Any],
                    chain_id: str | None = None) -> dict[str, Any]:
    """Sign with the operator key, submit, wait for the block; a refusal (at the mempool or
    in the block) is a ``CliError`` naming the chain's stable code."""
    from chain.keyfile import read_key
    from client import Account, ClientError

    key = read_key(key_file)
    account = Account(key, chain_id or client.status()["chain_id"], client)
    try:
        result = account.send(tx_type, body, mode="commit")
    except ClientError as exc:
        if exc.status in (400, 403, 409):
            raise CliError(f"{tx_type} refused: {exc.code}: {exc.message}", EXIT_FAIL) from None
        raise
    if result.get("code") != "ok":
        raise CliError(f"{tx_type} refused: {result.get('code')}: {result.get('reason')}",
                       EXIT_FAIL)
    return result


def _kind_fields(args: argparse.Namespace) -> dict[str, Any]:
    kind = args.kind
    f: dict[str, Any] = {}
    if kind in ("add_validator", "remove_validator", "set_power", "rotate_key"):
        f["pub_key"] = pub_hex(args.pub_key, "--pub-key") if args.pub_key else None
    if kind in ("add_validator", "set_power"):
        f["power"] = args.power
    if kind == "add_validator":
        f["node_key"] = pub_hex(args.node_key, "--node-key") if args.node_key else None
        f["name"] = args.name
        f["operator"] = pub_hex(args.operator, "--operator") if args.operator else None
    if kind == "rotate_key":
        f["new_pub_key"] = pub_hex(args.new_pub_key, "--new-pub-key") if args.new_pub_key else None
        f["new_node_key"] = (pub_hex(args.new_node_key, "--new-node-key")
                             if args.new_node_key else None)
    if kind in ("grant_role", "revoke_role"):
        f["account"] = pub_hex(args.account, "--account") if args.account else None
        f["role"] = args.role
    if kind == "set_params":
        f["params"] = json_fields(args.params, "--params", args.set,
                                  "--set {item!r}: expected NAME=VALUE",
                                  allow_empty_name=False)
        f["from_period"] = args.from_period
    return change_doc(kind, **f)


def cmd_propose(args: argparse.Namespace) -> int:
    change = _kind_fields(args)  # checked before asking the node anything
    try:
        deadline_ms = parse_deadline(args.deadline, _now_ms())
    except ValueError as exc:
        raise CliError(str(exc)) from None
    body = propose_body(args.kind, change, deadline_ms)
    client = _client(args)
    result = send_governance(client, args.key, "propose", body)
    from chain.keyfile import read_key
    from client import ClientError

    pid = proposal_id_from_receipt(result)
    out: dict[str, Any] = {"hash": result.get("hash"), "height": result.get("height"),
                           "code": result.get("code"), "proposal_id": pid}
    # the transaction is in; reading the proposal back is a courtesy that may fail
    with contextlib.suppress(ClientError):
        if pid is None:  # a receipt without the id: the newest matching proposal
            found = find_proposal(client, args.kind, read_key(args.key).public_key.hex(),
                                  {k: v for k, v in change.items() if isinstance(v, str)},
                                  status=None)
            pid = out["proposal_id"] = found.get("id") if found else None
        if pid is not None:
            out["proposal"] = get_proposal(client, pid)
    print_json(out)
    return 0


def cmd_vote(args: argparse.Namespace) -> int:
    if args.proposal_id < 1:
        raise CliError(f"proposal id must be a positive integer, not {args.proposal_id}")
    client = _client(args)
    result = send_governance(client, args.key, "vote_proposal",
                             vote_body(args.proposal_id, args.choice == "yes"))
    out: dict[str, Any] = {"hash": result.get("hash"), "height": result.get("height"),
                           "code": result.get("code"), "proposal_id": args.proposal_id}
    from client import ClientError

    with contextlib.suppress(ClientError):  # the vote is in; the read-back is a courtesy
        out["proposal"] = get_proposal(client, args.proposal_id)
    print_json(out)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    proposals = list_proposals(_client(args), args.status)
    if args.json:
        print_json({"proposals": proposals})
    elif not proposals:
        print(f"no {args.status + ' ' if args.status else ''}proposals")
    else:
        print(table(proposals, _now_ms()))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from client import ClientError

    try:
        p = get_proposal(_client(args), args.proposal_id)
    except ClientError as exc:
        if exc.status == 404:
            raise CliError(f"no proposal {args.proposal_id}", EXIT_FAIL) from None
        raise
    if args.json:
        print_json(p)
        return 0
    when, rel = deadline_text(int(p.get("deadline_ms", 0)), _now_ms())
    print(f"proposal {p.get('id')}: {p.get('kind')} ({p.get('status')})")
    print(f"  change:   {summary(p)}")
    print(f"  proposer: {p.get('proposer')}")
    print(f"  deadline: {when} ({rel})")
    print(f"  yes power {p.get('yes_power')} of {p.get('total_power')}"
          + (f", {p['needed']} needed to pass" if "needed" in p else ""))
    for v in p.get("votes") or []:
        if isinstance(v, dict):
            choice = "yes" if v.get("yes") else "no"
            print(f"  vote: {choice:3} {v.get('operator', v.get('voter'))} "
                  f"power {v.get('power')}")
    return 0


def _key_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--key", required=True, metavar="OPERATOR_KEY_FILE",
                    help="the operator account's key file (operator_key.json in a devnet home)")


def _deadline_arg(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--deadline", default=DEFAULT_DEADLINE,
                    help="a duration from now (90m, 2h, 1h30m, 2d) or an RFC 3339 time; "
                         f"at most 30 days (default {DEFAULT_DEADLINE})")


def register(sub: Any) -> None:
    """Add ``gov`` (propose, vote, list, show) to the ``mutual`` parser's subcommands."""
    gov = sub.add_parser("gov", help="governance: propose and vote on validator, role and "
                                     "rule changes").add_subparsers(dest="gov_command",
                                                                    metavar="ACTION")
    gov.required = True

    pr = gov.add_parser("propose", help="propose one change (signed by an operator account)")
    _key_args(pr)
    add_node_args(pr)
    kinds = pr.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        sp = kinds.add_parser(name, aliases=[name.replace("_", "-")], help=help_text)
        sp.set_defaults(kind=name, func=cmd_propose)
        _deadline_arg(sp)
        return sp

    k = kind("add_validator", "add a validator (takes effect two heights after it passes)")
    k.add_argument("--pub-key", help="its consensus key (hex or key file)")
    k.add_argument("--power", type=int, default=10)
    k.add_argument("--node-key", help="its peer-to-peer node key (hex or key file)")
    k.add_argument("--name")
    k.add_argument("--operator", help="its operator account (hex or key file)")
    k = kind("remove_validator", "remove a validator")
    k.add_argument("--pub-key", help="its consensus key (hex or key file)")
    k = kind("set_power", "change a validator's power (also restores a jailed one)")
    k.add_argument("--pub-key", help="its consensus key (hex or key file)")
    k.add_argument("--power", type=int)
    k = kind("rotate_key", "replace a validator's consensus key (its own operator: at once)")
    k.add_argument("--pub-key", help="the current consensus key (hex or key file)")
    k.add_argument("--new-pub-key", help="the new consensus key (hex or key file)")
    k.add_argument("--new-node-key", help="a new node key too (optional)")
    for name, verb in (("grant_role", "grant"), ("revoke_role", "revoke")):
        k = kind(name, f"{verb} the registrar, assessor or fee-operator role")
        k.add_argument("--account", help="the account (hex or key file)")
        k.add_argument("--role", choices=ROLES, required=True)
    k = kind("set_params", "change rule parameters from a settlement period on")
    k.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="one parameter (JSON value); repeat")
    k.add_argument("--params", help="the changed parameters as one JSON object")
    k.add_argument("--from-period", type=int, help="the first period they apply to")

    vo = gov.add_parser("vote", help="vote yes or no on an open proposal")
    _key_args(vo)
    vo.add_argument("proposal_id", type=int, metavar="ID")
    vo.add_argument("choice", choices=["yes", "no"])
    add_node_args(vo)
    vo.set_defaults(func=cmd_vote)

    ls = gov.add_parser("list", help="proposals with tallies and deadlines")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--json", action="store_true", help="the API's JSON instead of a table")
    add_node_args(ls)
    ls.set_defaults(func=cmd_list)

    sh = gov.add_parser("show", help="one proposal with its votes")
    sh.add_argument("proposal_id", type=int, metavar="ID")
    sh.add_argument("--json", action="store_true")
    add_node_args(sh)
    sh.set_defaults(func=cmd_show)


__all__ = ["CST", "KINDS", "change_doc", "deadline_text", "find_proposal",
           "get_proposal", "list_proposals", "parse_deadline", "parse_duration_s",
           "proposal_id_from_receipt", "propose_body", "readable_span", "register",
           "send_governance", "summary", "table", "vote_body"]
