"""``python -m devnet bench``: sustained throughput and latency of a fresh devnet.

In one run: the Ed25519 verify rate of this machine; the highest offered rate at which at
least 99 % of the transactions commit within 3 s of being offered (rates double
until one fails, then one bisection step between the last pass and the failure); and
submit-to-commit latency at half that rate. Prints a final JSON line with
``ceiling_tps = cores × verify_per_s / validators`` (every validator verifies every
transaction once, so this is what signature checking alone would allow) and
``ratio = tps / ceiling_tps``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from audit.verifyrate import measure_verify_rate
from devnet.cluster import Cluster, ClusterError
from devnet.load import TxFactory, run_load

IN_TIME_S = 3.0


def main(args: argparse.Namespace) -> int:
    cores = os.cpu_count() or 1
    verify_per_s = measure_verify_rate(1.0)
    print(f"Ed25519 verify on this machine: {verify_per_s:,.0f}/s per core, {cores} cores")
    with tempfile.TemporaryDirectory(prefix="mutual-bench-") as tmp:
        try:
            cluster = Cluster.create(Path(tmp) / "devnet", validators=args.validators,
                                     base_port=args.base_port, registrars=64)
            cluster.start(wait_s=60)
            cluster.wait_height(1, timeout_s=60)
        except ClusterError as exc:
            print(f"devnet bench: error: {exc}", file=sys.stderr)
            return 2
        try:
            factory = TxFactory(cluster, salt=b"bench" + str(time.time()).encode())
            step = args.step_seconds

            def drain() -> None:
                """Let the previous step's backlog commit before measuring the next."""
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    if all(n.client.status()["mempool_txs"] == 0 for n in cluster.nodes):
                        return
                    time.sleep(0.5)

            def passes(rate: float) -> tuple[bool, dict]:
                drain()
                r = run_load(cluster, rate, step, factory, grace_s=IN_TIME_S)
                s = r.summary()
                ok = r.in_time_fraction >= 0.99
                print(f"  offered {rate:7.0f} tx/s → in time {s['in_time_fraction']:.1%} "
                      f"({s['committed_tps']} tx/s), p50 {s['p50_s']}s p99 {s['p99_s']}s "
                      f"{'PASS' if ok else 'FAIL'}")
                return ok, s

            print(f"finding the sustained rate ({step:g}s steps) …")
            rate, best, failed = 100.0, 0.0, None
            while rate <= 20000:
                ok, _ = passes(rate)
                if not ok:
                    failed = rate
                    break
                best = rate
                rate *= 2
            if failed is not None and best > 0:
                mid = (best + failed) / 2
                ok, _ = passes(mid)
                if ok:
                    best = mid
            half = max(best / 2, 10.0)
            print(f"latency at half the sustained rate ({half:.0f} tx/s) …")
            drain()
            r = run_load(cluster, half, max(step, 10.0), factory, grace_s=IN_TIME_S)
            s = r.summary()
            ceiling = cores * verify_per_s / args.validators
            out = {"validators": args.validators, "tps": round(best, 1),
                   "ceiling_tps": round(ceiling, 1),
                   "ratio": round(best / ceiling, 3) if ceiling else None,
                   "p50_s": s["p50_s"], "p99_s": s["p99_s"], "cores": cores,
                   "verify_per_s": round(verify_per_s)}
            print(f"sustained {best:.0f} tx/s (ceiling {ceiling:.0f}); at {half:.0f} tx/s "
                  f"p50 {s['p50_s']}s p99 {s['p99_s']}s")
            print(json.dumps(out))
            return 0
        finally:
            cluster.stop()
