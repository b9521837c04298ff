"""``mutual audit``: replay a whole chain from the auditor's own genesis and check everything.

The chain comes from a node's HTTP API (``--node``) or from a copy of a stopped node's
database (``--data``). Nothing the source says is trusted: every block is re-validated by
``node.executor.Executor`` (the same definition of a valid block that consensus and sync
use) over a fresh in-memory state, every commit certificate is checked against the
validator set of its height (the genesis set, then each set the replayed governance
produced: docs/governance.md), every header's ``validators_hash`` and
``next_validators_hash`` against those sets, every transaction signature is verified (across a
process pool when blocks are big), the state root after each block is compared with the
one the next header commits to, and an independent model of the pooling rules rechecks
every notice snapshot, settlement (claims, fee, surplus, shares, caps, conservation),
jury (eligibility, panel draw, tally, quorum, majority, timing) and waiting-period
decision. Finally the source's own claims (stored state, receipts and roots for
``--data``; served period and claim records and its state root for ``--node``) are
compared with the replay. The first discrepancy stops the audit and is named precisely.

docs/audit.md describes every check and the report.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from audit.progress import Progress
from audit.report import AuditFailure, AuditInterrupted, AuditReport
from audit.rules import Moment, RuleChecker
from audit.signatures import (
    BATCH_TXS,
    CertJob,
    PendingChecks,
    SigVerifier,
    TxCheck,
    check_certs,
    default_workers,
    set_table,
)
from audit.sources import CHUNK_BLOCKS, Source, SourceError
from audit.verifyrate import measure_verify_rate
from chain.block import Block
from chain.certificate import CommitCertificate
from chain.genesis import Genesis
from chain.hashing import sha256
from chain.tx import Transaction, to_jsonable
from chain.validators import ValidatorSet
from chain.vote import MessageError
from contracts import records
from contracts.kv import KV, KVError, MemoryKV
from contracts.tree import StateTree
from node.executor import Applied, BlockInvalid, Executor
from node.store.blockstore import BlockStore

REPLAY_ROOTS = 2


class Auditor:
    """One replay of a chain from ``source`` under ``genesis`` (the auditor's own file)."""

    def __init__(self, genesis: Genesis, source: Source, *, workers: int | None = None,
                 progress: Progress | None = None, verify_seconds: float = 0.3,
                 work_dir: str | Path | None = None) -> None:
        """``work_dir``: replay into a LevelDB database in a new directory under it
        (removed by ``close``) instead of in memory, for chains whose blocks and
        transaction index do not fit in memory."""
        self.genesis = genesis
        self.verify_seconds = verify_seconds
        self.source = source
        self._replay_dir: str | None = None
        self.kv: Any = None
        if work_dir is None:
            self.kv = MemoryKV()
        else:
            from node.store.kvstore import open_kv

            try:
                self._replay_dir = tempfile.mkdtemp(prefix="mutual-replay-", dir=work_dir)
                self.kv = open_kv(Path(self._replay_dir) / "db")
            except (OSError, KVError) as exc:
                self.close()
                raise SourceError(f"--work-dir {work_dir}: cannot make the replay's "
                                  f"database there: {exc}") from None
        try:  # whatever stops the construction (an error, Ctrl-C), the replay's dir goes
            # the checks read the state after the previous block at most (a panel's draw),
            # so two roots stay readable and older tree records are pruned as the replay
            # goes: the replay's memory follows the state's size, not the chain's history
            self.executor = Executor(genesis, self.kv,
                                     BlockStore(self.kv, durable=False), self._sig_ok,
                                     keep_roots=REPLAY_ROOTS)
            self.verifier = SigVerifier(genesis,
                                        default_workers() if workers is None else workers)
        except BaseException:
            self.close()
            raise
        self.progress = progress
        self.rules = RuleChecker(genesis, lambda: self.executor.tree,
                                 lambda root: StateTree(self.executor.state_kv, root),
                                 self.executor.validators_at)
        self._presigned = False
        self.nonces: dict[bytes, int] = {}
        self.txs = 0
        self.applied = 0
        self.rejected: Counter[str] = Counter()
        self.certificates = 0
        self.signatures = 0
        self.checked = 0  # the last block every check of which has run
        # the hash of the set each queued certificate check uses: a check queued before
        # the blocks that change the set were replayed is redone with the right set
        self._cert_sets: dict[tuple[str, int], bytes] = {}
        # the validator set history as the replay computes it (docs/audit.md)
        self.vset_history: list[dict[str, Any]] = []
        self._note_sets(0)

    # ---- state the checks read ----------------------------------------------------------

    @property
    def height(self) -> int:
        return self.executor.height

    @property
    def state(self) -> Any:
        return self.executor.tree

    @property
    def state_kv(self) -> KV:
        return self.executor.state_kv

    @property
    def state_root(self) -> bytes:
        return self.executor.state_root

    def _sig_ok(self, tx_hash: bytes, tx: Transaction) -> bool:
        # every transaction of the block being validated was verified just before
        return True if self._presigned else tx.verify_signature()

    # ---- the run ------------------------------------------------------------------------

    def run(self) -> AuditReport:
        """Replay and check; a Ctrl-C (or an ``AuditInterrupted`` raised by a signal
        handler) stops the replay, shuts the signature pool down and raises
        ``AuditInterrupted`` carrying the partial report."""
        start = time.perf_counter()
        failure: AuditFailure | None = None
        signum: int | None = None
        final = False
        try:
            self._check_genesis()
            tip = self.source.tip()
            if self.progress is not None:
                self.progress.total = tip
            self._replay(tip)
            final = True
            self.source.check_final(self)
        except AuditFailure as exc:
            failure = exc
        except KeyboardInterrupt as exc:
            signum = exc.signum if isinstance(exc, AuditInterrupted) else signal.SIGINT
            failure = _interrupted_failure(signum, self.checked, final)
        except Exception as exc:  # a damaged source or a bug: still one readable finding
            failure = AuditFailure(self.height + 1, f"the audit could not continue: "
                                                    f"{type(exc).__name__}: {exc}")
        finally:
            self.verifier.close()
            if self.progress is not None:
                self.progress.finish()
        seconds = time.perf_counter() - start
        if signum is not None:  # no rate measurement after a Ctrl-C
            raise AuditInterrupted(signum, self.interrupted_report(signum, seconds, failure))
        return self._report(failure, seconds, measure_verify_rate(self.verify_seconds))

    def close(self) -> None:
        """Remove the replay's database (with ``work_dir``); safe to call twice."""
        if self._replay_dir is None:
            return
        close = getattr(self.kv, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()
        shutil.rmtree(self._replay_dir, ignore_errors=True)
        self._replay_dir = None

    def interrupted_report(self, signum: int, seconds: float = 0.0,
                           failure: AuditFailure | None = None) -> AuditReport:
        """The report of an audit that SIGINT or SIGTERM stopped: what was checked by
        then, its state root only if every block replayed was also checked."""
        if failure is None:
            failure = _interrupted_failure(signum, self.checked)
        return self._report(failure, seconds, 0.0, blocks=self.checked,
                            root=self.height == self.checked)

    def _report(self, failure: AuditFailure | None, seconds: float, verify_rate: float,
                blocks: int | None = None, root: bool = True) -> AuditReport:
        return AuditReport(
            ok=failure is None, chain_id=self.genesis.chain_id, source=self.source.label,
            blocks=self.height if blocks is None else blocks, txs=self.txs,
            applied=self.applied, rejected=dict(self.rejected),
            periods=self.rules.stats.get("periods", 0),
            state_root=self.state_root.hex() if root else None, first_error=failure,
            certificates=self.certificates, signatures=self.signatures,
            stats=dict(self.rules.stats), verdicts=dict(self.rules.verdicts),
            seconds=seconds, verify_per_s=verify_rate, workers=self.verifier.workers,
            pooled=self.verifier.used_pool, validator_sets=list(self.vset_history))

    def _note_sets(self, h: int) -> None:
        """Add the sets that block ``h`` (0: genesis) scheduled to the history; the set
        of a height above ``h`` may still change (more changes in the same block), so
        the last entry is re-read while it is pending."""
        heights = self.executor.app.validator_set_heights()
        hist = self.vset_history
        if hist and hist[-1]["height"] > h and hist[-1]["height"] in heights:
            hist.pop()
        for e in heights[len(hist):]:
            rec = records.load(self.state, records.vset_key(e))
            if rec is None:
                raise AuditFailure(h, f"the replay wrote no validator set record for height "
                                      f"{e}", field=f"vset/{e}")
            vset = ValidatorSet.from_maps(rec["validators"])
            hist.append({"height": e, "hash": vset.hash().hex(), "validators": len(vset),
                         "total_power": vset.total_power, "committed_in": max(0, e - 2),
                         "changes": to_jsonable(rec.get("changes", []))})

    def _check_genesis(self) -> None:
        claimed = self.source.claimed_genesis_hash()
        if claimed is not None and claimed != self.genesis.hash:
            raise AuditFailure(0, "the source runs another genesis than the auditor's file",
                               field="genesis_hash", expected=self.genesis.hash.hex(),
                               found=claimed.hex())

    def _replay(self, tip: int) -> None:
        chunks = [list(range(s, min(s + CHUNK_BLOCKS, tip + 1)))
                  for s in range(1, tip + 1, CHUNK_BLOCKS)]
        if not chunks:
            return
        ticket = self.source.request(chunks[0])
        pending: tuple | None = None
        for k in range(len(chunks)):
            fetched = ticket()
            if k + 1 < len(chunks):
                ticket = self.source.request(chunks[k + 1])  # fetch ahead while we work
            decoded = [(h, self._decode(h, raw), cert) for h, raw, cert in fetched]
            handle = self._submit(decoded)
            if pending is not None:
                self._execute_chunk(*pending, next_block=decoded[0][1])
            pending = (decoded, handle)
        assert pending is not None
        self._execute_chunk(*pending, next_block=None)

    def _decode(self, height: int, raw: bytes) -> Block:
        try:
            block = Block.decode(raw)
        except MessageError as exc:
            raise AuditFailure(height, f"block {height} does not decode: {exc}") from None
        if block.height != height:
            raise AuditFailure(height, f"the block served for height {height} is another "
                                       "height", field="header.height", expected=height,
                               found=block.height)
        return block

    def _submit(self, decoded: list[tuple[int, Block, bytes | None]]
                ) -> list[tuple[int, int, PendingChecks]]:
        """Queue the signature checks of a chunk in groups of about ``BATCH_TXS``
        transactions, so the first group's answer is back while the rest still run."""
        groups = []
        start = count = 0
        for i, (_, block, _) in enumerate(decoded):
            count += len(block.txs)
            if count >= BATCH_TXS or i == len(decoded) - 1:
                groups.append((start, i + 1, self._submit_group(decoded[start:i + 1])))
                start, count = i + 1, 0
        return groups

    def _submit_group(self, decoded: list[tuple[int, Block, bytes | None]]) -> PendingChecks:
        txs: list[bytes] = []
        certs: list[CertJob] = []
        sets: dict[bytes, ValidatorSet] = {}
        carried: dict[int, bytes] = {}

        def job(key: tuple[str, int], data: bytes, height: int, block_id: bytes) -> None:
            # the set of ``height`` as far as the replay knows it now (a later block of a
            # chunk may still change it: ``_cert_problem`` checks again then)
            vset = self.executor.validators_at(height)
            sets[vset.hash()] = vset
            self._cert_sets[key] = vset.hash()
            certs.append((key, data, height, block_id, vset.hash()))

        for h, block, _ in decoded:
            if block.last_commit is not None:
                carried[h - 1] = block.last_commit.encode()
        same: list[int] = []
        for h, block, stored in decoded:
            txs.extend(block.txs)
            if block.last_commit is not None:
                job(("carried", h - 1), carried[h - 1], h - 1,
                    block.header.last_block_id or b"")
            if stored is not None:
                if carried.get(h) == stored:
                    same.append(h)  # the very bytes carried by block h+1: check once
                else:
                    job(("stored", h), stored, h, block.block_id())
        for h in same:
            self._cert_sets[("stored", h)] = self._cert_sets[("carried", h)]
        pending = self.verifier.submit(txs, certs, set_table(list(sets.values())))
        if not same:
            return pending

        def result() -> tuple[list[TxCheck], dict[tuple[str, int], str]]:
            tx_checks, bad = pending.result()
            for h in same:
                if ("carried", h) in bad:
                    bad[("stored", h)] = bad[("carried", h)]
            return tx_checks, bad

        return PendingChecks(None, None, result)

    def _execute_chunk(self, decoded: list[tuple[int, Block, bytes | None]],
                       groups: list[tuple[int, int, PendingChecks]],
                       next_block: Block | None) -> None:
        for start, stop, pending in groups:
            tx_checks, bad_certs = pending.result()
            offset = 0
            for i in range(start, stop):
                h, block, stored = decoded[i]
                n = len(block.txs)
                checks = tx_checks[offset:offset + n]
                offset += n
                nxt = decoded[i + 1][1] if i + 1 < len(decoded) else next_block
                self._execute(h, block, checks, bad_certs, stored, nxt)
                self.checked = h
                if self.progress is not None:
                    self.progress.update(h, self.txs)

    def _execute(self, h: int, block: Block, checks: list[TxCheck],
                 bad_certs: dict[tuple[str, int], str], stored: bytes | None,
                 nxt: Block | None) -> None:
        g = self.genesis
        hdr = block.header
        if hdr.chain_id != g.chain_id:
            raise AuditFailure(h, "the header names another chain", field="header.chain_id",
                               expected=g.chain_id, found=hdr.chain_id)
        if h > 1:
            assert block.last_commit is not None  # the executor's structure check
            why = self._cert_problem(("carried", h - 1), bad_certs, block.last_commit.encode(),
                                     h - 1, hdr.last_block_id or b"")
            if why is not None:
                raise AuditFailure(h - 1, f"the commit certificate of block {h - 1} (carried "
                                          f"in block {h}'s last_commit) is invalid: {why}",
                                   field="last_commit")
            self.certificates += 1
            self.signatures += len(block.last_commit.sigs) if block.last_commit else 0
        for i, check in enumerate(checks):
            if check is not None:
                raise AuditFailure(h, f"transaction {i} {check[1]}", tx=i,
                                   tx_hash=sha256(block.txs[i]).hex(), field=check[0])
        if hdr.state_root != self.state_root:
            raise AuditFailure(h, f"the header's state root is not the state recomputed after "
                                  f"block {h - 1}", field="header.state_root",
                               expected=self.state_root.hex(), found=hdr.state_root.hex())
        self._check_set_hashes(h, block)
        self._presigned = True  # verified above: decoding, chain id and signature
        try:
            txs = self.executor.validate(block)
        except BlockInvalid as exc:
            raise AuditFailure(h, f"block {h} is not a valid next block: {exc}") from None
        finally:
            self._presigned = False
        cert = self._certificate_for(h, block, stored, nxt, bad_certs)
        prev_root = self.state_root
        prev_time = self.executor.last_block_time() if h > 1 else None
        try:
            applied = self.executor.apply(block, cert, txs)
        except Exception as exc:  # the rules refusing a committed block is a finding
            raise AuditFailure(h, f"executing block {h} failed: {type(exc).__name__}: "
                                  f"{exc}") from None
        if self.source.wants_results:
            self.source.check_block_result(
                h, applied.state_root, [_receipt_bytes(r) for r in applied.receipts])
        self._nonce_order(h, txs, applied)
        self._note_sets(h)
        seed = (sha256(block.last_commit.encode()) if block.last_commit is not None
                else g.hash)
        self.rules.on_block(Moment(h, hdr.time, prev_time, prev_root, seed), applied, txs,
                            {ev.hash() for ev in block.evidence})

    def _certificate_for(self, h: int, block: Block, stored: bytes | None,
                         nxt: Block | None, bad_certs: dict[tuple[str, int], str]
                         ) -> CommitCertificate:
        """The certificate that commits block ``h``: the one block h+1 carries, or for the
        last block the source's own. The source's certificate is checked either way (it
        is what the node serves as proof of finality)."""
        stored_cert = None
        block_id = block.block_id()
        if stored is not None:
            why = self._cert_problem(("stored", h), bad_certs, stored, h, block_id)
            with contextlib.suppress(MessageError):
                stored_cert = CommitCertificate.decode(stored)
            if stored_cert is not None and (stored_cert.height, stored_cert.block_id) != (
                    h, block_id):
                raise AuditFailure(h, f"the source's commit certificate of block {h} "
                                      "certifies another block", field="certificate.block_id",
                                   expected=block_id.hex(), found=stored_cert.block_id.hex())
            if why is not None or stored_cert is None:
                raise AuditFailure(h, f"the source's commit certificate of block {h} is "
                                      f"invalid: {why}", field="certificate")
            self.certificates += 1
            self.signatures += len(stored_cert.sigs)
        if nxt is not None:
            if nxt.last_commit is None:
                raise AuditFailure(h + 1, f"block {h + 1} carries no certificate of block {h}",
                                   field="last_commit")
            cert = nxt.last_commit
        elif stored_cert is None:
            raise AuditFailure(h, f"the source has no commit certificate for the last block "
                                  f"{h}", field="certificate")
        else:
            cert = stored_cert
        if cert.height != h or cert.block_id != block_id:
            where = f"block {h + 1}'s last_commit" if nxt is not None else "the certificate"
            raise AuditFailure(h, f"{where} does not certify block {h}",
                               field="certificate.block_id", expected=block_id.hex(),
                               found=cert.block_id.hex())
        return cert

    def _cert_problem(self, key: tuple[str, int], bad_certs: dict[tuple[str, int], str],
                      data: bytes, height: int, block_id: bytes) -> str | None:
        """Why the certificate ``key`` of block ``height`` is invalid against the set of
        that height (None if it is valid). The queued check's answer stands when it used
        that set; otherwise (a change the replay had not reached when it was queued) the
        certificate is checked again now."""
        used = self._cert_sets.pop(key, None)
        vset = self.executor.validators_at(height)
        if used == vset.hash():
            return bad_certs.get(key)
        job: CertJob = (key, data, height, block_id, vset.hash())
        return check_certs(self.genesis.chain_id, set_table([vset]), [job]).get(key)

    def _check_set_hashes(self, h: int, block: Block) -> None:
        """The header must commit to the set the replay computed for its height and for
        the next: a header that names another next set is a forged validator change."""
        hdr = block.header
        vset = self.executor.validators_at(h)
        if hdr.validators_hash != vset.hash():
            raise AuditFailure(h, f"the header's validator set is not the one the replayed "
                                  f"chain gives height {h}", field="header.validators_hash",
                               expected=vset.hash().hex(), found=hdr.validators_hash.hex())
        nxt = self.executor.validators_at(h + 1)
        if hdr.next_validators_hash != nxt.hash():
            raise AuditFailure(h, f"the header commits to a validator set for height {h + 1} "
                                  "that the replayed governance did not produce (a forged "
                                  "validator change)", field="header.next_validators_hash",
                               expected=nxt.hash().hex(), found=hdr.next_validators_hash.hex())

    def _nonce_order(self, h: int, txs: list[Transaction], applied: Applied) -> None:
        for i, (tx, receipt) in enumerate(zip(txs, applied.receipts, strict=True)):
            self.txs += 1
            last = self.nonces.get(tx.sender, 0)
            if receipt.ok:
                if tx.nonce != last + 1:
                    raise AuditFailure(h, f"transaction {i} was applied out of nonce order",
                                       tx=i, tx_hash=tx.hash.hex(), field="nonce",
                                       expected=last + 1, found=tx.nonce)
                self.nonces[tx.sender] = tx.nonce
                self.applied += 1
            else:
                if receipt.code == "bad_nonce" and tx.nonce == last + 1:
                    raise AuditFailure(h, f"transaction {i} was refused for its nonce although "
                                          "it is the sender's next", tx=i,
                                       tx_hash=tx.hash.hex(), field="nonce",
                                       expected=last + 1, found=tx.nonce)
                self.rejected[receipt.code] += 1


def _interrupted_failure(signum: int, checked: int, final: bool = False) -> AuditFailure:
    """The finding of an interrupted audit: where it stopped."""
    name = signal.Signals(signum).name
    if final:
        return AuditFailure(checked, f"the audit was interrupted by {name} while comparing "
                                     "the source's own records with the replay (every "
                                     "block was checked)")
    return AuditFailure(checked + 1, f"the audit was interrupted by {name} before block "
                                     f"{checked + 1} was checked")


def _receipt_bytes(receipt: Any) -> bytes:
    from node.executor import receipt_bytes

    return receipt_bytes(receipt)


def audit(genesis: Genesis, source: Source, *, workers: int | None = None,
          progress: Progress | None = None, verify_seconds: float = 0.3,
          work_dir: str | Path | None = None) -> AuditReport:
    """Replay and check the chain ``source`` serves against ``genesis``. ``workers``:
    signature-checking processes (None: one per spare core, 0: inline);
    ``verify_seconds``: how long to measure this machine's Ed25519 verify rate;
    ``work_dir``: replay on disk there instead of in memory (see ``Auditor``)."""
    auditor = Auditor(genesis, source, workers=workers, progress=progress,
                      verify_seconds=verify_seconds, work_dir=work_dir)
    try:
        return auditor.run()
    finally:
        auditor.close()
