"""The consensus package does no I/O: no networking, clocks, randomness, files or LevelDB."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "consensus"
# the core may not import these, directly or by "from x import y"
FORBIDDEN = {"asyncio", "aiohttp", "plyvel", "socket", "time", "random", "os", "secrets",
             "threading", "subprocess", "io", "pathlib", "shutil", "tempfile", "select",
             "selectors", "datetime", "uuid", "contracts", "node", "p2p", "devnet"}
# the simulator (consensus/sim*.py, consensus/sim/) is a command-line tool: it may read the clock to report
# its run time, but it must not touch the network or storage either
FORBIDDEN_IN_SIM = {"asyncio", "aiohttp", "plyvel", "socket", "contracts", "node", "p2p"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                "__import__", "open", "exec", "eval"):
            names.add(f"<{node.func.id}>")
    return names


def test_core_modules_import_nothing_impure() -> None:
    files = [p for p in PACKAGE.glob("*.py") if not p.name.startswith("sim")]
    assert len(files) >= 8
    for path in files:
        bad = imported_modules(path) & (FORBIDDEN | {"<__import__>", "<open>", "<exec>",
                                                    "<eval>"})
        assert not bad, f"{path.name} uses {sorted(bad)}"


def test_simulator_modules_stay_off_the_network() -> None:
    sim_files = [*PACKAGE.glob("sim*.py"), *PACKAGE.glob("sim/**/*.py")]
    for path in sim_files:
        bad = imported_modules(path) & FORBIDDEN_IN_SIM
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_the_checker_sees_forbidden_imports(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import os.path\nfrom time import monotonic\nimport chain\nopen('f')\n")
    assert imported_modules(sample) == {"os", "time", "chain", "<open>"}


def test_importing_consensus_loads_no_networking_modules() -> None:
    code = (
        "import sys\n"
        "import consensus.machine, consensus.signer, consensus.votes, consensus.proposer\n"
        "import consensus.events, consensus.certificate, consensus.script\n"
        "bad = [m for m in ('asyncio', 'aiohttp', 'plyvel', 'socket') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == ""
