"""Signed transaction load against every node of a devnet.

Transactions are real ``register_member`` transactions (the plan's onboarding load),
signed in advance by several registrars so many nonce sequences are in flight; each
registrar always talks to the same node, so its nonces arrive in order. They are sent in
batches (``POST /txs/batch``) every 100 ms at the offered rate, and a watcher follows the
committed blocks of one node to time each transaction from submission to commit.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chain.crypto import PrivateKey
from chain.hashing import sha256
from chain.tx import Transaction
from client import Client, ClientError
from devnet.cluster import Cluster, ClusterError

TICK_S = 0.1


@dataclass
class LoadResult:
    offered_rate: float
    duration_s: float
    submitted: int = 0
    accepted: int = 0
    committed: int = 0
    in_time: int = 0  # committed within grace_s of being offered
    refused: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def committed_fraction(self) -> float:
        return self.committed / self.submitted if self.submitted else 0.0

    @property
    def in_time_fraction(self) -> float:
        return self.in_time / self.submitted if self.submitted else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def summary(self) -> dict[str, Any]:
        return {
            "offered_tps": self.offered_rate, "duration_s": self.duration_s,
            "submitted": self.submitted, "accepted": self.accepted,
            "committed": self.committed,
            "committed_tps": round(self.committed / self.elapsed_s, 1) if self.elapsed_s else 0,
            "committed_fraction": round(self.committed_fraction, 4),
            "in_time_fraction": round(self.in_time_fraction, 4),
            "p50_s": _r(self.percentile(0.50)), "p90_s": _r(self.percentile(0.90)),
            "p99_s": _r(self.percentile(0.99)),
            "mean_s": _r(statistics.fmean(self.latencies)) if self.latencies else None,
            "refused": self.refused,
        }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


class TxFactory:
    """Pre-signed registrations, one nonce sequence per registrar."""

    def __init__(self, cluster: Cluster, salt: bytes) -> None:
        self.chain_id = cluster.genesis.chain_id
        self.registrars = cluster.registrar_keys()
        client = cluster.nodes[cluster.active[0]].client
        self.nonces = [int(client.account(k.public_key.hex())["next_nonce"])
                       for k in self.registrars]
        self.salt = salt
        self.counter = 0

    def make(self, count: int) -> list[tuple[int, Transaction]]:
        """``count`` signed transactions, spread over the registrars round-robin."""
        out = []
        for _ in range(count):
            r = self.counter % len(self.registrars)
            self.counter += 1
            seed = sha256(self.salt + self.counter.to_bytes(8, "big"))
            member = PrivateKey(seed).public_key.raw
            # the tags are opaque to the rules: random-looking bytes stand for HMACs
            body = {"member": member, "identity_tags": [[1, sha256(b"id" + seed)]],
                    "birth_date": "1990-06-15",
                    "health_commitment": sha256(b"health" + seed),
                    "credit_attestation": sha256(b"credit" + seed), "credit_passed": True}
            key = self.registrars[r]
            tx = Transaction.create(key, self.chain_id, "register_member", self.nonces[r], body)
            self.nonces[r] += 1
            out.append((r, tx))
        return out


class CommitWatcher(threading.Thread):
    """Follows committed blocks on one node and records when each tx hash committed."""

    def __init__(self, client: Client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.height = int(client.status()["height"])
        self.committed: dict[str, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                top = int(self.client.status()["height"])
                while self.height < top:
                    block = self.client.block(self.height + 1)
                    now = time.monotonic()
                    for tx in block["txs"]:
                        self.committed.setdefault(tx["hash"], now)
                    self.height += 1
            except ClientError:
                pass
            self._halt.wait(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def run_load(cluster: Cluster, rate: float, duration: float, factory: TxFactory,
             grace_s: float = 8.0, say: Any = None) -> LoadResult:
    """Offer ``rate`` tx/s for ``duration`` seconds; wait up to ``grace_s`` for commits."""
    result = LoadResult(rate, duration)
    total = max(1, int(rate * duration))
    txs = factory.make(total)
    nodes = [cluster.nodes[i] for i in cluster.active]  # not the retired ones
    clients = [Client(n.url, timeout=30) for n in nodes]
    sent_at: dict[str, float] = {}
    watcher = CommitWatcher(clients[0])
    watcher.start()
    lock = threading.Lock()

    def send(node_index: int, batch: list[Transaction], offered_at: float) -> None:
        # latency counts from when the load *offered* the batch, so a backlog in the
        # client counts against the rate instead of hiding it
        now = offered_at
        try:
            res = clients[node_index].submit_batch(batch)
        except ClientError as exc:
            with lock:
                result.refused[exc.code] = result.refused.get(exc.code, 0) + len(batch)
            return
        with lock:
            for tx, r in zip(batch, res["results"], strict=True):
                if r["code"] == "ok":
                    result.accepted += 1
                    sent_at[tx.hash.hex()] = now
                else:
                    result.refused[r["code"]] = result.refused.get(r["code"], 0) + 1

    # one sender thread per node, fed in order, so each registrar's nonces arrive in order
    queues: list[queue.Queue[tuple[list[Transaction], float] | None]] = [
        queue.Queue() for _ in nodes]

    def sender(i: int) -> None:
        while (item := queues[i].get()) is not None:
            send(i, *item)

    threads = [threading.Thread(target=sender, args=(i,), daemon=True)
               for i in range(len(nodes))]
    for t in threads:
        t.start()
    start = time.monotonic()
    per_tick = rate * TICK_S
    sent = 0
    tick = 0
    while sent < total:
        target = min(total, int(per_tick * (tick + 1)))
        chunk = txs[sent:target]
        sent = target
        by_node: dict[int, list[Transaction]] = {}
        for r, tx in chunk:
            by_node.setdefault(r % len(nodes), []).append(tx)
        offered_at = time.monotonic()
        for i, batch in by_node.items():
            queues[i].put((batch, offered_at))
        tick += 1
        delay = start + tick * TICK_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for q in queues:
        q.put(None)
    for t in threads:
        t.join(timeout=60)
    result.submitted = total
    send_end = time.monotonic()
    deadline = send_end + grace_s
    while time.monotonic() < deadline:
        with lock:
            pending = [h for h in sent_at if h not in watcher.committed]
        if not pending:
            break
        time.sleep(0.05)
    watcher.stop()
    last_commit = start
    for h, t0 in sent_at.items():
        t1 = watcher.committed.get(h)
        if t1 is not None:
            result.committed += 1
            result.latencies.append(max(0.0, t1 - t0))
            last_commit = max(last_commit, t1)
            if t1 - t0 <= grace_s:
                result.in_time += 1
    result.elapsed_s = max(last_commit - start, duration)
    if say:
        say(json.dumps(result.summary()))
    return result


def main(args: argparse.Namespace) -> int:
    tmp = None
    try:
        if args.data:
            cluster = Cluster.open(args.data)
            for n in cluster.nodes:
                n.proc = None
            cluster.wait_ready(10)
            owned = False
        else:
            tmp = tempfile.TemporaryDirectory(prefix="mutual-load-")
            cluster = Cluster.create(Path(tmp.name) / "devnet", validators=args.validators,
                                     base_port=args.base_port, registrars=64)
            cluster.start(wait_s=60)
            cluster.wait_height(1, timeout_s=60)
            owned = True
    except ClusterError as exc:
        print(f"devnet load: error: {exc}", file=sys.stderr)
        return 2
    try:
        factory = TxFactory(cluster, salt=str(time.time()).encode())
        if args.rate > 100 * len(factory.registrars):
            print(f"note: this devnet has {len(factory.registrars)} registrar(s); each keeps at "
                  "most 128 transactions pending, so high rates are refused as sender_full or "
                  "nonce_gap_too_large (run without --data for a devnet with 64 registrars)")
        print(f"offering {args.rate:g} tx/s for {args.duration:g}s to "
              f"{len(cluster.nodes)} nodes …")
        result = run_load(cluster, args.rate, args.duration, factory)
        s = result.summary()
        print(f"committed {s['committed']}/{s['submitted']} ({s['committed_fraction']:.1%}) "
              f"at {s['committed_tps']} tx/s; latency p50 {s['p50_s']}s p90 {s['p90_s']}s "
              f"p99 {s['p99_s']}s; refused {s['refused']}")
        print(json.dumps(s))
        return 0 if result.committed_fraction >= 0.99 else 1
    finally:
        if owned:
            cluster.stop()
        if tmp is not None:
            tmp.cleanup()
