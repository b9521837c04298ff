"""``python -m devnet``: a local multi-validator network in one command, and benchmarks.

Commands: ``up``, ``load``, ``bench``, ``bench-state``.

``up`` creates keys, a genesis (devnet rule profile) and configs for N validators under
a data folder (or reuses the folder's existing devnet), starts N node processes on
loopback ports, plays the demo cycle through the API, prints the URLs, and keeps the
network running until Ctrl-C; it stops every process it started. A node that exits (or
that you kill, to watch the others carry on) is reported, with whether the rest can
still commit; ``up`` itself ends once no node is left. ``bench`` measures the network,
``bench-state`` the state and rules alone (``devnet/bench_state.py``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from devnet.cluster import DEFAULT_BASE_PORT, Cluster, ClusterError


def supervise(cluster: Cluster, say: Callable[[str], None], poll_s: float = 1.0,
              max_polls: int | None = None) -> int:
    """Watch the nodes: report each one that exits (once) and whether the validators
    still running hold a quorum, and keep the others running. Returns 1 once every node
    has exited, 0 after ``max_polls`` polls (None: no limit)."""
    vset = cluster.genesis.validators
    gone: set[int] = set()
    polls = 0
    while max_polls is None or polls < max_polls:
        polls += 1
        time.sleep(poll_s)
        exited = [n for n in cluster.nodes if n.index not in gone and not n.alive()]
        if not exited:
            continue
        gone.update(n.index for n in exited)
        running = [n.index for n in cluster.nodes if n.index not in gone]
        live = vset.power_of([i for i in running if i < len(vset)])
        for n in exited:
            code = n.proc.returncode if n.proc is not None else None
            say(f"devnet: node{n.index} exited (code {code}); its log: {n.log_path}")
        if not running:
            say("devnet: no node is left")
            return 1
        if vset.has_quorum(live):
            say(f"devnet: nodes {running} keep running and hold {live} of "
                f"{vset.total_power} voting power, more than 2/3: the chain goes on")
        else:
            say(f"devnet: nodes {running} keep running but hold only {live} of "
                f"{vset.total_power} voting power, not more than 2/3: no block commits "
                "until enough validators are back (Ctrl-C, then `make devnet` again "
                "restarts them on the same chain)")
    return 0


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
    try:
        cluster.start(wait_s=60)
        cluster.wait_height(1, timeout_s=60)
        print("validators:")
        for node in cluster.nodes:
            print(f"  node{node.index}: API {node.url}  p2p 127.0.0.1:{node.p2p_port}  "
                  f"log {node.log_path}")
        if not args.no_demo:
            print("\nplaying the demo through the API (block time is the only clock: "
                  "the devnet profile turns months into minutes)\n")
            try:
                run_demo(cluster)
            except (DemoError, Exception) as exc:  # keep the network up to look at
                print(f"\ndemo stopped: {exc}", file=sys.stderr)
        url = cluster.nodes[0].url
        print(f"\nlook at: {url}/status  {url}/blocks/latest  {url}/metrics  "
              f"{url}/openapi.json  {url}/events")
        print(f"audit it: .venv/bin/mutual audit --node {url} --genesis "
              f"{cluster.genesis_path}")
        if args.exit_after_demo:
            return 0
        print("the network keeps running; Ctrl-C stops every node")
        return supervise(cluster, lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("\nstopping the devnet …")
        return 0
    except ClusterError as exc:
        print(f"devnet: error: {exc}", file=sys.stderr)
        return 1
    finally:
        stopping = True
        cluster.stop()


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
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
