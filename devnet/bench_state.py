"""``python -m devnet bench-state``: figures for the rules and the authenticated state.

A benchmark, so it lives in ``devnet`` (DESIGN.md): it reads the clock, uses a temporary
directory and the LevelDB backend (``node.store.kvstore``) and starts one writer thread.
Its chain and members (genesis, keys, the bulk loader) are in ``devnet/bench_members.py``.

For each size N (default 1,000 / 100,000 / 1,000,000 members) it builds a state on
LevelDB and measures:

* import: N members loaded into the tree and committed to LevelDB. The member and
  identity records are exactly what the rules' ``register_member`` writes (the shapes
  are taken from one real transaction delivered through ``Application``); the counters
  (meta, cohort, registrar nonce) are updated once. Keys are fed in key-hash order, in
  chunks, with a writer thread persisting one chunk while the next is hashed. Then the
  bench waits (bounded) for LevelDB to finish compacting what was loaded, and reports
  that wait too (``import_with_compaction_per_s``).
* apply: blocks of transactions (a mix of register_member, file_claim, assess_claim) run
  through ``Application`` exactly as the node does: begin_block, deliver_tx each (their
  signatures count as checked), end_block, commit, one synced LevelDB write per block.
  ``execute_per_s`` is the same without the synced write (the disk's share, which on a
  shared VM disk under compaction varies the most). ``DEFAULT_BLOCKS`` (20) blocks run,
  long enough that LevelDB flushes and compacts apply's own writes: a sustained rate, not
  the faster first blocks. After each block as many raw Ed25519 verifies as it had
  transactions are timed: ``verify_per_s``, the baseline of ``apply_over_verify``, is
  measured under the same load as the blocks.
* settle: the block whose begin_block runs a period's settlement, measured in
  ``DEFAULT_SETTLE_ROUNDS`` (9) periods with the same claim count at every size: period 2
  pays the claims filed during apply, each later period as many claims by members who
  joined during apply. Each settlement block runs once LevelDB has finished compacting
  what the blocks before it wrote (as apply runs after the import's compaction), so it
  measures the settlement, not the disk work left by the apply blocks; the figures are
  medians over the rounds. ``settle_ms_*`` is the whole block: begin_block + end_block +
  commit of the written keys + synced write, so it includes the tree work, which grows
  with log N. ``settle_rules_ms_*`` is begin_block + end_block alone (the rules: reads and
  writes into the uncommitted state), which must not grow with the number of members
  (rule 7); ``settle_exec_*`` leaves out the synced write; ``settle_keys`` is how many
  keys it wrote.
* proofs: encoded size of inclusion and non-inclusion proofs for random keys.

It prints readable lines, then one final JSON line. ``settle_ms_1k``/``settle_ms_1m`` (and
``settle_rules_ms_*``, ``settle_ratio``, ``settle_rules_ratio``) are the smallest and largest
sizes run (``sizes`` in the JSON says which); ``apply_per_s`` is measured at the largest
size.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from hashlib import sha256
from statistics import median
from typing import Any

from chain.crypto import Domain, PrivateKey, sign_bytes
from chain.tx import Transaction
from contracts import records
from contracts.app import Application
from contracts.proof import Proof, verify_proof
from contracts.tree import StateTree
from devnet.bench_members import (
    APPLY_START,
    ASSESSOR,
    CHAIN_ID,
    COMPACTION_WAIT_S,
    DEFAULT_BLOCKS,
    DEFAULT_SETTLE_ROUNDS,
    LOAD_TIME,
    RECORDS_PER_MEMBER,
    REGISTRAR,
    SECOND,
    STATE_PREFIX,
    AnonPeak,
    MemberTemplate,
    bulk_identity,
    bulk_load,
    bulk_pk,
    genesis,
    new_member_pk,
    register_body,
    seed,
    signed_tx,
)

# -- measurements ------------------------------------------------------------------------


class Verifier:
    """Raw Ed25519 verifies of one real transaction's signature, timed in bursts."""

    def __init__(self) -> None:
        key = PrivateKey(sha256(b"bench signer").digest())
        self.tx = Transaction.create(key, CHAIN_ID, "register_member", 1,
                                     register_body(bulk_pk(1), bulk_identity(1)))
        self.msg = sign_bytes(Domain.TX, CHAIN_ID, self.tx.signing_payload())
        self.pub = key.public_key
        assert self.pub.verify_raw(self.tx.sig, self.msg) and self.tx.verify_signature()

    def burst(self, n: int) -> float:
        """Seconds that ``n`` verifies took."""
        verify, sig, msg = self.pub.verify_raw, self.tx.sig, self.msg
        t0 = time.perf_counter()
        for _ in range(n):
            verify(sig, msg)
        return time.perf_counter() - t0


def measure_verify(seconds: float) -> tuple[float, float]:
    """(raw Ed25519 verifies/s, node-path tx.verify_signature()/s) on one core."""
    v = Verifier()
    rates = []
    for fn in (lambda: v.pub.verify_raw(v.tx.sig, v.msg), v.tx.verify_signature):
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(200):
                fn()
            n += 200
            dt = time.perf_counter() - t0
            if dt >= seconds:
                break
        rates.append(n / dt)
    return rates[0], rates[1]


class Sized:
    """One state of N members on LevelDB and the measurements on it."""

    def __init__(self, n: int, workdir: str, writer: ThreadPoolExecutor,
                 max_open_files: int | None = None) -> None:
        from node.config import DEFAULT_STATE_HISTORY  # a node's default, as below
        from node.store.kvstore import (  # the only backend outside contracts
            DEFAULT_MAX_OPEN_FILES,
            LevelKV,
        )

        self.n = n
        self.g = genesis()
        self.g0 = self.g.genesis_time_ms
        self.dir = tempfile.mkdtemp(prefix=f"bench-{n}-", dir=workdir)
        self.db = LevelKV(self.dir, max_open_files=max_open_files or DEFAULT_MAX_OPEN_FILES)
        # pruned as a node prunes by default: records no kept root needs are deleted
        self.state = self.db.prefixed(STATE_PREFIX)
        self.tree = StateTree(self.state, keep=DEFAULT_STATE_HISTORY)
        self.app = Application(self.g, self.tree)
        self.writer = writer
        self.height = 0
        self.registrar_nonce = 0
        self.assessor_nonce = 0
        self.next_new = 0
        self.next_claimant = 0  # members who joined during apply and have claimed
        self.claimants: list[bytes] = []
        self.filed: list[int] = []
        self.write_s = 0.0  # time in synced LevelDB writes

    def close(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _commit(self) -> bytes:
        batch = self.db.batch()
        root = self.tree.commit(batch)
        AnonPeak.sample()
        t0 = time.perf_counter()
        self.db.write(batch, sync=True)
        self.write_s += time.perf_counter() - t0
        return root

    def wait_for_compactions(self, limit_s: float = COMPACTION_WAIT_S) -> tuple[float, bool]:
        """Wait (at most ``limit_s``) until LevelDB has no compaction debt left from the
        import: (seconds waited, whether it got there). Loading a million members in
        seconds leaves the merging of months of normal writes; a node runs in that
        steady state, so apply and settle are measured there."""
        t0 = time.perf_counter()
        while self.db.compaction_pending():  # type: ignore[attr-defined]
            if time.perf_counter() - t0 >= limit_s:
                return time.perf_counter() - t0, False
            time.sleep(0.2)
        return time.perf_counter() - t0, True

    def _begin(self, t: int) -> None:
        self.height += 1
        self.app.begin_block(self.height, self.g0 + t, seed(self.height))

    def load(self, template: MemberTemplate) -> float:
        """Bulk-load the members; returns the seconds it took. The load is durable when it
        returns; LevelDB's background compaction of it is not (see wait_for_compactions)."""
        self.app.init_chain()
        self._commit()
        t0 = time.perf_counter()
        self._begin(LOAD_TIME)
        bulk_load(self.app, self.tree, self.state, 0, self.n, template, self.writer)
        self.app.end_block()
        self._commit()
        t1 = time.perf_counter()
        self.registrar_nonce = self.n
        return t1 - t0

    def block(self, t: int, txs: list[Transaction]) -> tuple[float, float, float, list]:
        """Run one block; returns (deliver seconds, total seconds, of which synced-write
        seconds, receipts)."""
        w0 = self.write_s
        t0 = time.perf_counter()
        self._begin(t)
        t1 = time.perf_counter()
        receipts = [self.app.deliver_tx(tx) for tx in txs]
        t2 = time.perf_counter()
        self.app.end_block()
        self._commit()
        t3 = time.perf_counter()
        return t2 - t1, t3 - t0, self.write_s - w0, receipts

    def assessments(self, limit: int) -> list[Transaction]:
        """Approvals of up to ``limit`` claims filed in earlier blocks."""
        txs = []
        while self.filed and len(txs) < limit:
            self.assessor_nonce += 1
            txs.append(signed_tx(ASSESSOR, "assess_claim", self.assessor_nonce, {
                "claim_id": self.filed.pop(), "approve": True,
                "report_hash": sha256(b"report").digest()}))
        return txs

    def make_txs(self, count: int, claims_left: int, rng_state: list[int]) -> list[Transaction]:
        """A block's mix: assessments of claims filed earlier, new claims by loaded
        members (while ``claims_left``), and joins of new members."""
        txs = self.assessments(count // 5)
        n_claims = min(claims_left, count // 5)
        for _ in range(n_claims):
            # a deterministic walk over distinct loaded members
            rng_state[0] = (rng_state[0] * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            i = rng_state[0] % self.n
            pk = bulk_pk(i)
            if pk in self.claimants:
                continue
            self.claimants.append(pk)
            txs.append(signed_tx(pk, "file_claim", 1, {
                "disease": "malignant_tumor", "diagnosed_ms": self.g0 + APPLY_START - SECOND,
                "accident": False, "evidence_hash": sha256(b"evidence").digest()}))
        while len(txs) < count:
            j = self.next_new
            self.next_new += 1
            self.registrar_nonce += 1
            txs.append(signed_tx(REGISTRAR, "register_member", self.registrar_nonce, register_body(
                new_member_pk(j),
                sha256(b"bench new identity" + j.to_bytes(8, "big")).digest())))
        return txs

    def apply(self, blocks: int, per_block: int, claims: int,
              verifier: Verifier | None = None) -> dict[str, float]:
        """Run the apply blocks. After each, ``verifier`` checks as many signatures as the
        block had transactions, so the verify rate the apply rate is set against is taken
        under the same load (LevelDB's compaction threads, other tenants), not minutes
        apart."""
        # an untimed block first: it runs period 1's notice and settlement (no claims)
        self.block(APPLY_START - SECOND, [])
        rng = [self.n]
        deliver = total = write = verify = 0.0
        count = 0
        claims_left = claims
        for b in range(blocks):
            before = len(self.claimants)
            txs = self.make_txs(per_block, claims_left, rng)
            d, t, w, receipts = self.block(APPLY_START + b * 10, txs)
            if verifier is not None:
                verify += verifier.burst(len(txs))
            AnonPeak.sample()
            for tx, r in zip(txs, receipts, strict=True):
                if not r.ok:
                    raise RuntimeError(f"bench tx {tx.type} refused: {r.code} {r.reason}")
                if tx.type == "file_claim":
                    self.filed.append(next(e.attrs["claim_id"] for e in r.events
                                           if e.type == "claim_filed"))
            claims_left -= len(self.claimants) - before
            deliver += d
            total += t
            write += w
            count += len(txs)
        # assess whatever is still waiting, untimed
        if self.filed:
            self.block(APPLY_START + blocks * 10, self.assessments(len(self.filed)))
        out = {"txs": count, "deliver_per_s": count / deliver, "apply_per_s": count / total,
               "execute_per_s": count / (total - write)}
        if verifier is not None:
            out["verify_per_s"] = count / verify
        return out

    def settle(self, n: int) -> dict[str, Any]:
        """Notice, objection close and settlement of period ``n``, whose claims were
        approved before its notice. The settlement block is measured once LevelDB has
        finished compacting what the blocks before it wrote, as apply is measured after
        the import's compaction: the figure is the settlement's own cost, not the disk
        work left by earlier blocks. Returns its figures in ms: ``total`` is begin_block
        (which runs the settlement) + end_block + commit + synced write; ``rules`` is
        begin_block + end_block alone, before the state is committed."""
        sch = self.app.schedule
        self.block(sch.notice_ms(n) - self.g0, [])
        self.block(sch.notice_ms(n) + self.g.params["objection_window_ms"] - self.g0, [])
        self.wait_for_compactions()
        w0 = self.write_s
        t0 = time.perf_counter()
        self._begin(sch.settlement_ms(n) - self.g0)
        self.app.end_block()
        t1 = time.perf_counter()
        written = self.tree.dirty
        self._commit()
        t2 = time.perf_counter()
        period = self.app.get_period(n)
        if period is None or period.get("status") != "settled":
            raise RuntimeError(f"period {n} did not settle: {period}")
        unpaid = [cid for cid in period["claims"] if self.app.get_claim(cid)["status"] != "paid"]
        if unpaid:
            raise RuntimeError(f"period {n} settled but claims {unpaid[:5]} do not read as paid")
        write = (self.write_s - w0) * 1000
        total = (t2 - t0) * 1000
        return {"total": total, "rules": (t1 - t0) * 1000, "write": write,
                "exec": total - write, "keys": written, "period": period}

    def claim_round(self, n: int, claims: int) -> None:
        """File and approve ``claims`` claims before period ``n``'s notice, by members who
        joined during apply (fresh claimants: each paid claim ends a membership)."""
        sch = self.app.schedule
        if self.next_new - self.next_claimant < claims:
            raise RuntimeError("not enough members joined during apply for another round")
        t_file = sch.notice_ms(n) - self.g0 - 10 * SECOND
        txs, pks = [], []
        for _ in range(claims):
            pk = new_member_pk(self.next_claimant)
            self.next_claimant += 1
            pks.append(pk)
            txs.append(signed_tx(pk, "file_claim", 1, {
                "disease": "malignant_tumor", "diagnosed_ms": self.g0 + t_file - SECOND,
                "accident": False, "evidence_hash": sha256(b"evidence").digest()}))
        _, _, _, receipts = self.block(t_file, txs)
        for r in receipts:
            if not r.ok:
                raise RuntimeError(f"bench claim refused: {r.code} {r.reason}")
            self.filed.append(next(e.attrs["claim_id"] for e in r.events
                                   if e.type == "claim_filed"))
        self.claimants.extend(pks)
        self.block(t_file + 5 * SECOND, self.assessments(len(self.filed)))

    def settle_rounds(self, rounds: int, claims: int) -> list[dict[str, Any]]:
        """Settle period 2 (the claims filed during apply), then ``rounds - 1`` more
        periods of ``claims`` claims each: one settlement is a single noisy sample."""
        out = []
        for n in range(2, rounds + 2):
            if n > 2:
                self.claim_round(n, claims)
            before = len(self.claimants) if n == 2 else claims
            r = self.settle(n)
            if r["period"]["cases"] != before:
                raise RuntimeError(f"settled {r['period']['cases']} cases, filed {before}")
            out.append(r)
        return out

    def proofs(self, samples: int) -> tuple[int, float]:
        """(max encoded proof bytes, mean) over member keys and absent keys; all verified."""
        root = self.tree.root()
        sizes = []
        for s in range(samples):
            if s % 4 == 3:
                key, value = b"member/absent" + s.to_bytes(4, "big"), None
            else:
                key = records.member_key(bulk_pk((s * 7919) % self.n))
                value = self.tree.get_committed(key)
            data = self.tree.prove(key).encode()
            if not verify_proof(root, key, value, Proof.decode(data)):
                raise RuntimeError("a proof failed to verify")
            sizes.append(len(data))
        return max(sizes), sum(sizes) / len(sizes)


def peak_rss_mb() -> float:
    """Peak resident set (getrusage): heap, the interpreter's and libraries' mapped code,
    and, only where LevelDB could not be switched to pread (``leveldb_table_reads`` in the
    JSON line), the table pages its mmapped reads touched: then up to (max_open_files -
    10) x ~2 MiB more, since a random read maps a whole page-cache folio around its page."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def label(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def run(sizes: list[int], blocks: int, per_block: int, claims: int, verify_s: float,
        workdir: str | None = None, out: Any = None, max_open_files: int | None = None,
        settle_rounds: int = DEFAULT_SETTLE_ROUNDS) -> dict[str, Any]:
    def say(text: str) -> None:
        print(text, file=out or sys.stdout, flush=True)

    start_verify_per_s, tx_verify_per_s = measure_verify(verify_s)
    say(f"ed25519 verify: {start_verify_per_s:,.0f}/s raw, {tx_verify_per_s:,.0f}/s "
        "via Transaction.verify_signature")
    verifier = Verifier()
    template = MemberTemplate(genesis())
    per_size: dict[str, dict[str, Any]] = {}
    base = tempfile.mkdtemp(prefix="mutual-bench-", dir=workdir)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-writer")
    try:
        for n in sizes:
            s = Sized(n, base, writer, max_open_files)
            try:
                load_s = s.load(template)
                say(f"[{label(n)}] loaded {n:,} members in {load_s:.2f} s "
                    f"({n / load_s:,.0f} members/s, {RECORDS_PER_MEMBER} records each, committed to "
                    "LevelDB)")
                wait_s, settled = s.wait_for_compactions()
                say(f"[{label(n)}] LevelDB's background compaction of the import "
                    + (f"finished {wait_s:.1f} s later" if settled else
                       f"still running after {wait_s:.0f} s; measuring anyway"))
                ap = s.apply(blocks, per_block, claims, verifier)
                say(f"[{label(n)}] applied {ap['txs']:,} txs in blocks of {per_block}: "
                    f"{ap['apply_per_s']:,.0f} tx/s with commit + synced write, "
                    f"{ap['execute_per_s']:,.0f} tx/s without the write, "
                    f"{ap['deliver_per_s']:,.0f} tx/s deliver_tx alone; between the blocks "
                    f"{ap['verify_per_s']:,.0f} ed25519 verifies/s")
                rounds = s.settle_rounds(settle_rounds, claims)
                st = {f: median(r[f] for r in rounds) for f in ("total", "rules", "exec",
                                                               "write")}
                period = rounds[-1]["period"]
                say(f"[{label(n)}] {len(rounds)} settlements of {period['cases']} cases "
                    f"each (M={period['M']:,} members at the last), medians: "
                    f"{st['total']:.2f} ms per block, of which {st['rules']:.2f} ms rules, "
                    f"{st['exec'] - st['rules']:.2f} ms committing {rounds[-1]['keys']} keys "
                    f"to the tree, {st['write']:.2f} ms the synced write; totals "
                    + ", ".join(f"{r['total']:.1f}" for r in rounds))
                pmax, pmean = s.proofs(400)
                say(f"[{label(n)}] proofs: max {pmax} bytes, mean {pmean:.0f} bytes")
                per_size[label(n)] = {
                    "members": n, "import_per_s": round(n / load_s),
                    "compaction_wait_s": round(wait_s, 1), "compaction_settled": settled,
                    "import_with_compaction_per_s": round(n / (load_s + wait_s)),
                    "apply_per_s": round(ap["apply_per_s"]),
                    "execute_per_s": round(ap["execute_per_s"]),
                    "deliver_per_s": round(ap["deliver_per_s"]),
                    "verify_per_s": round(ap["verify_per_s"]),
                    "settle_ms": round(st["total"], 3), "settle_rules_ms": round(st["rules"], 3),
                    "settle_exec_ms": round(st["exec"], 3),
                    "settle_write_ms": round(st["write"], 3),
                    "settle_ms_each": [round(r["total"], 3) for r in rounds],
                    "settle_keys": rounds[-1]["keys"], "settle_members": period["M"],
                    "settle_cases": period["cases"], "proof_bytes": pmax,
                    "proof_bytes_mean": round(pmean), "peak_rss_mb": round(peak_rss_mb(), 1),
                    "peak_anon_rss_mb": AnonPeak.mb(),
                }
            finally:
                s.close()
    finally:
        writer.shutdown()
        shutil.rmtree(base, ignore_errors=True)
    from node.store.leveldb_env import table_reads  # how the stores above read their tables
    small, large = per_size[label(sizes[0])], per_size[label(sizes[-1])]
    apply_per_s = large["apply_per_s"]
    verify_per_s = large["verify_per_s"]
    result = {
        "sizes": sizes,
        "max_open_files": max_open_files or "leveldb default",
        "apply_per_s": apply_per_s,
        "deliver_per_s": large["deliver_per_s"],
        "verify_per_s": large["verify_per_s"],
        "verify_per_s_at_start": round(start_verify_per_s),
        "tx_verify_per_s": round(tx_verify_per_s),
        "apply_over_verify": round(apply_per_s / verify_per_s, 3),
        "execute_per_s": large["execute_per_s"],
        "execute_over_verify": round(large["execute_per_s"] / verify_per_s, 3),
        "deliver_over_verify": round(large["deliver_per_s"] / verify_per_s, 3),
        "settle_ms_1k": small["settle_ms"],
        "settle_ms_1m": large["settle_ms"],
        "settle_ratio": round(large["settle_ms"] / small["settle_ms"], 3),
        "settle_exec_ratio": round(large["settle_exec_ms"] / small["settle_exec_ms"], 3),
        "settle_rules_ms_1k": small["settle_rules_ms"],
        "settle_rules_ms_1m": large["settle_rules_ms"],
        "settle_rules_ratio": round(large["settle_rules_ms"] / small["settle_rules_ms"], 3),
        "proof_bytes_1m": large["proof_bytes"],
        "import_per_s": large["import_per_s"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "peak_anon_rss_mb": AnonPeak.mb(),
        "leveldb_table_reads": table_reads(),
        "per_size": per_size,
        "notes": "1k/1m = smallest/largest size run; apply = begin+deliver+end+commit+"
                 "synced write per block, at the largest size, once LevelDB's compaction of "
                 "the import is done (execute = the same without the synced write; deliver = "
                 "deliver_tx alone); verify_per_s = raw ed25519 verifies timed between those "
                 "apply blocks, as many as each block had transactions (the *_over_verify "
                 "ratios use it; verify_per_s_at_start = the same before any size ran); import loads the records register_member writes, in "
                 "key-hash order, not counting LevelDB's background compaction afterwards "
                 "(import_with_compaction counts it); settle_ms = the settlement block with "
                 "commit and synced write, median of settle_ms_each (one settlement per "
                 "period, each once LevelDB has compacted what came before), settle_exec = "
                 "the same without the write, settle_rules_ms = its begin_block+end_block "
                 "alone; "
                 "peak_rss_mb = getrusage (LevelDB's table pages count in it only if "
                 "leveldb_table_reads is mmap); peak_anon_rss_mb = heap only",
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devnet bench-state", description=__doc__.split(
        "\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="comma-separated member counts (default 1000,100000,1000000)")
    ap.add_argument("--quick", action="store_true",
                    help="small sizes and few blocks: a run of a few seconds")
    ap.add_argument("--blocks", type=int, default=None,
                    help=f"apply blocks per size (default {DEFAULT_BLOCKS}; 2 with --quick)")
    ap.add_argument("--block-txs", type=int, default=1000, help="transactions per block")
    ap.add_argument("--claims", type=int, default=200,
                    help="claims filed, approved and settled per size")
    ap.add_argument("--settle-rounds", type=int, default=None,
                    help=f"settlements measured per size, each paying --claims claims "
                         f"(default {DEFAULT_SETTLE_ROUNDS}, 2 with --quick, fewer if too few members "
                         "joined during apply)")
    ap.add_argument("--dir", default=None, help="where to make the temporary databases")
    ap.add_argument("--max-open-files", type=int, default=None,
                    help="LevelDB max_open_files (default: the node's); where LevelDB reads "
                         "tables with mmap, lower bounds the mapped pages that count in "
                         "peak_rss_mb, at some read speed")
    args = ap.parse_args(argv)
    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error("--sizes must be comma-separated integers")
    if args.quick and args.sizes == ap.get_default("sizes"):
        sizes = [1000, 10000]
    if not sizes or min(sizes) < 10:
        ap.error("every size must be at least 10 members")
    blocks = args.blocks if args.blocks is not None else (2 if args.quick else DEFAULT_BLOCKS)
    per_block = min(args.block_txs, 200) if args.quick else args.block_txs
    claims = min(args.claims, max(sizes[0] // 4, 1), blocks * per_block // 5)
    if blocks < 1 or per_block < 5:
        ap.error("need at least one block of at least 5 transactions")
    if args.claims < 1:
        ap.error("--claims must be at least 1")
    # later rounds' claimants are members who joined during apply: at least every tx that
    # is not a claim or an approval
    most = 1 + max(0, blocks * per_block - 2 * claims) // claims
    if args.settle_rounds is None:
        rounds = min(most, 2 if args.quick else DEFAULT_SETTLE_ROUNDS)
    elif 1 <= args.settle_rounds <= most:
        rounds = args.settle_rounds
    else:
        ap.error(f"--settle-rounds must be 1 to {most} with these blocks and claims")
    if args.max_open_files is not None and args.max_open_files < 74:
        ap.error("--max-open-files must be at least 74 (LevelDB's minimum)")
    result = run(sizes, blocks, per_block, claims, 0.3 if args.quick else 1.0, args.dir,
                 max_open_files=args.max_open_files, settle_rounds=rounds)
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
