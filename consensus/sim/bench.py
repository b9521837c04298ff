"""Throughput of the consensus logic in the simulator: committed heights per second.

Each case runs one fault-free cluster (``none`` family: a synchronous network, 1-10 ms
links) for a fixed number of heights, with real Ed25519 signatures (every proposal and
vote signed and verified) or with signatures off (64 zero bytes, nothing verified), and
reports

* ``heights_per_s`` and ``ms_per_height``: wall time of the whole simulation (all n
  machines, the network, the scheduler and the recording) per committed height;
* ``core_ms_per_height``: the part of it spent inside ``ConsensusMachine.start_height`` and
  ``handle`` (all n machines together), i.e. the logic itself.

This module takes the wall clock as an argument, so it stays free of ``time``; only the
command line (``consensus.sim.__main__``) passes ``time.perf_counter``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from consensus.sim.checks import check_run
from consensus.sim.cluster import Cluster
from consensus.sim.faults import Scenario


@dataclass(frozen=True)
class BenchResult:
    n: int
    signatures: bool
    heights: int
    seconds: float
    core_seconds: float
    events: int

    @property
    def heights_per_s(self) -> float:
        return self.heights / self.seconds if self.seconds > 0 else float("inf")

    @property
    def ms_per_height(self) -> float:
        return 1000 * self.seconds / self.heights

    @property
    def core_ms_per_height(self) -> float:
        return 1000 * self.core_seconds / self.heights

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(heights_per_s=round(self.heights_per_s, 1),
                 ms_per_height=round(self.ms_per_height, 3),
                 core_ms_per_height=round(self.core_ms_per_height, 3),
                 seconds=round(self.seconds, 3), core_seconds=round(self.core_seconds, 3))
        return d


def bench_case(n: int, signatures: bool, heights: int, clock: Callable[[], float],
               seed: int = 0) -> BenchResult:
    """Run ``heights`` heights on a clean ``n``-validator cluster and time it."""
    sc = Scenario(seed, "none", n, heights, ("honest",) * n)
    cluster = Cluster(sc, signatures=signatures, trace_limit=0, core_clock=clock)
    t0 = clock()
    rec = cluster.run()
    seconds = clock() - t0
    violations = check_run(rec)
    if violations:  # a benchmark of a broken run would be meaningless
        raise RuntimeError(f"bench run violated invariants: {violations[0]}")
    top = min(max(rec.commits[ep], default=0) for ep in rec.honest)
    return BenchResult(n, signatures, top, seconds, cluster.core_seconds, rec.events)


def run_bench(clock: Callable[[], float], sizes: Sequence[int] = (4, 10),
              heights_signed: int = 100, heights_unsigned: int = 500) -> list[BenchResult]:
    """All cases: every size with signatures on and off."""
    out = []
    for n in sizes:
        out.append(bench_case(n, True, heights_signed, clock))
        out.append(bench_case(n, False, heights_unsigned, clock))
    return out


def format_bench(results: Sequence[BenchResult]) -> str:
    head = (f"{'n':>3} {'signatures':>10} {'heights':>8} {'heights/s':>10} "
            f"{'ms/height':>10} {'core ms/height':>15} {'events/height':>14}")
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{r.n:>3} {('on' if r.signatures else 'off'):>10} {r.heights:>8} "
                     f"{r.heights_per_s:>10.1f} {r.ms_per_height:>10.3f} "
                     f"{r.core_ms_per_height:>15.3f} {r.events / r.heights:>14.1f}")
    return "\n".join(lines)
