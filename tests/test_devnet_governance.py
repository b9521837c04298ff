"""The devnet's governance commands: ``python -m devnet add-validator`` /
``remove-validator`` against a running ``python -m devnet up``.

Fast tests (no node process): the new node's home, the folder ``up`` re-reads, the
one-line errors. The real-process test (127.0.0.1 only, every wait bounded, every process
stopped): a fifth validator joins a running 4-validator devnet and signs (``mutual gov
list`` shows its proposal passed); an original one leaves; one of the new set is killed
with SIGKILL and the rest commit on; the whole devnet restarts on the right set; one
validator rotates its key with ``mutual node rotate-key`` and signs with the new one;
``mutual audit`` of the chain from genesis passes. It needs the
governance transactions (contracts) and the node's ``/proposals`` and
``/validators?height=`` (node); it is skipped where the build has neither.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from chain.keyfile import read_key
from devnet.__main__ import follow_folder
from devnet.__main__ import main as devnet_main
from devnet.cluster import Cluster, free_base_port, read_meta
from devnet.governance import GovernanceError, create_home, remove_validator
from node import config as cfg
from tests.test_audit_devnet import _wait

ROOT = Path(__file__).resolve().parent.parent


def _governance_in_build() -> bool:
    from contracts.txtypes import TX_TYPES

    api = (ROOT / "node" / "api.py").read_text()
    return {"propose", "vote_proposal"} <= set(TX_TYPES) and '"/proposals"' in api


# --- fast: no node process ------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path: Path) -> Cluster:
    return Cluster.create(tmp_path / "d", validators=4, base_port=free_base_port(12))


def test_devnet_homes_have_an_operator_key_named_in_genesis(folder: Cluster) -> None:
    g = folder.genesis
    for i, v in enumerate(g.validators.validators):
        home = folder.nodes[i].home
        op = read_key(home / "operator_key.json")
        assert stat.S_IMODE((home / "operator_key.json").stat().st_mode) == 0o600
        assert v.operator == op.public_key.raw != v.pub_key
        assert folder.operator_key(i).public_key.raw == op.public_key.raw
    meta = read_meta(folder.data_dir)
    assert [(n["index"], n["api_port"], n["removed"]) for n in meta["nodes"]] == [
        (n.index, n.api_port, False) for n in folder.nodes]


def test_a_folder_from_before_the_node_list_still_opens(folder: Cluster) -> None:
    meta = json.loads((folder.data_dir / "devnet.json").read_text())
    del meta["nodes"]
    (folder.data_dir / "devnet.json").write_text(json.dumps(meta))
    again = Cluster.open(folder.data_dir)
    assert [(n.index, n.api_port, n.p2p_port) for n in again.nodes] == [
        (n.index, n.api_port, n.p2p_port) for n in folder.nodes]


def test_add_validator_writes_a_full_node_home_and_appends_it(folder: Cluster) -> None:
    node = create_home(folder)
    assert node.index == 4 and node.home == folder.data_dir / "node4"
    keys = {name: read_key(node.home / name).public_key.raw
            for name in ("validator_key.json", "node_key.json", "operator_key.json")}
    assert len(set(keys.values())) == 3
    assert all(k not in {v.pub_key for v in folder.genesis.validators.validators}
               for k in keys.values())
    conf = cfg.load(node.home)
    assert conf.node.genesis_file == str(folder.genesis_path)
    assert conf.api.listen == f"127.0.0.1:{node.api_port}"
    assert conf.p2p.persistent_peers == [f"127.0.0.1:{n.p2p_port}" for n in folder.nodes[:4]]
    ports = {p for n in folder.nodes[:4] for p in (n.api_port, n.p2p_port)}
    assert not {node.api_port, node.p2p_port} & ports
    entry = read_meta(folder.data_dir)["nodes"][-1]
    assert entry == {"index": 4, "api_port": node.api_port, "p2p_port": node.p2p_port,
                     "removed": False}
    # a running `up` picks it up from the folder (here: a second view of the same folder)
    view = Cluster.open(folder.data_dir)
    assert [n.index for n in view.nodes] == [0, 1, 2, 3, 4]
    # a half-made home is never overwritten
    (folder.data_dir / "node5").mkdir()
    with pytest.raises(GovernanceError, match="node5 already exists"):
        create_home(folder)


def test_up_starts_added_nodes_and_stops_removed_ones(folder: Cluster, monkeypatch) -> None:
    started, stopped, said = [], [], []
    running = Cluster.open(folder.data_dir)  # what `up` holds
    monkeypatch.setattr(running, "start_node", started.append)
    monkeypatch.setattr(running, "terminate", lambda i: stopped.append(i) or 0)
    poll = follow_folder(running, said.append)
    assert poll() == [] and started == stopped == []
    create_home(folder)  # add-validator, in another process
    assert poll() == [] and started == [4] and "node4 started" in said[-1]
    meta = read_meta(folder.data_dir)
    meta["nodes"][1]["removed"] = True  # remove-validator 1
    (folder.data_dir / "devnet.json").write_text(json.dumps(meta))
    assert poll() == [1] and stopped == [1] and "node1 stopped (removed" in said[-1]
    assert poll() == [] and started == [4] and stopped == [1]  # once each
    assert running.active == [0, 2, 3, 4]


def test_commands_need_a_running_up_and_say_so_in_one_line(folder: Cluster, capsys) -> None:
    for argv in (["add-validator", "--data", str(folder.data_dir)],
                 ["remove-validator", "--data", str(folder.data_dir), "1"]):
        assert devnet_main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no devnet is running from" in err, err
    assert devnet_main(["add-validator", "--data", str(folder.data_dir / "nope")]) == 1
    assert "is not a devnet folder" in capsys.readouterr().err
    # nothing was added by the refused commands
    assert [n["index"] for n in read_meta(folder.data_dir)["nodes"]] == [0, 1, 2, 3]
    assert not (folder.data_dir / "node4").exists()


def test_remove_validator_refusals(folder: Cluster) -> None:
    # `up` "runs" (this process's pid), but no node answers
    (folder.data_dir / "up.json").write_text(json.dumps({"pid": os.getpid()}))
    with pytest.raises(GovernanceError, match="the devnet has no node9"):
        remove_validator(folder.data_dir, 9, timeout_s=1)
    with pytest.raises(GovernanceError, match="no node of the devnet answers its API"):
        remove_validator(folder.data_dir, 1, timeout_s=1)


def test_argument_errors(capsys) -> None:
    for argv in (["add-validator", "--power", "0"], ["remove-validator", "x"],
                 ["remove-validator", "--", "-1"], ["add-validator", "--timeout", "0"]):
        with pytest.raises(SystemExit) as exc:
            devnet_main(argv)
        assert exc.value.code == 2
    capsys.readouterr()


# --- real processes -------------------------------------------------------------------------

def _status(url: str) -> dict | None:
    from client import Client, ClientError

    try:
        return Client(url, timeout=3).status()
    except ClientError:
        return None


def _set_at(url: str, height: int | None = None) -> list[str]:
    from client import Client

    params = {"height": height} if height is not None else None
    doc = Client(url, timeout=5)._request("GET", "/validators", params=params)
    return [v["pub_key"] for v in doc["validators"]]


class Up:
    """``python -m devnet up --data DIR --no-demo`` as a child process."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data / "up.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "devnet", "up", "--data", str(self.data), "--no-demo"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                start_new_session=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # nodes an `up` killed with SIGKILL could not stop: end them by their recorded pid
        # (only a process whose command line names that node's home: never a reused pid)
        for pid_file in self.data.glob("node*/node.pid"):
            with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if str(pid_file.parent).encode() in cmdline:
                    os.kill(pid, signal.SIGKILL)


def _mutual(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutual", *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


def _devnet(*argv: str, timeout: float = 200) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devnet", *argv], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.skipif(not _governance_in_build(),
                    reason="needs the governance transactions and the node's /proposals")
def test_add_remove_kill_restart_audit(tmp_path: Path) -> None:
    data = tmp_path / "net"
    cluster = Cluster.create(data, validators=4, base_port=free_base_port(20))
    up = Up(data)
    try:
        up.start()
        _wait("devnet up running 4 nodes", timeout_s=60, check= lambda: (data / "up.json").exists() and all(
            (_status(n.url) or {}).get("height", 0) >= 1 for n in cluster.nodes))
        originals = [cluster.node_pub_key(i).hex() for i in range(4)]

        added = _devnet("add-validator", "--data", str(data), "--timeout", "60")
        assert added.returncode == 0, added.stderr + added.stdout
        assert "node4" in added.stdout and "signed the certificate" in added.stdout
        new_pub = read_key(data / "node4" / "validator_key.json").public_key.hex()
        url = cluster.nodes[1].url
        assert _set_at(url) == [*originals, new_pub]

        # the new validator keeps signing: a later certificate carries its index
        from client import Client

        def signed_later() -> bool:
            h = Client(url)._request("GET", "/status")["height"]
            vals = _set_at(url, h)
            if new_pub not in vals:
                return False
            cert = Client(url)._request("GET", f"/certificates/{h}")
            return any(s[0] == vals.index(new_pub) for s in cert["sigs"])

        _wait("a certificate signed by node4", timeout_s=30, check= signed_later)

        # a candidate over the one-third bound (40 of 90) is refused with the chain's code,
        # in one line, and its node is retired; the set is unchanged
        refused = _devnet("add-validator", "--data", str(data), "--power", "40",
                          "--timeout", "30")
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert "power_shift_too_large" in refused.stderr and "node5 retired" in refused.stderr
        assert read_meta(data)["nodes"][5]["removed"] is True
        _wait("devnet up stopping node5", timeout_s=20, check=
               lambda: _status(Cluster.open(data).nodes[5].url) is None)
        assert _set_at(url) == [*originals, new_pub]

        # the operators' view: `mutual gov list` shows the passed proposal and its tally
        listed = _mutual("gov", "list", "--status", "passed", "--json", "--node", url)
        assert listed.returncode == 0, listed.stderr
        (prop,) = json.loads(listed.stdout)["proposals"]
        assert prop["kind"] == "add_validator" and prop["change"]["pub_key"] == new_pub
        assert prop["yes_power"] >= prop["needed"] > 2 * 40 // 3
        table = _mutual("gov", "list", "--node", url)
        assert table.returncode == 0 and "add_validator" in table.stdout and "CST" in table.stdout

        removed = _devnet("remove-validator", "--data", str(data), "0", "--timeout", "60")
        assert removed.returncode == 0, removed.stderr + removed.stdout
        expected = [*originals[1:], new_pub]
        assert _set_at(url) == expected
        assert _status(cluster.nodes[0].url) is None  # up stopped it
        assert read_meta(data)["nodes"][0]["removed"] is True

        # kill -9 one of the new set: 3 of 4 (30 of 40) commit on
        os.kill(int((data / "node1" / "node.pid").read_text()), signal.SIGKILL)
        live = cluster.nodes[2].url
        h0 = _status(live)["height"]
        _wait("the other three committing", timeout_s=30, check=
               lambda: (_status(live) or {}).get("height", 0) >= h0 + 3)

        # node2 prepares a key rotation (new key beside the old one, named in its config);
        # the restart below loads it
        prepared = _mutual("node", "rotate-key", "--home", str(data / "node2"), "--no-submit")
        assert prepared.returncode == 0, prepared.stderr
        rotated_pub = json.loads(prepared.stdout)["new_pub_key"]

        # restart everything: the same set, node0 stays retired, node1 back
        up.stop()
        assert all(_status(n.url) is None for n in cluster.nodes)
        up.start()
        urls = [Cluster.open(data).nodes[i].url for i in (1, 2, 3, 4)]
        h1 = h0 + 3
        _wait("every node of the set committing again", timeout_s=60, check= lambda: all(
            (_status(u) or {}).get("height", 0) >= h1 + 2 for u in urls))
        h = _status(urls[0])["height"]
        assert _set_at(urls[0], h) == expected and _set_at(urls[3], h) == expected
        assert _status(cluster.nodes[0].url) is None

        # node2's own operator rotates its key: it passes at once, the new key signs
        rotation = _mutual("node", "rotate-key", "--home", str(data / "node2"))
        assert rotation.returncode == 0, rotation.stderr
        assert json.loads(rotation.stdout)["new_pub_key"] == rotated_pub
        after = [rotated_pub if k == originals[2] else k for k in expected]
        _wait("the rotated key in /validators", timeout_s=30, check= lambda: _set_at(urls[0]) == after)

        def rotated_signs() -> bool:
            h = _status(urls[0])["height"]
            vals = _set_at(urls[0], h)
            if vals != after:
                return False
            cert = Client(urls[0])._request("GET", f"/certificates/{h}")
            return any(s[0] == vals.index(rotated_pub) for s in cert["sigs"])

        _wait("a certificate signed by node2's new key", timeout_s=30, check= rotated_signs)

        audit = subprocess.run(
            [sys.executable, "-m", "mutual", "audit", "--node", urls[1], "--genesis",
             str(data / "genesis.json")], cwd=ROOT, text=True, capture_output=True,
            timeout=120)
        assert audit.returncode == 0, audit.stderr + audit.stdout
    finally:
        up.stop()
