"""The dependency rules of DESIGN.md and docs/architecture.md, checked on the source.

Each package may import only the packages of its row in ``MAY_IMPORT`` (the table of
docs/architecture.md); ``contracts`` and ``consensus`` are pure; nothing but
``node/store/`` knows plyvel; nothing but ``p2p/``, ``node/`` and ``client/`` know aiohttp.
The one reach across a door: ``audit`` replays with the node's own executor and reads a
stopped node's store, and nothing else of ``node``. No exemptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_consensus_purity import imported_modules

ROOT = Path(__file__).resolve().parent.parent
OURS = {"chain", "contracts", "consensus", "p2p", "node", "client", "audit", "mutual", "devnet"}
MAY_IMPORT: dict[str, set[str]] = {
    "chain": set(),
    "contracts": {"chain"},
    "consensus": {"chain"},
    "p2p": {"chain"},
    "client": {"chain", "contracts"},
    "node": {"chain", "contracts", "consensus", "p2p", "client"},
    "audit": {"chain", "contracts", "client", "node"},  # node: see AUDIT_MAY_USE_OF_NODE
    "mutual": OURS - {"mutual", "devnet"},
    "devnet": OURS - {"mutual"},
}
# the one definition of a valid block, and the stored format of a node's data
AUDIT_MAY_USE_OF_NODE = ("node.executor", "node.store")
IMPURE = {"asyncio", "aiohttp", "plyvel", "socket", "time", "random", "os", "secrets",
          "threading", "subprocess", "io", "pathlib", "shutil", "tempfile", "select",
          "selectors", "uuid"}
# datetime is allowed for calendar arithmetic (CST dates from block time), never its clock
CLOCK_CALLS = (".now(", ".today(", ".utcnow(", "fromtimestamp(")


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _full_imports(path: Path) -> set[str]:
    """Every module an absolute import names, in full (``node.store.wal``, not ``node``),
    with ``from pkg import mod`` counted as ``pkg.mod``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_package_is_in_the_table() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(MAY_IMPORT), "a new package needs its row in MAY_IMPORT"
    assert {p.name for p in ROOT.glob("*.py")} == {"setup.py"}, "code belongs in a package"


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_its_row_allows(package: str) -> None:
    files = _files(package)
    assert files
    allowed = MAY_IMPORT[package] | {package}
    for path in files:
        bad = imported_modules(path) & OURS - allowed
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_audit_uses_only_the_executor_and_the_store_of_node() -> None:
    for path in _files("audit"):
        for name in _full_imports(path):
            if name == "node" or name.startswith("node."):
                assert name.startswith(AUDIT_MAY_USE_OF_NODE), \
                    f"{path.relative_to(ROOT)} imports {name}"


def test_what_audit_reuses_of_node_stays_below_the_process() -> None:
    # the executor and the store must not pull the validator process (api, driver, p2p)
    # into the auditor's door
    for path in [ROOT / "node" / "executor.py", *_files("node/store")]:
        for name in _full_imports(path):
            if name.startswith("node."):
                assert name.startswith("node.store"), f"{path.relative_to(ROOT)} imports {name}"
            assert not name.startswith(("p2p", "aiohttp")), f"{path.relative_to(ROOT)}: {name}"


@pytest.mark.parametrize("package", ["contracts", "consensus"])
def test_pure_packages_do_no_io(package: str) -> None:
    # the simulator (consensus/sim/) is a tool: it may read the clock to report its run
    # time (tests/test_consensus_purity.py holds it off the network and storage)
    files = [p for p in _files(package) if "sim" not in p.relative_to(ROOT).parts]
    assert len(files) >= 8
    for path in files:
        mods = imported_modules(path)
        bad = mods & (IMPURE | {"<open>", "<exec>", "<eval>", "<__import__>"})
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        text = path.read_text()
        assert not [c for c in CLOCK_CALLS if c in text], \
            f"{path.relative_to(ROOT)} reads a clock"


def test_chain_does_no_networking_and_keeps_no_clock() -> None:
    for path in _files("chain"):
        mods = imported_modules(path)
        assert not mods & {"asyncio", "aiohttp", "plyvel", "socket", "random", "time"}, \
            path.relative_to(ROOT)


def test_only_node_store_knows_plyvel() -> None:
    for package in MAY_IMPORT:
        for path in _files(package):
            if "plyvel" in imported_modules(path):
                assert path.is_relative_to(ROOT / "node" / "store"), path.relative_to(ROOT)


def test_only_p2p_node_and_client_know_aiohttp() -> None:
    for package in set(MAY_IMPORT) - {"p2p", "node", "client"}:
        for path in _files(package):
            assert "aiohttp" not in imported_modules(path), path.relative_to(ROOT)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("from node.api import Api\nfrom node import store\nimport plyvel\n")
    assert _full_imports(sample) == {"node.api.Api", "node.store", "plyvel"}
    assert imported_modules(sample) & OURS - MAY_IMPORT["audit"] == set()
    assert not all(n.startswith(AUDIT_MAY_USE_OF_NODE) for n in _full_imports(sample)
                   if n.startswith("node"))


def test_the_driver_sees_the_node_only_through_its_host_protocol() -> None:
    # node/driver.py knows the node process as DriverHost alone (not even for type checking)
    for name in _full_imports(ROOT / "node" / "driver.py"):
        assert not name.startswith(("node.node", "node.api", "node.sync")), \
            f"node/driver.py imports {name}"


def test_node_still_has_everything_driver_host_names() -> None:
    # Node satisfies DriverHost structurally: a renamed method or attribute shows here
    from node.driver import DriverHost
    from node.node import Node

    source = (ROOT / "node" / "node.py").read_text()
    for name in DriverHost.__annotations__:
        assert f"self.{name} = " in source, f"Node sets no {name}"
    methods = [n for n, v in vars(DriverHost).items() if callable(v) and not n.startswith("_")]
    assert len(methods) == 6
    for name in methods:
        assert callable(getattr(Node, name, None)), f"Node has no method {name}"
