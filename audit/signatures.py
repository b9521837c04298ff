"""Signature checks of the audit: every transaction signature and commit certificate,
across a process pool when blocks are big (the pool's workers hold the chain id), inline
when they are small. Each certificate is checked against the validator set of its own
height, which every job names by its hash (``CertJob``): the set changes through
governance (docs/governance.md), so no set is fixed for the whole chain."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from chain import encoding
from chain.certificate import CommitCertificate, verify_certificate
from chain.crypto import Domain, PublicKey
from chain.genesis import Genesis
from chain.tx import Transaction, TxError
from chain.validators import Validator, ValidatorSet
from chain.vote import MessageError

POOL_MIN_TXS = 256           # below this many txs in a group the pool costs more than it saves
BATCH_TXS = 512              # transactions per group of signature checks (pipelining grain)
MIN_SLICE = 64               # transactions per pool task


# =====================================================================================
# signature checks (optionally in a process pool)
# =====================================================================================

_W_CHAIN: str = ""

TxCheck = tuple[str, str] | None   # (field, reason) or None when the tx is fine


def _init_worker(chain_id: str) -> None:
    global _W_CHAIN
    # Ctrl-C on a terminal reaches the whole process group: the main process stops the
    # audit and shuts the pool down; a worker must not die with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _W_CHAIN = chain_id


def check_txs(chain_id: str, txs: list[bytes]) -> list[TxCheck]:
    """Decode each signed transaction and verify its chain id and signature."""
    out: list[TxCheck] = []
    for raw in txs:
        try:
            tx = Transaction.decode(raw)
        except TxError as exc:
            out.append(("encoding", f"does not decode: {exc.message}"))
            continue
        if tx.chain_id != chain_id:
            out.append(("chain_id", f"is for chain {tx.chain_id!r}, not {chain_id!r}"))
        elif not _verify_tx(tx, raw):
            out.append(("sig", f"signature does not verify for sender {tx.sender.hex()}"))
        else:
            out.append(None)
    return out


def signing_payload_of(tx: Transaction, raw: bytes) -> bytes:
    """The signed payload of a canonical signed transaction, cut from its bytes.

    In the canonical map the keys sort as body, chain_id, nonce, sender, sig, type, so the
    unsigned encoding is the same bytes with the map header 0x86 -> 0x85 and the ``sig``
    entry removed. Cutting is exact and saves re-encoding; anything unexpected falls back
    to encoding the unsigned map."""
    tail = len(encoding.encode(tx.type)) + 5             # "\xa4type" + the type string
    entry = b"\xa3sig\xc4\x40" + tx.sig
    cut = len(raw) - tail - len(entry)
    if raw[:1] == b"\x86" and raw[cut:cut + len(entry)] == entry:
        return b"\x85" + raw[1:cut] + raw[cut + len(entry):]
    return tx.signing_payload()


def _verify_tx(tx: Transaction, raw: bytes) -> bool:
    return PublicKey(tx.sender).verify(Domain.TX, tx.chain_id, signing_payload_of(tx, raw),
                                       tx.sig)


# (key, cert bytes, height, block id, hash of the validator set it is checked against)
CertJob = tuple[tuple[str, int], bytes, int, bytes, bytes]
# the sets jobs name, by hash, as (pub_key, power) pairs: all a certificate check reads
SetTable = dict[bytes, list[tuple[bytes, int]]]


def set_table(sets: list[ValidatorSet]) -> SetTable:
    """The (pub_key, power) pairs of each set by its hash, for ``check_certs``."""
    return {v.hash(): [(x.pub_key, x.power) for x in v.validators] for v in sets}


def check_certs(chain_id: str, sets: SetTable, jobs: list[CertJob]
                ) -> dict[tuple[str, int], str]:
    """Verify certificates, each against the set its job names; return the reason for
    each one that fails."""
    bad: dict[tuple[str, int], str] = {}
    built: dict[bytes, ValidatorSet] = {}
    for key, data, height, block_id, set_hash in jobs:
        vset = built.get(set_hash)
        if vset is None:
            vset = built[set_hash] = ValidatorSet(Validator(pk, p) for pk, p in sets[set_hash])
        try:
            cert = CommitCertificate.decode(data)
        except MessageError as exc:
            bad[key] = f"does not decode: {exc}"
            continue
        ok, why = verify_certificate(cert, chain_id, vset, height, block_id)
        if not ok:
            bad[key] = why
    return bad


def _worker_txs(txs: list[bytes]) -> list[TxCheck]:
    return check_txs(_W_CHAIN, txs)


def _worker_certs(sets: SetTable, jobs: list[CertJob]) -> dict[tuple[str, int], str]:
    return check_certs(_W_CHAIN, sets, jobs)


class PendingChecks:
    def __init__(self, parts: list[Future] | None, cert_part: Future | None,
                 inline: Callable[[], tuple[list[TxCheck], dict]] | None) -> None:
        self.parts, self.cert_part, self.inline = parts, cert_part, inline

    def result(self) -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
        if self.inline is not None:
            return self.inline()
        assert self.parts is not None and self.cert_part is not None
        txs: list[TxCheck] = []
        for f in self.parts:
            txs.extend(f.result())
        return txs, self.cert_part.result()


def _pooled_or_inline(pending: PendingChecks, inline: Callable[[], tuple[list[TxCheck], dict]]
                      ) -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
    """The pool's answer, or the same checks inline if the pool broke (a worker killed,
    or a main module that cannot be re-imported): a slower audit, never a wrong one."""
    try:
        return pending.result()
    except BrokenProcessPool:
        return inline()


class SigVerifier:
    """Transaction and certificate signature checks, in a process pool for big chunks.

    ``workers=0`` checks inline. The pool is created lazily, the first time a chunk holds
    at least ``POOL_MIN_TXS`` transactions, so small chains never pay its start-up.
    """

    def __init__(self, genesis: Genesis, workers: int) -> None:
        self.chain_id = genesis.chain_id
        self.workers = max(0, workers)
        self._pool: ProcessPoolExecutor | None = None
        self.used_pool = False

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            # never fork: the fetch threads may hold locks; a forkserver child starts clean
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods
                                              else "spawn")
            if "forkserver" in methods:
                ctx.set_forkserver_preload(["audit.signatures"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                             initializer=_init_worker,
                                             initargs=(self.chain_id,))
            self.used_pool = True
        return self._pool

    def submit(self, txs: list[bytes], certs: list[CertJob], sets: SetTable
               ) -> PendingChecks:
        """Queue ``txs`` and ``certs``; ``sets`` holds every set the jobs name."""
        if self.workers == 0 or len(txs) < POOL_MIN_TXS:
            return PendingChecks(None, None, lambda: (check_txs(self.chain_id, txs),
                                                 check_certs(self.chain_id, sets, certs)))
        def inline() -> tuple[list[TxCheck], dict]:
            return check_txs(self.chain_id, txs), check_certs(self.chain_id, sets, certs)

        try:
            pool = self._get_pool()
            size = max(MIN_SLICE, -(-len(txs) // self.workers))
            parts = [pool.submit(_worker_txs, txs[i:i + size])
                     for i in range(0, len(txs), size)]
            pending = PendingChecks(parts, pool.submit(_worker_certs, sets, certs), None)
        except (BrokenProcessPool, RuntimeError, OSError):
            self.workers = 0  # no pool on this platform or in this process: stay inline
            return PendingChecks(None, None, inline)
        return PendingChecks(None, None, lambda: _pooled_or_inline(pending, inline))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def default_workers() -> int:
    """Signature workers: ``MUTUAL_AUDIT_WORKERS`` if set, else one per spare core."""
    env = os.environ.get("MUTUAL_AUDIT_WORKERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return max(0, (os.cpu_count() or 1) - 1)


# =====================================================================================
# the independent model of the rules
# =====================================================================================
