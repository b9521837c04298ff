"""``python -m devnet add-validator`` and ``remove-validator``: change a running devnet's
validator set the way a consortium does, through proposals and votes on chain.

Both work on the folder of a devnet that ``python -m devnet up --data DIR`` is running
(``up.json`` names its process). ``add-validator`` writes a new node home (consensus,
node and operator keys, config with the devnet's peers) and appends it to
``devnet.json``; ``up`` notices and starts it as a full node. Then one operator proposes
``add_validator``, the new node syncs (the validators admit its node key while the
proposal is open), the other operators vote until it passes, and the command waits until
``/validators`` lists the new key and a commit certificate carries its signature.
``remove-validator N`` proposes ``remove_validator`` for node N's key, has the operators
vote, waits until a committed height's set no longer holds it, then marks the node
``removed`` in ``devnet.json`` so that ``up`` stops it (and never restarts it).

Every wait is bounded; a failure is one readable line and exit code 1.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.crypto import PrivateKey
from chain.keyfile import write_key
from client import Client, ClientError
from client.cliutil import CliError
from client.gov_cli import (
    change_doc,
    find_proposal,
    get_proposal,
    parse_deadline,
    proposal_id_from_receipt,
    propose_body,
    send_governance,
    vote_body,
)
from devnet.cluster import (
    OPERATOR_KEY_FILE,
    Cluster,
    ClusterError,
    NodeProc,
    free_base_port,
    ports_free,
    read_meta,
    write_meta,
    write_node_config,
)

PROPOSAL_DEADLINE = "10m"
POLL_S = 0.3


class GovernanceError(RuntimeError):
    """The change could not be made; the message is the one line shown."""


# --- the running devnet -------------------------------------------------------------------

def up_pid(data_dir: Path) -> int | None:
    """The pid of the ``devnet up`` running this folder, None if none runs."""
    try:
        pid = int(json.loads((data_dir / "up.json").read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, someone else's: not ours to drive
        return None
    return pid


def open_running(data: str | Path) -> Cluster:
    data_dir = Path(data).resolve()
    try:
        cluster = Cluster.open(data_dir)
    except ClusterError as exc:
        raise GovernanceError(str(exc)) from None
    if up_pid(data_dir) is None:
        raise GovernanceError(f"no devnet is running from {data_dir} (start it with "
                              f"`python -m devnet up --data {data}` and keep it running)")
    return cluster


def _wait(what: str, timeout_s: float, probe: Callable[[], Any]) -> Any:
    """Call ``probe`` until it returns something truthy (a ClientError counts as not yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = probe()
        except ClientError:
            got = None
        if got:
            return got
        if time.monotonic() >= deadline:
            raise GovernanceError(f"{what}: not after {timeout_s:.0f}s")
        time.sleep(POLL_S)


def _api(cluster: Cluster, skip: int | None = None) -> Client:
    """A client of the first node (not ``skip``) that answers."""
    for i in cluster.active:
        if i == skip:
            continue
        c = cluster.nodes[i].client
        try:
            c.status()
            return c
        except ClientError:
            continue
    raise GovernanceError("no node of the devnet answers its API")


def _validators(client: Client, height: int | None = None) -> dict[str, Any]:
    params = {"height": height} if height is not None else None
    return client._request("GET", "/validators", params=params)


def _index_in(doc: dict[str, Any], pub_hex: str) -> int | None:
    for pos, v in enumerate(doc.get("validators", [])):
        if v.get("pub_key") == pub_hex:
            return int(v.get("index", pos))
    return None


def _operators(cluster: Cluster, current: dict[str, Any]) -> list[tuple[str, Path]]:
    """(validator pub hex, operator key file) of each validator in ``current`` whose
    operator key is in one of the devnet's node homes, in set order."""
    homes: dict[str, Path] = {}
    for node in cluster.nodes:
        key = cluster.operator_key(node.index)
        if key is not None:
            homes[key.public_key.hex()] = node.home / OPERATOR_KEY_FILE
    out = []
    for v in current.get("validators", []):
        path = homes.get(v.get("operator") or "")
        if path is not None:
            out.append((v["pub_key"], path))
    return out


def _run_proposal(client: Client, chain_id: str, kind: str, change: dict[str, Any],
                  voters: list[Path], say: Callable[[str], None],
                  between: Callable[[int], None] | None = None) -> int:
    """Propose with ``voters[0]``, call ``between(proposal_id)``, then vote yes with the
    others until the proposal passes. Returns its id."""
    deadline_ms = parse_deadline(PROPOSAL_DEADLINE, int(time.time() * 1000))
    try:
        result = send_governance(client, str(voters[0]), "propose",
                                 propose_body(kind, change, deadline_ms), chain_id)
    except CliError as exc:
        raise GovernanceError(str(exc)) from None
    pid = proposal_id_from_receipt(result)
    if pid is None:
        from chain.keyfile import read_key

        found = find_proposal(client, kind, read_key(voters[0]).public_key.hex(),
                              {k: v for k, v in change.items() if isinstance(v, str)}, None)
        if found is None:
            raise GovernanceError(f"{kind} was committed at height {result.get('height')} but "
                                  "no matching proposal is listed by /proposals")
        pid = int(found["id"])
    say(f"devnet: proposal {pid} ({kind}) opened at height {result.get('height')}")
    if between is not None:
        between(pid)
    status = get_proposal(client, pid).get("status")
    for path in voters[1:]:
        if status != "open":
            break
        try:
            send_governance(client, str(path), "vote_proposal", vote_body(pid, True), chain_id)
        except CliError as exc:
            raise GovernanceError(f"vote on proposal {pid}: {exc}") from None
        status = get_proposal(client, pid).get("status")
    if status != "passed":
        p = get_proposal(client, pid)
        why = p.get("reason") or p.get("code")
        raise GovernanceError(f"proposal {pid} is {status}, not passed (yes power "
                              f"{p.get('yes_power')} of {p.get('total_power')}"
                              + (f"; {why}" if why else "") + ")")
    say(f"devnet: proposal {pid} passed")
    return pid


def _signed_by(client: Client, pub_hex: str) -> int | None:
    """The latest committed height if its set holds ``pub_hex`` and its certificate carries
    that validator's signature, else None."""
    h = int(client.status()["height"])
    idx = _index_in(_validators(client, h), pub_hex)
    if idx is None:
        return None
    cert = client._request("GET", f"/certificates/{h}")
    return h if any(int(s[0]) == idx for s in cert.get("sigs", [])) else None


def retire(cluster: Cluster, index: int) -> None:
    """Mark node ``index`` removed in ``devnet.json``: ``up`` stops it and never restarts it."""
    meta = read_meta(cluster.data_dir)
    for entry in meta["nodes"]:
        if entry["index"] == index:
            entry["removed"] = True
    write_meta(cluster.data_dir, meta)


# --- add ------------------------------------------------------------------------------------

def create_home(cluster: Cluster, power: int = 10) -> NodeProc:
    """Write the next node's home (three keys, config) and append it to ``devnet.json``;
    a running ``devnet up`` starts it. Refuses a home that already exists."""
    meta = read_meta(cluster.data_dir)
    index = max(n["index"] for n in meta["nodes"]) + 1
    home = cluster.data_dir / f"node{index}"
    if home.exists():
        raise GovernanceError(f"{home} already exists (a half-made node? remove it first)")
    api_port = meta["base_port"] + 2 * index
    if not ports_free(api_port, api_port + 1) or any(
            api_port in (n["api_port"], n["p2p_port"]) for n in meta["nodes"]):
        api_port = free_base_port(2, start=meta["base_port"] + 2 * index + 1)
    node = NodeProc(index, home, api_port, api_port + 1)
    home.mkdir(parents=True)
    for name in ("validator_key.json", "node_key.json", OPERATOR_KEY_FILE):
        write_key(home / name, PrivateKey.generate())
    peers = [n["p2p_port"] for n in meta["nodes"] if not n.get("removed")]
    write_node_config(cluster.data_dir, node, peers)
    meta["nodes"].append({"index": index, "api_port": node.api_port,
                          "p2p_port": node.p2p_port, "removed": False})
    write_meta(cluster.data_dir, meta)
    cluster.nodes.append(node)
    return node


def add_validator(data: str | Path, power: int = 10, timeout_s: float = 90.0,
                  say: Callable[[str], None] = print) -> str:
    """The whole add-validator procedure; returns the closing line."""
    cluster = open_running(data)
    api = _api(cluster)
    chain_id = api.status()["chain_id"]
    current = _validators(api)
    voters = [path for _, path in _operators(cluster, current)]
    if not voters:
        raise GovernanceError("no operator key of a current validator is in the devnet's "
                              "node homes (a devnet made before operator accounts?)")
    node = create_home(cluster, power)
    from chain.keyfile import read_key

    pub = read_key(node.home / "validator_key.json").public_key.hex()
    say(f"devnet: node{node.index} created in {node.home} (API {node.url}); "
        "devnet up starts it as a full node")
    _wait(f"node{node.index} answering on {node.url} (see {node.log_path})", timeout_s,
          lambda: node.client.status())
    change = change_doc(
        "add_validator", pub_key=pub, power=power,
        node_key=read_key(node.home / "node_key.json").public_key.hex(),
        name=f"validator-{node.index}",
        operator=read_key(node.home / OPERATOR_KEY_FILE).public_key.hex())

    def catch_up(pid: int) -> None:
        # the validators admit the candidate's node key while its proposal is open
        target = int(api.status()["height"])
        _wait(f"node{node.index} syncing to height {target} (see {node.log_path})", timeout_s,
              lambda: int(node.client.status()["height"]) >= target)
        say(f"devnet: node{node.index} has caught up (height {target})")

    opened: list[int] = []

    def after_open(pid: int) -> None:
        opened.append(pid)
        catch_up(pid)

    try:
        _run_proposal(api, chain_id, "add_validator", change, voters, say, between=after_open)
    except GovernanceError as exc:
        if opened:  # the proposal may still pass: leave the node to the operator
            raise
        # refused at once (e.g. over the one-third bound): the node is of no use; up stops it
        retire(cluster, node.index)
        raise GovernanceError(f"{exc} (node{node.index} retired: devnet up stops it)") from None
    _wait("the new validator in /validators", timeout_s,
          lambda: _index_in(_validators(api), pub) is not None)
    height = _wait(f"a commit certificate signed by node{node.index}", timeout_s,
                   lambda: _signed_by(node.client, pub) or _signed_by(api, pub))
    return (f"devnet: node{node.index} (validator-{node.index}, {pub[:16]}…) is a validator "
            f"and signed the certificate of height {height}")


# --- remove ---------------------------------------------------------------------------------

def remove_validator(data: str | Path, index: int, timeout_s: float = 90.0,
                     say: Callable[[str], None] = print) -> str:
    """The whole remove-validator procedure; returns the closing line."""
    cluster = open_running(data)
    if index not in {n.index for n in cluster.nodes}:
        raise GovernanceError(f"the devnet has no node{index}")
    if cluster.nodes[index].removed:
        raise GovernanceError(f"node{index} was already removed")
    pub_raw = cluster.node_pub_key(index)
    if pub_raw is None:
        raise GovernanceError(f"node{index} has no consensus key: it is not a validator")
    pub = pub_raw.hex()
    api = _api(cluster, skip=index)
    chain_id = api.status()["chain_id"]
    current = _validators(api)
    if _index_in(current, pub) is None:
        raise GovernanceError(f"node{index}'s key {pub[:16]}… is not in the validator set")
    if len(current.get("validators", [])) < 2:
        raise GovernanceError(f"node{index} is the only validator: the set would be empty")
    ops = _operators(cluster, current)
    # its own operator votes last: the others may pass it without
    voters = [p for v, p in ops if v != pub] + [p for v, p in ops if v == pub]
    if not voters:
        raise GovernanceError("no operator key of a current validator is in the devnet's "
                              "node homes")
    _run_proposal(api, chain_id, "remove_validator", change_doc("remove_validator",
                                                                pub_key=pub), voters, say)
    height = _wait(f"a committed height whose set no longer holds node{index}", timeout_s,
                   lambda: (lambda h: h if _index_in(_validators(api, h), pub) is None
                            else None)(int(api.status()["height"])))
    retire(cluster, index)
    node = cluster.nodes[index]

    def stopped() -> bool:
        try:
            node.client.status()
        except ClientError:
            return True
        return False

    _wait(f"devnet up stopping node{index}", timeout_s, stopped)
    return (f"devnet: node{index} ({pub[:16]}…) left the validator set (height {height} is "
            "certified without it) and is stopped")


def run(action: Callable[[], str]) -> int:
    """Run one procedure: its closing line and 0, or one error line and 1."""
    import sys

    try:
        print(action(), flush=True)
        return 0
    except (GovernanceError, ClusterError) as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 1
    except ClientError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
