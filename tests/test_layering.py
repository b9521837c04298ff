"""The dependency rules of DESIGN.md, checked on the source: contracts is pure and imports
only chain; chain imports only the standard library, msgpack and cryptography; nothing but
node knows plyvel; nothing but p2p and node know aiohttp or sockets."""

from __future__ import annotations

from pathlib import Path

from tests.test_consensus_purity import imported_modules

ROOT = Path(__file__).resolve().parent.parent
IMPURE = {"asyncio", "aiohttp", "plyvel", "socket", "time", "random", "os", "secrets",
          "threading", "subprocess", "io", "pathlib", "shutil", "tempfile", "select",
          "selectors", "uuid"}
# datetime is allowed for calendar arithmetic (CST dates from block time), never its clock
CLOCK_CALLS = (".now(", ".today(", ".utcnow(", "fromtimestamp(")
OUR_PACKAGES = {"chain", "contracts", "consensus", "p2p", "node", "devnet"}


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_contracts_is_pure_and_depends_only_on_chain() -> None:
    # contracts/bench.py is a command-line benchmark that drives the rules on LevelDB; it
    # is a tool beside the package, not part of what validators execute
    files = [p for p in _files("contracts") if p.name != "bench.py"]
    assert len(files) >= 10
    for path in files:
        mods = imported_modules(path)
        assert not mods & (IMPURE | {"<open>", "<exec>", "<eval>", "<__import__>"}), \
            f"{path.relative_to(ROOT)} imports {sorted(mods & IMPURE)}"
        assert mods & OUR_PACKAGES <= {"chain", "contracts"}, \
            f"{path.relative_to(ROOT)} imports {sorted(mods & OUR_PACKAGES)}"
        text = path.read_text()
        assert not [c for c in CLOCK_CALLS if c in text], \
            f"{path.relative_to(ROOT)} reads a clock"


def test_chain_depends_on_nothing_of_ours_and_no_io() -> None:
    for path in _files("chain"):
        mods = imported_modules(path)
        assert mods & OUR_PACKAGES <= {"chain"}, path.name
        assert not mods & {"asyncio", "aiohttp", "plyvel", "socket", "random"}, path.name


def test_only_node_knows_plyvel_and_only_p2p_and_node_know_the_network() -> None:
    for package in ("chain", "contracts", "consensus", "p2p", "devnet"):
        for path in _files(package):
            assert "plyvel" not in imported_modules(path), path.relative_to(ROOT)
    for package in ("chain", "contracts", "consensus", "devnet"):
        for path in _files(package):
            assert "aiohttp" not in imported_modules(path), path.relative_to(ROOT)


def test_p2p_does_not_reach_into_the_node_or_the_rules() -> None:
    for path in _files("p2p"):
        assert not imported_modules(path) & {"node", "contracts", "consensus", "devnet"}, \
            path.relative_to(ROOT)
