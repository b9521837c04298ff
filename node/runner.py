"""``mutual start``: load config, genesis and keys, run the node until SIGTERM/SIGINT.

Exit codes: 0 after a clean stop, 1 when the node failed (the reason is one log line and
one line on stderr), 2 for bad configuration, genesis or key files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from chain.genesis import Genesis, GenesisError
from chain.keyfile import KeyFileError, read_key
from node import config as cfg
from node import logs
from node.node import Node, NodeError
from node.store.blockstore import BlockStoreError
from node.store.wal import WALCorruptError, WALError

log = logging.getLogger("node")


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard limit (best effort, logged).

    LevelDB's tables, peer connections, the API's clients, the WAL and the signer's state
    file all need descriptors; a common default soft limit of 1024 is low for that.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on this platform
        return
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError) as exc:
        logs.event(log, "cannot read the open files limit", logging.WARNING, error=str(exc))
        return
    # some systems refuse an infinite soft limit: then a large finite one
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        logs.event(log, "open files limit", soft=soft, hard=hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        logs.event(log, "cannot raise the open files limit", logging.WARNING, soft=soft,
                   hard=hard, error=str(exc))
        return
    logs.event(log, "open files limit raised", previous=soft, soft=target, hard=hard)


def run_node(home: Path) -> int:
    try:
        config = cfg.load(home)
        genesis = Genesis.load(config.path(config.node.genesis_file))
        node_key = read_key(config.path(config.node.node_key_file))
        vkey_file = config.node.validator_key_file
        validator_key = read_key(config.path(vkey_file)) if vkey_file else None
        next_file = config.node.next_validator_key_file
        next_key = read_key(config.path(next_file)) if next_file else None
    except (cfg.ConfigError, GenesisError, KeyFileError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log.level, config.log.format, config.node.moniker)
    raise_open_files_limit()
    node = Node(config, genesis, node_key, validator_key, next_key)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, node.request_stop)
        await node.run()

    profile_path = os.environ.get("MUTUAL_PROFILE", "").replace("{moniker}", config.node.moniker)
    profiler = None
    if profile_path:  # a developer aid: cProfile the whole node, dumped at exit
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        asyncio.run(main())
    except WALCorruptError as exc:
        print(f"mutual: error: the consensus WAL is damaged: {exc}", file=sys.stderr)
        return 1
    except (NodeError, WALError, BlockStoreError) as exc:
        print(f"mutual: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback in the log, one line for the operator
        logging.getLogger("node").exception("node crashed")
        print(f"mutual: error: node crashed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile_path)
    return 0
