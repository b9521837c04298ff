"""An interrupted ``mutual audit``: Ctrl-C (SIGINT to the whole process group, as a
terminal sends it, signature workers included) or SIGTERM while the audit runs, and an
interrupt while ``--data`` copies the database. Each ends with one line on stderr, the
JSON line last on stdout (``ok`` false, ``first_error`` saying it was interrupted), exit
code 128 + the signal number, no traceback, and no copy of the database left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import audit.replay as audit_mod
import audit.signatures as signatures_mod
import audit.sources as sources_mod
from audit import DataSource
from audit.cli import run_audit as main
from node.store.kvstore import open_kv
from tests.test_audit_builder import ChainBuilder, key, register_body

ROOT = Path(__file__).resolve().parent.parent

# Runs the real command line in a child process; the replay pauses before block 2 (after
# the 600 transactions were checked in the signature pool) so the signal lands mid-run.
HARNESS = """
import pathlib, sys, time
import audit.replay as audit
ready = pathlib.Path(sys.argv[1])
execute = audit.Auditor._execute
def paused(self, h, *args, **kwargs):
    if h == 2:
        ready.write_text("ready")
        time.sleep(60)
    return execute(self, h, *args, **kwargs)
audit.Auditor._execute = paused
from mutual.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def chain_home(tmp_path_factory) -> tuple[Path, Path]:
    """A stopped node's home with 600 transactions (enough for the signature pool) and
    the genesis file."""
    home = tmp_path_factory.mktemp("interrupt-home")
    db = home / "data" / "db"
    db.parent.mkdir(parents=True)
    kv = open_kv(db)
    b = ChainBuilder(kv=kv)
    for blk in range(2):
        b.commit([b.tx(b.registrar, "register_member",
                       register_body(key(f"i{blk}-{i}"), blk * 1000 + i))
                  for i in range(300)])
    b.commit([])
    kv.close()
    gpath = home / "genesis.json"
    b.genesis.dump(gpath)
    return home, gpath


def _leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir()
                  if p.name.startswith(("mutual-audit-", "mutual-replay-")))


def _run_and_signal(chain_home, tmp_path: Path, sig: int, whole_group: bool,
                    extra: list[str]) -> tuple[int, str, str, Path]:
    home, gpath = chain_home
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ready = tmp_path / "ready"
    env = {**os.environ, "TMPDIR": str(tmp), "MUTUAL_AUDIT_WORKERS": "1",
           "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", HARNESS, str(ready), "audit", "--data", str(home),
            "--genesis", str(gpath), *extra]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out, err = proc.communicate(timeout=10)
                pytest.fail(f"the audit did not reach block 2 (rc {proc.returncode}):\n"
                            f"{out}\n{err}")
            time.sleep(0.05)
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # the forkserver and its workers are in the child's process group; they exit
        # with it, this only makes sure of it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err, tmp


def _main_not_raising(args, out, err) -> int:
    try:
        return main(args, out, err)
    except KeyboardInterrupt:
        pytest.fail("mutual audit let the KeyboardInterrupt through")


def _check_interrupted(rc: int, out: str, err: str, tmp: Path, sig: int) -> dict:
    assert rc == 128 + sig, (rc, out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["ok"] is False
    first = doc["first_error"]
    assert first["height"] == 2 and "interrupted" in first["what"], first
    assert signal.Signals(sig).name in first["what"]
    assert doc["blocks"] == 1
    assert _leftovers(tmp) == []
    return doc


def test_ctrl_c_to_the_process_group_during_the_pooled_audit(chain_home, tmp_path) -> None:
    rc, out, err, tmp = _run_and_signal(chain_home, tmp_path, signal.SIGINT,
                                        whole_group=True, extra=["--json"])
    doc = _check_interrupted(rc, out, err, tmp, signal.SIGINT)
    assert doc["workers"] == 1  # the signature pool was running when the signal came
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mutual audit: interrupted"), err
    assert "height 2" in lines[0]


def test_sigterm_during_the_audit(chain_home, tmp_path) -> None:
    rc, out, err, tmp = _run_and_signal(chain_home, tmp_path, signal.SIGTERM,
                                        whole_group=False, extra=[])
    _check_interrupted(rc, out, err, tmp, signal.SIGTERM)
    assert "FAILED at height 2" in out  # the readable report comes before the JSON line
    assert [ln for ln in err.splitlines() if ln.startswith("mutual audit: interrupted")]


def test_ctrl_c_during_an_on_disk_replay_leaves_no_replay(chain_home, tmp_path) -> None:
    # --work-dir: the replay's database is removed like the --data copy
    work = tmp_path / "tmp"
    rc, out, err, tmp = _run_and_signal(chain_home, tmp_path, signal.SIGINT,
                                        whole_group=True,
                                        extra=["--json", "--work-dir", str(work)])
    _check_interrupted(rc, out, err, tmp, signal.SIGINT)


def test_ctrl_c_while_the_database_is_copied_leaves_no_copy(chain_home, tmp_path,
                                                            monkeypatch) -> None:
    home, _ = chain_home
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    copytree = sources_mod.shutil.copytree

    def interrupted_copy(src, dst, **kwargs):
        copytree(src, dst, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(sources_mod.shutil, "copytree", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        DataSource(home)
    assert _leftovers(tmp) == []

    # and through the command: one line, the JSON line, 130
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(node=None, data=str(home), genesis=str(chain_home[1]),
                           json=True, timeout=5.0)
    assert _main_not_raising(args, out, err) == 130
    assert _leftovers(tmp) == []
    assert err.getvalue().startswith("mutual audit: interrupted") and \
        len(err.getvalue().splitlines()) == 1
    doc = json.loads(out.getvalue().strip().splitlines()[-1])
    assert doc["ok"] is False and "interrupted" in doc["first_error"]["what"]


def test_ctrl_c_during_the_run_in_process(chain_home, tmp_path, monkeypatch) -> None:
    home, gpath = chain_home
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("MUTUAL_AUDIT_WORKERS", "0")
    execute = audit_mod.Auditor._execute

    def interrupted(self, h, *args, **kwargs):
        if h == 2:
            raise KeyboardInterrupt
        return execute(self, h, *args, **kwargs)

    monkeypatch.setattr(audit_mod.Auditor, "_execute", interrupted)
    out, err = io.StringIO(), io.StringIO()
    args = SimpleNamespace(node=None, data=str(home), genesis=str(gpath), json=True,
                           timeout=5.0)
    assert _main_not_raising(args, out, err) == 130
    assert _leftovers(tmp) == []
    assert err.getvalue() == "mutual audit: interrupted by SIGINT at height 2 (blocks up " \
                             "to 1 were checked)\n"
    doc = json.loads(out.getvalue().strip().splitlines()[-1])
    assert doc["ok"] is False and doc["blocks"] == 1
    assert doc["first_error"]["height"] == 2


def test_signature_workers_ignore_sigint(monkeypatch) -> None:
    monkeypatch.setattr(signatures_mod, "_W_CHAIN", signatures_mod._W_CHAIN)
    before = signal.getsignal(signal.SIGINT)
    try:
        signatures_mod._init_worker("c")
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_the_sigterm_handler_is_restored_after_the_audit(chain_home, tmp_path) -> None:
    home, gpath = chain_home
    before = signal.getsignal(signal.SIGTERM)
    args = SimpleNamespace(node=None, data=str(home), genesis=str(gpath), json=True,
                           timeout=5.0)
    assert main(args, io.StringIO(), io.StringIO()) == 0
    assert signal.getsignal(signal.SIGTERM) is before


class _StalledNode:
    """A loopback HTTP stand-in for a node that answers /status and then never answers a
    block request (until closed)."""

    def __init__(self, genesis_hash: str) -> None:
        import http.server
        import threading

        release = self.release = threading.Event()
        asked = self.asked = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path.startswith("/status"):
                    body = json.dumps({"height": 5, "genesis_hash": genesis_hash,
                                       "chain_id": "x"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                asked.set()
                release.wait(60)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_ctrl_c_while_a_node_stalls_does_not_wait_for_the_fetches(chain_home, tmp_path) -> None:
    # --node fetches blocks in threads; Ctrl-C must not wait out their --timeout
    from chain.genesis import Genesis

    _, gpath = chain_home
    stub = _StalledNode(Genesis.load(gpath).hash.hex())
    proc = subprocess.Popen(
        [sys.executable, "-m", "mutual", "audit", "--node", stub.url, "--genesis",
         str(gpath), "--timeout", "45", "--json"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert stub.asked.wait(30), "the audit never asked for a block"
        time.sleep(0.2)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=40)
        waited = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        stub.close()
    assert proc.returncode == 128 + signal.SIGINT, (out, err)
    assert "Traceback" not in err, err
    assert json.loads(out.strip().splitlines()[-1])["ok"] is False
    assert waited < 10, f"exited {waited:.1f} s after Ctrl-C"
