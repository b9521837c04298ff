"""Prometheus metrics of one node (served at GET /metrics).

Each node gets its own registry so tests can run several nodes in one process.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """The node's gauges, counters and histograms."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.height = Gauge("mutual_height", "Latest committed block height", registry=r)
        self.round = Gauge("mutual_consensus_round", "Current consensus round", registry=r)
        self.block_interval = Histogram(
            "mutual_block_interval_seconds", "Seconds between consecutive commits",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.block_txs = Histogram(
            "mutual_block_txs", "Transactions per committed block",
            buckets=(0, 1, 10, 50, 100, 500, 1000, 2000, 5000), registry=r)
        self.txs_committed = Counter("mutual_txs_committed_total", "Committed transactions",
                                     registry=r)
        self.txs_rejected = Counter("mutual_txs_rejected_total",
                                    "Transactions refused at submission", ["code"], registry=r)
        self.mempool_size = Gauge("mutual_mempool_txs", "Transactions in the mempool", registry=r)
        self.mempool_bytes = Gauge("mutual_mempool_bytes", "Bytes in the mempool", registry=r)
        self.peers = Gauge("mutual_peers", "Connected peers", registry=r)
        self.missed_votes = Counter(
            "mutual_missed_precommits_total",
            "Heights this node decided for which it had received no precommit from the "
            "validator (any round, for a block or nil) when it moved on to the next height "
            "(timeout_commit_ms after the commit); heights taken from block sync are not "
            "counted", ["validator"], registry=r)
        self.catching_up = Gauge("mutual_catching_up", "1 while block sync is catching up",
                                 registry=r)
        self.evidence = Counter("mutual_evidence_total", "Equivocation evidence seen", registry=r)
        self.commit_seconds = Histogram(
            "mutual_block_execute_seconds", "Seconds to execute and store a block",
            buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2), registry=r)

    def count_missed_precommits(self, validators: Iterable[str]) -> None:
        """One missed height for each validator label given (see the help text)."""
        for v in validators:
            self.missed_votes.labels(v).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
