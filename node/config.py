"""The node's TOML configuration: every option, its default, and clear errors on bad input.

``mutual init`` writes ``config.toml`` from ``render_default`` (every option present and
commented); ``load`` reads it back, fills defaults for anything missing, and refuses unknown
sections or keys and wrongly typed values with one readable line naming the option.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from contracts.tree import DEFAULT_NODE_CACHE


class ConfigError(ValueError):
    """The configuration file is missing, malformed or has an invalid option."""


@dataclass
class NodeSection:
    moniker: str = "node"
    genesis_file: str = "genesis.json"
    validator_key_file: str = "validator_key.json"
    next_validator_key_file: str = ""
    node_key_file: str = "node_key.json"
    data_dir: str = "data"


@dataclass
class ApiSection:
    listen: str = "127.0.0.1:26657"
    max_body_bytes: int = 1024 * 1024
    commit_timeout_s: int = 30


@dataclass
class P2PSection:
    listen: str = "127.0.0.1:26656"
    persistent_peers: list[str] = field(default_factory=list)
    allowed_keys: list[str] = field(default_factory=list)
    max_peers: int = 50
    send_queue: int = 2000
    max_frame_bytes: int = 8 * 1024 * 1024


@dataclass
class MempoolSection:
    max_txs: int = 20000
    max_bytes: int = 64 * 1024 * 1024
    max_per_sender: int = 128


@dataclass
class ConsensusSection:
    empty_block_interval_ms: int = 1000


# state roots a node keeps readable: the latest, and the one before it that proofs are
# served against (the latest header commits to the state after its parent), with margin
DEFAULT_STATE_HISTORY = 8


@dataclass
class StorageSection:
    cache_mb: int = 32
    max_open_files: int = 1000
    compression: str = "none"
    state_history: int = DEFAULT_STATE_HISTORY
    state_cache_groups: int = DEFAULT_NODE_CACHE


@dataclass
class LogSection:
    level: str = "info"
    format: str = "json"


@dataclass
class Config:
    node: NodeSection = field(default_factory=NodeSection)
    api: ApiSection = field(default_factory=ApiSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    mempool: MempoolSection = field(default_factory=MempoolSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    storage: StorageSection = field(default_factory=StorageSection)
    log: LogSection = field(default_factory=LogSection)
    home: Path = field(default=Path("."), repr=False)

    def path(self, relative: str) -> Path:
        """Resolve a path option relative to the node's home directory."""
        p = Path(relative)
        return p if p.is_absolute() else self.home / p


_HELP = {
    "node": {
        "moniker": "a human-readable name for this node, used in logs",
        "genesis_file": "the genesis document (relative paths are relative to the home dir)",
        "validator_key_file": "the consensus signing key; leave empty to run a non-validator",
        "next_validator_key_file": "a second consensus key, for a key rotation: at each "
                                   "height the node signs with whichever of the two keys "
                                   "that height's validator set holds (docs/node.md); "
                                   "empty: none",
        "node_key_file": "the peer-to-peer identity key",
        "data_dir": "LevelDB database, consensus WAL and signer state live here",
    },
    "api": {
        "listen": "HTTP API address host:port (keep it on loopback unless fronted by a proxy)",
        "max_body_bytes": "largest request body accepted",
        "commit_timeout_s": "how long POST /txs?mode=commit waits for the block",
    },
    "p2p": {
        "listen": "peer-to-peer listen address host:port",
        "persistent_peers": 'peers to dial and keep dialling, e.g. ["127.0.0.1:26656"]',
        "allowed_keys": "node keys (hex) allowed to connect besides the genesis validators'",
        "max_peers": "most connected peers",
        "send_queue": "per-peer bounded send queue length (messages)",
        "max_frame_bytes": "largest frame accepted from a peer",
    },
    "mempool": {
        "max_txs": "most transactions held",
        "max_bytes": "most transaction bytes held",
        "max_per_sender": "most pending transactions per sender",
    },
    "consensus": {
        "empty_block_interval_ms": "with no transaction waiting, start the next height only "
                                   "after this long (blocks are still made so the clock moves)",
    },
    "storage": {
        "cache_mb": "LevelDB block cache (MiB)",
        "max_open_files": "LevelDB tables kept open (at least 74), each holding its index "
                          "and filter blocks in memory (~30 KB per 2 MB table). Where the "
                          "node could not switch LevelDB to pread (the 'node started' log "
                          "line says leveldb_table_reads=mmap), open tables are mapped and "
                          "RSS grows towards (max_open_files - 10) x 2 MiB of clean page "
                          "cache: lower it there (README, Memory)",
        "compression": "none | snappy: snappy makes the database ~40 % smaller and costs "
                       "CPU on every flush and compaction (1M members: 1.4 GB loaded in "
                       "19 s without, 0.8 GB in 34 s with, on 2 cores)",
        "state_history": "state roots kept readable (at least 2: proofs are served against "
                         "the root before the latest); records only older roots need are "
                         "deleted as blocks commit. 0 keeps every root (an archive node; "
                         "the database then grows with every changed key, ~5 MB per "
                         "1,000-join block at a million members)",
        "state_cache_groups": "deep state-tree groups kept in memory, about 290 bytes each; "
                              "a million members make ~730,000, so the default holds them "
                              "all and an update reads no group from LevelDB (with 600,000 "
                              "at that size, deliver_tx ran ~35 % slower)",
    },
    "log": {
        "level": "debug | info | warning | error",
        "format": "json (one object per line) | text",
    },
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(config: Config) -> str:
    """A complete, commented config.toml for ``config``."""
    lines = ["# mutual-ledger node configuration. Every option is listed with its default.", ""]
    for section in _HELP:  # every section, in the order they are documented
        lines.append(f"[{section}]")
        obj = getattr(config, section)
        for f in fields(obj):
            lines.append(f"# {_HELP[section][f.name]}")
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def render_default() -> str:
    return render(Config())


def parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what}: expected host:port, got {text!r}")
    return host, int(port)


# integer options where 0 means something (state_history: keep every root)
_ZERO_ALLOWED = {("storage", "state_history")}


def from_dict(doc: dict[str, Any], home: Path) -> Config:
    config = Config(home=home)
    for section, values in doc.items():
        if section not in _HELP:
            raise ConfigError(f"unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table")
        obj = getattr(config, section)
        types = {f.name: f.type for f in fields(obj)}
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"[{section}] unknown option {key!r}")
            default = getattr(obj, key)
            if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
                value, type(default)
            ):
                raise ConfigError(
                    f"[{section}] {key}: expected {type(default).__name__}, got {value!r}"
                )
            if isinstance(default, list) and not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{section}] {key}: expected a list of strings")
            if isinstance(default, int) and (section, key) in _ZERO_ALLOWED:
                if value < 0:
                    raise ConfigError(f"[{section}] {key}: must not be negative")
            elif isinstance(default, int) and value <= 0:
                raise ConfigError(f"[{section}] {key}: must be positive")
            setattr(obj, key, value)
    parse_hostport(config.api.listen, "[api] listen")
    parse_hostport(config.p2p.listen, "[p2p] listen")
    for peer in config.p2p.persistent_peers:
        parse_hostport(peer, "[p2p] persistent_peers")
    for key in config.p2p.allowed_keys:
        try:
            if len(bytes.fromhex(key)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError(f"[p2p] allowed_keys: {key!r} is not a 64-hex public key") from None
    if config.storage.max_open_files < 74:
        raise ConfigError("[storage] max_open_files: LevelDB needs at least 74")
    if config.storage.state_history == 1:
        raise ConfigError("[storage] state_history: 0 (keep every root) or at least 2")
    if config.storage.compression not in ("none", "snappy"):
        raise ConfigError(
            f"[storage] compression: {config.storage.compression!r} is not none|snappy")
    if config.log.level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"[log] level: {config.log.level!r} is not debug|info|warning|error")
    if config.log.format not in ("json", "text"):
        raise ConfigError(f"[log] format: {config.log.format!r} is not json|text")
    return config


def load(home: str | Path) -> Config:
    """Load ``<home>/config.toml``."""
    home = Path(home)
    path = home / "config.toml"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (run `mutual init --home {home}` first)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return from_dict(doc, home)
