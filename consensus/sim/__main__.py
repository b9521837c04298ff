"""``python -m consensus.sim``: run seeded Byzantine scenarios, or the bench.

Prints a table per fault family and a final JSON line::

    {"scenarios": K, "violations": 0, "heights_committed": ..., "evidence": ...,
     "set_changes": ..., "seconds": ...}

and exits 1 on any violation after printing the first bad scenario's seed, violations,
replay command and the last ``--trace`` lines of its trace. See docs/simulator.md.

The wall clock (``time.perf_counter``) is read only here, to report seconds; it never
reaches a simulation, which runs on simulated time alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from consensus.sim.bench import format_bench, run_bench
from consensus.sim.cluster import LIVENESS_MS
from consensus.sim.faults import FAMILIES
from consensus.sim.runner import (
    format_table,
    format_trace,
    parse_families,
    replay_command,
    run_many,
    run_scenario,
)


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--validators takes integers: {text!r}") from exc
    if not sizes or any(not 1 <= n <= 200 for n in sizes):
        raise argparse.ArgumentTypeError("--validators must be in 1..200")
    return sizes


def _families(text: str) -> list[str]:
    try:
        return parse_families(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m consensus.sim",
        description="Deterministic Byzantine simulations of the consensus core.")
    p.add_argument("--validators", type=_sizes, default=[4], metavar="N[,N...]",
                   help="cluster size(s); several sizes are used in turn (default 4)")
    p.add_argument("--byzantine", type=int, default=None, metavar="F",
                   help="faulty validators in Byzantine families (default f = (n-1)//3)")
    p.add_argument("--seeds", type=int, default=100, metavar="K",
                   help="number of scenarios (default 100)")
    p.add_argument("--start-seed", type=int, default=0, metavar="S")
    p.add_argument("--faults", type=_families, default=list(FAMILIES), metavar="LIST",
                   help=f"comma list or 'all' (default all): {','.join(FAMILIES)}")
    p.add_argument("--heights", type=int, default=5, metavar="H",
                   help="heights every honest validator must reach (default 5)")
    p.add_argument("--no-signatures", action="store_true",
                   help="skip Ed25519 (signatures are zero bytes and are not verified)")
    p.add_argument("--liveness-ms", type=int, default=LIVENESS_MS,
                   help=f"simulated ms after healing to finish in (default {LIVENESS_MS})")
    p.add_argument("--trace", type=int, default=80, metavar="LINES",
                   help="trace lines printed for the first bad scenario (default 80)")
    p.add_argument("--changes", action="store_true",
                   help="give every scenario a schedule of validator-set changes (add, "
                        "remove, power, key rotation, jailing; effective two heights after "
                        "the block deciding them); needs --heights >= 3")
    p.add_argument("--bench", action="store_true",
                   help="measure committed heights per second (n = 4 and 10, signatures "
                        "on and off) instead of running scenarios")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seeds < 0 or args.heights < 1 or args.liveness_ms < 1:
        print("--seeds must be >= 0, --heights and --liveness-ms >= 1", file=sys.stderr)
        return 2
    if args.bench:
        results = run_bench(time.perf_counter)
        print(format_bench(results))
        print(json.dumps({"bench": [r.to_json() for r in results]}))
        return 0
    signatures = not args.no_signatures
    t0 = time.perf_counter()
    seeds = range(args.start_seed, args.start_seed + args.seeds)
    try:
        summary = run_many(seeds, args.faults, args.validators, args.heights,
                           args.byzantine, signatures, args.liveness_ms,
                           changes=args.changes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(format_table(summary))
    bad = summary.first_bad
    if bad is not None:
        sc = bad.scenario
        print()
        print(f"FIRST BAD SCENARIO: {sc.describe()}")
        for v in bad.violations[:20]:
            print(f"  {v}")
        if len(bad.violations) > 20:
            print(f"  ... and {len(bad.violations) - 20} more")
        print(f"replay: {replay_command(sc, signatures, args.byzantine)}")
        # the run is a pure function of its seed, so a traced replay shows the same run
        replay = run_scenario(sc, signatures, trace_limit=max(args.trace, 1),
                              liveness_ms=args.liveness_ms)
        print(f"last {args.trace} trace lines (time, endpoint/validator, what happened):")
        for line in format_trace(replay.record, args.trace):
            print("  " + line)
    print(json.dumps({
        "scenarios": summary.scenarios,
        "violations": summary.violations,
        "heights_committed": summary.heights,
        "evidence": summary.evidence,
        "set_changes": summary.set_changes,
        "seconds": round(seconds, 2),
    }))
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
