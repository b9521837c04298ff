"""``python -m devnet``: a local multi-validator network in one command, and benchmarks.

Commands: ``up``, ``add-validator``, ``remove-validator``, ``load``, ``bench``,
``bench-state``.

``up`` creates keys, a genesis (devnet rule profile) and configs for N validators under
a data folder (or reuses the folder's existing devnet), starts N node processes on
loopback ports, plays the demo cycle through the API, prints the URLs, and keeps the
network running until Ctrl-C; it stops every process it started. A node that exits (or
that you kill, to watch the others carry on) is reported, with whether the rest can
still commit; ``up`` itself ends once no node is left. ``bench`` measures the network,
``bench-state`` the state and rules alone (``devnet/bench_state.py``).

While ``up`` runs, ``add-validator --data DIR`` and ``remove-validator --data DIR N``
change the validator set through governance (``devnet/governance.py``): ``up`` re-reads
``DIR/devnet.json`` every second, starts the nodes added there and stops the ones marked
removed; it records its own pid in ``DIR/up.json`` so that those commands find it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from devnet.cluster import DEFAULT_BASE_PORT, Cluster, ClusterError


def supervise(cluster: Cluster, say: Callable[[str], None], poll_s: float = 1.0,
              max_polls: int | None = None,
              on_poll: Callable[[], Iterable[int]] | None = None) -> int:
    """Watch the nodes: report each one that exits (once) and whether the validators
    still running hold a quorum of the current set, and keep the others running.
    ``on_poll`` runs first at every poll and returns the nodes it stopped on purpose (not
    reported as exits). Returns 1 once every node has exited, 0 after ``max_polls`` polls
    (None: no limit)."""
    gone: set[int] = set()
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        time.sleep(poll_s)
        if on_poll is not None:
            gone.update(on_poll())
        # a node removed from the devnet before this run was never started
        gone.update(n.index for n in cluster.nodes if getattr(n, "removed", False)
                    and n.proc is None)
        exited = [n for n in cluster.nodes if n.index not in gone and not n.alive()]
        if not exited:
            continue
        gone.update(n.index for n in exited)
        running = [n.index for n in cluster.nodes if n.index not in gone]
        for n in exited:
            code = n.proc.returncode if n.proc is not None else None
            say(f"devnet: node{n.index} exited (code {code}); its log: {n.log_path}")
        if not running:
            say("devnet: no node is left")
            return 1
        live, total = cluster.voting_power(running)
        if 3 * live > 2 * total:
            say(f"devnet: nodes {running} keep running and hold {live} of "
                f"{total} voting power, more than 2/3: the chain goes on")
        else:
            say(f"devnet: nodes {running} keep running but hold only {live} of "
                f"{total} voting power, not more than 2/3: no block commits "
                "until enough validators are back (Ctrl-C, then `make devnet` again "
                "restarts them on the same chain)")
    return 0


def follow_folder(cluster: Cluster, say: Callable[[str], None]) -> Callable[[], list[int]]:
    """``supervise``'s ``on_poll`` for ``up``: start the nodes ``add-validator`` appended to
    ``devnet.json``, stop the ones ``remove-validator`` marked removed."""
    def poll() -> list[int]:
        try:
            added, retired = cluster.refresh()
        except ClusterError as exc:
            say(f"devnet: cannot re-read {cluster.data_dir / 'devnet.json'}: {exc}")
            return []
        for i in added:
            if not cluster.nodes[i].removed:
                cluster.start_node(i)
                say(f"devnet: node{i} started (added to the devnet); API "
                    f"{cluster.nodes[i].url}, log {cluster.nodes[i].log_path}")
        for i in retired:
            code = cluster.terminate(i)
            say(f"devnet: node{i} stopped (removed from the validator set; code {code})")
        return retired

    return poll


def _up(args: argparse.Namespace) -> int:
    from devnet.demo import DemoError, run_demo

    data = Path(args.data)
    try:
        if (data / "devnet.json").exists():
            cluster = Cluster.open(data)
            print(f"reusing the devnet in {data} (remove the folder for a fresh chain)")
        else:
            cluster = Cluster.create(data, validators=args.validators, base_port=args.base_port)
            print(f"created a {args.validators}-validator devnet in {data}")
    except ClusterError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 2
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C must not cut the stop short and leave nodes behind
            print("devnet: still stopping the nodes …", file=sys.stderr, flush=True)
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # also when started from a shell that ignores SIGINT for background jobs
    signal.signal(signal.SIGINT, on_signal)
    # add-validator / remove-validator find the running devnet by this file
    up_file = cluster.data_dir / "up.json"
    up_file.write_text(json.dumps({"pid": os.getpid()}))
    try:
        cluster.start(wait_s=60)
        cluster.wait_height(1, timeout_s=60)
        print("validators:")
        for i in cluster.active:
            node = cluster.nodes[i]
            print(f"  node{node.index}: API {node.url}  p2p 127.0.0.1:{node.p2p_port}  "
                  f"log {node.log_path}")
        if not args.no_demo:
            print("\nplaying the demo through the API (block time is the only clock: "
                  "the devnet profile turns months into minutes)\n")
            try:
                run_demo(cluster)
            except (DemoError, Exception) as exc:  # keep the network up to look at
                print(f"\ndemo stopped: {exc}", file=sys.stderr)
        url = cluster.nodes[cluster.active[0]].url
        print(f"\nlook at: {url}/status  {url}/blocks/latest  {url}/metrics  "
              f"{url}/openapi.json  {url}/events")
        print(f"audit it: .venv/bin/mutual audit --node {url} --genesis "
              f"{cluster.genesis_path}")
        if args.exit_after_demo:
            return 0
        print("the network keeps running; Ctrl-C stops every node")
        print(f"change its validators: python -m devnet add-validator --data {args.data}  "
              f"|  python -m devnet remove-validator --data {args.data} N", flush=True)

        def say(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        return supervise(cluster, say, on_poll=follow_folder(cluster, say))
    except KeyboardInterrupt:
        print("\nstopping the devnet …")
        return 0
    except ClusterError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 1
    finally:
        stopping = True
        cluster.stop()
        up_file.unlink(missing_ok=True)


def _add_validator(args: argparse.Namespace) -> int:
    from devnet.governance import add_validator, run

    return run(lambda: add_validator(args.data, power=args.power, timeout_s=args.timeout))


def _remove_validator(args: argparse.Namespace) -> int:
    from devnet.governance import remove_validator, run

    return run(lambda: remove_validator(args.data, args.node, timeout_s=args.timeout))


def _load(args: argparse.Namespace) -> int:
    from devnet.load import main as load_main

    return load_main(args)


def _bench(args: argparse.Namespace) -> int:
    from devnet.bench import main as bench_main

    return bench_main(args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-state"]:
        from devnet.bench_state import main as bench_state_main

        return bench_state_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m devnet", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    up = sub.add_parser("up", help="start a local devnet and play the demo")
    up.add_argument("--validators", type=int, default=4)
    up.add_argument("--data", default="devnet-data", help="data folder (default ./devnet-data)")
    up.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    up.add_argument("--no-demo", action="store_true")
    up.add_argument("--exit-after-demo", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=_up)
    av = sub.add_parser("add-validator", help="add a validator to the devnet `up` is running: "
                                              "new node, sync, proposal, votes")
    av.add_argument("--data", default="devnet-data", help="the folder `up --data` runs")
    av.add_argument("--power", type=int, default=10)
    av.add_argument("--timeout", type=float, default=90.0, help="seconds for each wait")
    av.set_defaults(func=_add_validator)
    rv = sub.add_parser("remove-validator", help="remove node N's validator by proposal "
                                                 "and votes, then stop it")
    rv.add_argument("node", type=int, metavar="N", help="the node's number (nodeN in --data)")
    rv.add_argument("--data", default="devnet-data", help="the folder `up --data` runs")
    rv.add_argument("--timeout", type=float, default=90.0, help="seconds for each wait")
    rv.set_defaults(func=_remove_validator)
    ld = sub.add_parser("load", help="signed transaction load against all nodes")
    ld.add_argument("--rate", type=float, default=200, help="transactions per second")
    ld.add_argument("--duration", type=float, default=20, help="seconds")
    ld.add_argument("--data", help="an existing devnet folder (default: a fresh temporary one)")
    ld.add_argument("--validators", type=int, default=4)
    ld.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT + 100)
    ld.set_defaults(func=_load)
    b = sub.add_parser("bench", help="throughput and latency of a fresh 4-validator devnet")
    b.add_argument("--validators", type=int, default=4)
    b.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT + 200)
    b.add_argument("--step-seconds", type=float, default=8.0)
    b.set_defaults(func=_bench)
    # listed here for --help; its own parser takes its arguments (see main's first lines)
    sub.add_parser("bench-state", add_help=False,
                   help="the state and rules at growing member counts (bench-state --help)")
    args = p.parse_args(argv)
    if getattr(args, "validators", 1) < 1:
        p.error("--validators must be at least 1")
    if getattr(args, "power", 1) < 1:
        p.error("--power must be at least 1")
    if getattr(args, "node", 0) < 0:
        p.error("N must be a node number (0, 1, ...)")
    if not 0 < getattr(args, "timeout", 1) < float("inf"):
        p.error("--timeout must be a positive number of seconds")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
