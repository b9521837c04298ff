"""A local multi-validator network of real node processes on loopback.

``Cluster.create`` writes keys, a genesis and one node home per validator under a data
folder; ``start`` launches ``python -m mutual start`` for each; ``kill``/``restart``
inject crashes; ``stop`` ends every process it started (SIGTERM, then SIGKILL). Used by
``python -m devnet``, the load generator, the benchmark and the multi-process tests.

The data folder (documented in docs/operators-governance.md, "The devnet folder"):

* ``genesis.json``; ``keys/`` (registrar, assessor, fee-operator role keys);
* ``node<i>/`` per node: ``config.toml``, ``validator_key.json`` (consensus key),
  ``node_key.json`` (peer identity), ``operator_key.json`` (the validator's operator
  account, which signs its governance transactions), ``node.log``, ``node.pid`` (while
  ``devnet up`` runs it), ``data/``;
* ``devnet.json``: ``{"validators": genesis count, "base_port", "chain_id", "nodes":
  [{"index", "api_port", "p2p_port", "removed"}]}``; ``nodes`` grows when
  ``add-validator`` adds a node and marks ``removed`` when ``remove-validator`` retires
  one (a removed node is not started again);
* ``up.json``: ``{"pid"}`` of the ``devnet up`` process while it runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chain.crypto import PrivateKey
from chain.genesis import GENESIS_FORMAT, Genesis
from chain.keyfile import read_key, write_key
from client import Client, ClientError

DEFAULT_BASE_PORT = 26600


class ClusterError(RuntimeError):
    """The devnet could not be created, started or reached."""


def free_base_port(count: int, start: int = 28000, stop: int = 60000) -> int:
    """A base port with ``count`` consecutive free loopback ports (checked, not reserved)."""
    for base in range(start, stop - count, 97):
        socks: list[socket.socket] = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ClusterError(f"no {count} consecutive free ports on 127.0.0.1")


OPERATOR_KEY_FILE = "operator_key.json"


def write_meta(data_dir: Path, meta: dict[str, Any]) -> None:
    """Replace ``devnet.json`` atomically (``devnet up`` re-reads it while it runs)."""
    tmp = data_dir / "devnet.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, data_dir / "devnet.json")


def read_meta(data_dir: Path) -> dict[str, Any]:
    """``devnet.json``, with the ``nodes`` list filled in for folders written before it
    existed (node i on base_port + 2i and + 2i + 1)."""
    try:
        meta = json.loads((data_dir / "devnet.json").read_text())
        base = meta["base_port"]
        if "nodes" not in meta:
            meta["nodes"] = [{"index": i, "api_port": base + 2 * i, "p2p_port": base + 2 * i + 1,
                              "removed": False} for i in range(meta["validators"])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ClusterError(f"{data_dir} is not a devnet folder: {exc}") from None
    return meta


def write_node_config(data_dir: Path, node: NodeProc, peer_ports: list[int]) -> None:
    """A devnet node's ``config.toml``: loopback ports, the folder's genesis, its peers."""
    from node import config as cfg

    config = cfg.Config(home=node.home)
    config.node.moniker = f"node{node.index}"
    config.node.genesis_file = str(data_dir / "genesis.json")
    config.api.listen = f"127.0.0.1:{node.api_port}"
    config.p2p.listen = f"127.0.0.1:{node.p2p_port}"
    config.p2p.persistent_peers = [f"127.0.0.1:{port}" for port in peer_ports]
    (node.home / "config.toml").write_text(cfg.render(config))


def ports_free(*ports: int) -> bool:
    """Whether every port can be bound on 127.0.0.1 right now (checked, not reserved)."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@dataclass
class NodeProc:
    index: int
    home: Path
    api_port: int
    p2p_port: int
    proc: subprocess.Popen[bytes] | None = None
    removed: bool = False  # retired from the validator set by remove-validator: not started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def client(self) -> Client:
        return Client(self.url, timeout=10)

    @property
    def log_path(self) -> Path:
        return self.home / "node.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """Validators (and optional extra full nodes) as child processes."""

    def __init__(self, data_dir: Path, nodes: list[NodeProc]) -> None:
        self.data_dir = data_dir
        self.nodes = nodes

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        data_dir: str | Path,
        validators: int = 4,
        base_port: int = DEFAULT_BASE_PORT,
        chain_id: str = "mutual-devnet",
        profile: str = "devnet",
        consensus: dict[str, int] | None = None,
        params_override: dict[str, Any] | None = None,
        genesis_time_ms: int | None = None,
        registrars: int = 1,
    ) -> Cluster:
        """Write keys, genesis and configs for ``validators`` nodes (fresh data dir)."""
        from contracts.params import profile as rule_profile

        data_dir = Path(data_dir).resolve()
        if validators < 1:
            raise ClusterError("need at least one validator")
        if (data_dir / "genesis.json").exists():
            raise ClusterError(f"{data_dir} already holds a devnet (remove it or use another --data)")
        keys_dir = data_dir / "keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        role_keys = {}
        for role in ("registrar", "assessor", "operator"):
            key = PrivateKey.generate()
            write_key(keys_dir / f"{role}.json", key)
            role_keys[role] = key.public_key.hex()
        # extra registrars let the load generator keep many nonce sequences in flight
        extra_registrars = []
        for i in range(1, registrars):
            key = PrivateKey.generate()
            write_key(keys_dir / f"registrar-{i}.json", key)
            extra_registrars.append(key.public_key.hex())
        nodes: list[NodeProc] = []
        vals = []
        for i in range(validators):
            home = data_dir / f"node{i}"
            home.mkdir(parents=True, exist_ok=True)
            vkey, nkey, okey = (PrivateKey.generate() for _ in range(3))
            write_key(home / "validator_key.json", vkey)
            write_key(home / "node_key.json", nkey)
            write_key(home / OPERATOR_KEY_FILE, okey)
            vals.append({"name": f"validator-{i}", "pub_key": vkey.public_key.hex(),
                         "power": 10, "node_key": nkey.public_key.hex(),
                         "operator_account": okey.public_key.hex()})
            nodes.append(NodeProc(i, home, base_port + 2 * i, base_port + 2 * i + 1))
        params = rule_profile(profile)
        if params_override:
            params.update(params_override)
        if genesis_time_ms is None:
            genesis_time_ms = int(time.time()) * 1000
        doc: dict[str, Any] = {
            "format": GENESIS_FORMAT,
            "chain_id": chain_id,
            "genesis_time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00",
                                          time.gmtime(genesis_time_ms // 1000)),
            "validators": vals,
            "registrars": [role_keys["registrar"], *extra_registrars],
            "assessors": [role_keys["assessor"]],
            "operator": role_keys["operator"],
            "consensus": consensus or {"timeout_propose_ms": 800, "timeout_prevote_ms": 300,
                                       "timeout_precommit_ms": 300, "timeout_delta_ms": 200,
                                       "timeout_commit_ms": 100},
            "params": params,
        }
        genesis = Genesis.from_doc(doc)
        genesis.dump(data_dir / "genesis.json")
        for node in nodes:
            write_node_config(data_dir, node, [n.p2p_port for n in nodes if n is not node])
        write_meta(data_dir, {
            "validators": validators, "base_port": base_port, "chain_id": chain_id,
            "nodes": [{"index": n.index, "api_port": n.api_port, "p2p_port": n.p2p_port,
                       "removed": False} for n in nodes]})
        return cls(data_dir, nodes)

    @classmethod
    def open(cls, data_dir: str | Path) -> Cluster:
        """Re-open an existing devnet folder (to restart it)."""
        data_dir = Path(data_dir).resolve()
        meta = read_meta(data_dir)
        nodes = [NodeProc(n["index"], data_dir / f"node{n['index']}", n["api_port"],
                          n["p2p_port"], removed=bool(n.get("removed")))
                 for n in meta["nodes"]]
        return cls(data_dir, nodes)

    def refresh(self) -> tuple[list[int], list[int]]:
        """Re-read ``devnet.json`` (another command may have added or retired a node while
        ``devnet up`` runs): append nodes new to this object, mark retired ones. Returns
        (indices added, indices newly marked removed); starts and stops nothing."""
        meta = read_meta(self.data_dir)
        known = {n.index for n in self.nodes}
        added, retired = [], []
        for entry in meta["nodes"]:
            i = entry["index"]
            if i not in known:
                self.nodes.append(NodeProc(i, self.data_dir / f"node{i}", entry["api_port"],
                                           entry["p2p_port"], removed=bool(entry.get("removed"))))
                added.append(i)
            elif entry.get("removed") and not self.nodes[i].removed:
                self.nodes[i].removed = True
                retired.append(i)
        return added, retired

    @property
    def active(self) -> list[int]:
        """Positions in ``nodes`` of the nodes not retired (a devnet folder's node i is at
        position i; a Cluster of extra nodes built by hand may number them otherwise)."""
        return [pos for pos, n in enumerate(self.nodes) if not n.removed]

    def node_pub_key(self, index: int) -> bytes | None:
        """The consensus key a node's home holds (None: a full node without one)."""
        path = self.nodes[index].home / "validator_key.json"
        return read_key(path).public_key.raw if path.exists() else None

    def voting_power(self, indices: list[int]) -> tuple[int, int]:
        """(power of the validators the nodes ``indices`` hold, total power) in the set a
        running node reports for its next height; the genesis set if none answers."""
        current: dict[str, int] | None = None
        for i in indices:
            try:
                doc = self.nodes[i].client.validators()
                current = {v["pub_key"]: int(v["power"]) for v in doc["validators"]}
                break
            except (ClientError, KeyError, TypeError, ValueError):
                continue
        if current is None:
            current = {v.pub_key.hex(): v.power for v in self.genesis.validators.validators}
        live = 0
        for i in indices:
            try:
                pub = self.node_pub_key(i)
            except Exception:  # noqa: BLE001 - an unreadable key file holds no power here
                pub = None
            if pub is not None:
                live += current.get(pub.hex(), 0)
        return live, sum(current.values())

    def operator_key(self, index: int) -> PrivateKey | None:
        """The operator account key in a node's home (None if it has none)."""
        path = self.nodes[index].home / OPERATOR_KEY_FILE
        return read_key(path) if path.exists() else None

    @property
    def genesis_path(self) -> Path:
        return self.data_dir / "genesis.json"

    @property
    def genesis(self) -> Genesis:
        return Genesis.load(self.genesis_path)

    def role_key(self, role: str) -> PrivateKey:
        return read_key(self.data_dir / "keys" / f"{role}.json")

    def registrar_keys(self) -> list[PrivateKey]:
        """Every registrar key of this devnet (the first is ``role_key("registrar")``)."""
        keys = [self.role_key("registrar")]
        i = 1
        while (self.data_dir / "keys" / f"registrar-{i}.json").exists():
            keys.append(self.role_key(f"registrar-{i}"))
            i += 1
        return keys

    # -- processes ------------------------------------------------------------------------

    def start_node(self, index: int) -> None:
        node = self.nodes[index]
        if node.alive():
            return
        log = open(node.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "mutual", "start", "--home", str(node.home)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        # so that a test or an operator can find (and kill -9) a node devnet up started
        (node.home / "node.pid").write_text(f"{node.proc.pid}\n")

    def start(self, wait_s: float = 60.0) -> None:
        for i in self.active:
            self.start_node(i)
        self.wait_ready(wait_s)

    def wait_ready(self, timeout_s: float = 60.0, indices: list[int] | None = None) -> None:
        """Wait (bounded) until every selected node answers /status."""
        deadline = time.monotonic() + timeout_s
        pending = set(indices if indices is not None else self.active)
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                node = self.nodes[i]
                if node.proc is not None and node.proc.poll() is not None:
                    raise ClusterError(
                        f"node{i} exited with code {node.proc.returncode}; "
                        f"last log lines:\n{self.tail(i)}")
                try:
                    status = node.client.status()
                except ClientError:
                    continue
                if status.get("genesis_hash") != self.genesis.hash.hex():
                    raise ClusterError(
                        f"port {node.api_port} answers for another chain "
                        f"(a leftover node?); stop it or use another --base-port")
                pending.discard(i)
            if pending:
                time.sleep(0.2)
        if pending:
            raise ClusterError(f"nodes {sorted(pending)} not ready after {timeout_s:.0f}s")

    def wait_height(self, height: int, timeout_s: float = 60.0,
                    indices: list[int] | None = None) -> None:
        """Wait (bounded) until every selected node has committed ``height``."""
        deadline = time.monotonic() + timeout_s
        pending = set(indices if indices is not None else self.active)
        while pending and time.monotonic() < deadline:
            for i in list(pending):
                try:
                    if self.nodes[i].client.status()["height"] >= height:
                        pending.discard(i)
                except ClientError:
                    pass
            if pending:
                time.sleep(0.2)
        if pending:
            raise ClusterError(f"nodes {sorted(pending)} did not reach height {height} "
                               f"in {timeout_s:.0f}s")

    def kill(self, index: int) -> None:
        """SIGKILL a node (a crash: no clean shutdown)."""
        node = self.nodes[index]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait(timeout=10)

    def terminate(self, index: int, timeout_s: float = 15.0) -> int | None:
        """SIGTERM a node and wait for its clean exit (SIGKILL if it overstays)."""
        node = self.nodes[index]
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
        return node.proc.returncode

    def restart(self, index: int, wait_s: float = 60.0) -> None:
        self.terminate(index)
        self.start_node(index)
        self.wait_ready(wait_s, [index])

    def stop(self) -> None:
        """Stop every process this cluster started (and forget their ``node.pid``)."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=10)
            (node.home / "node.pid").unlink(missing_ok=True)

    def tail(self, index: int, lines: int = 20) -> str:
        try:
            return "\n".join(self.nodes[index].log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
