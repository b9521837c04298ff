"""The mempool: signed transactions waiting for a block, checked once on entry.

Pure logic, no asyncio: the node wraps it. Entry is split in two so the expensive part can
run off the event loop:

* ``precheck(tx_bytes)`` is thread-safe: size check, duplicate check against the seen-cache
  (one sha256, no decoding), canonical decode, chain id, and the Ed25519 signature, which is
  verified at most once per transaction hash on this node (a bounded verdict cache remembers
  good and bad signatures alike, and concurrent prechecks of the same bytes wait for one
  verification instead of doing two).
* ``add_checked(tx)`` must be called from the one thread that owns the pool: nonce ordering,
  caps, the application's stateful check, insertion.

``add(tx_bytes)`` does both in one call. Every rejection is an ``AddResult`` with a stable
code (see docs/storage.md, section "Mempool") and changes nothing in the pool.

Per sender, transactions are kept by nonce. A transaction whose nonce continues the
contiguous run that starts at the sender's committed next nonce is *ready*; a later nonce,
within a small gap window, is *pending* until the missing nonces arrive. ``reap`` hands out
ready transactions in the order they became ready, which is arrival order except that a
transaction that arrived before its predecessor waits for it, so a sender's nonces always
come out ascending and contiguous.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from chain.hashing import sha256
from chain.tx import MAX_TX_SIZE, Transaction, TxError

OK = "ok"
BAD_ENCODING = "bad_encoding"
TOO_LARGE = "too_large"
BAD_CHAIN_ID = "bad_chain_id"
BAD_SIGNATURE = "bad_signature"
DUPLICATE = "duplicate"
NONCE_TOO_LOW = "nonce_too_low"
NONCE_IN_USE = "nonce_in_use"
NONCE_GAP_TOO_LARGE = "nonce_gap_too_large"
MEMPOOL_FULL = "mempool_full"
SENDER_FULL = "sender_full"

# ``check(tx)`` returns ``(code, reason)`` or any object with ``code`` and ``reason``
# attributes (such as ``contracts.app.Receipt``).
Checker = Callable[[Transaction], Any]
NextNonce = Callable[[bytes], int]
Verifier = Callable[[Transaction], bool]


@dataclass(frozen=True)
class AddResult:
    """The outcome of offering one transaction. ``code == "ok"`` means it is in the pool.

    ``tx_hash`` is the transaction id when the bytes were at least small enough to hash
    (sha256 of the bytes as given), else ``None``. ``ready`` tells an accepted transaction
    that can go into the next block from one waiting for a lower nonce.
    """

    code: str
    reason: str
    tx_hash: bytes | None
    ready: bool = False

    @property
    def ok(self) -> bool:
        return self.code == OK


class TxRejected(Exception):
    """Raised by ``precheck``: the transaction is refused with a stable ``code``."""

    def __init__(self, code: str, reason: str, tx_hash: bytes | None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.tx_hash = tx_hash

    def result(self) -> AddResult:
        return AddResult(self.code, self.reason, self.tx_hash)


@dataclass(frozen=True)
class MempoolConfig:
    """Limits. Every one bounds memory: nothing in the pool grows without a cap."""

    max_txs: int = 20_000
    max_bytes: int = 64 * 1024 * 1024
    max_tx_bytes: int = MAX_TX_SIZE
    max_per_sender: int = 128
    # How many nonces may be missing between a sender's contiguous run and a new tx.
    max_nonce_gap: int = 16
    seen_cache_size: int = 100_000
    verified_cache_size: int = 100_000
    # Re-run the application's check on every waiting transaction after each block. When
    # False, only senders whose committed nonce moved are re-checked: cheaper for a big
    # pool, at the price of keeping a transaction that state changes made invalid until
    # it fails in a block.
    recheck_all: bool = True
    # The code the checker gives a nonce that is not committed state's next one. For a
    # transaction queued behind its sender's earlier ones that verdict is expected, and the
    # mempool orders nonces itself, so it is ignored there. The checker must judge the nonce
    # after everything else (contracts' check_tx does), or later checks would be skipped.
    checker_nonce_code: str | None = "bad_nonce"

    def __post_init__(self) -> None:
        for name in ("max_txs", "max_bytes", "max_tx_bytes", "max_per_sender",
                     "seen_cache_size", "verified_cache_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"mempool {name} must be at least 1")
        if self.max_nonce_gap < 0:
            raise ValueError("mempool max_nonce_gap must not be negative")
        if self.max_tx_bytes > MAX_TX_SIZE:
            # a larger transaction could never go into a block (node/executor.py)
            raise ValueError(f"mempool max_tx_bytes must be at most {MAX_TX_SIZE}")


class _LRU:
    """A bounded map that forgets its least recently written key first (``get`` and ``in``
    do not refresh a key).

    Not ``cachetools.LRUCache``: that one refreshes a key on every read (and has no public
    read that does not), which would keep the verdicts of just-committed transactions over
    those still pooled, and it measured 2.4 times slower for a transaction's cache work
    (3.1 us against 1.3 us at 100 000 entries) for no gain over these lines.
    """

    __slots__ = ("_data", "_cap")

    def __init__(self, cap: int) -> None:
        self._data: OrderedDict[bytes, bool] = OrderedDict()
        self._cap = cap

    def get(self, key: bytes) -> bool | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bool = True) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self._cap:
            self._data.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._data.pop(key, None)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class _Entry:
    __slots__ = ("tx", "data", "hash", "ready")

    def __init__(self, tx: Transaction, data: bytes, tx_hash: bytes) -> None:
        self.tx = tx
        self.data = data
        self.hash = tx_hash
        self.ready = False


class Mempool:
    """Transactions waiting for a block; see the module docstring for the rules.

    ``check(tx) -> (code, reason)`` (or an object with ``code`` and ``reason``, such as
    ``contracts.app.Application.check_tx``'s receipt) is the application's check against
    committed state and must return ``"ok"`` to accept. The mempool orders nonces itself:
    the checker's ``config.checker_nonce_code`` verdict is ignored for a transaction queued
    behind its sender's earlier ones, so the checker must judge the nonce last.
    ``next_nonce(sender) -> int`` is the sender's next nonce in committed state (1 for a new
    sender). ``verify(tx) -> bool`` checks the signature; tests inject a counting fake.
    """

    def __init__(
        self,
        chain_id: str,
        check: Checker,
        next_nonce: NextNonce,
        config: MempoolConfig | None = None,
        verify: Verifier = Transaction.verify_signature,
    ) -> None:
        self.chain_id = chain_id
        self.config = config or MempoolConfig()
        self._check = check
        self._next_nonce = next_nonce
        self._verify = verify
        # Guards only the caches that precheck (any thread) shares with the owning thread.
        self._lock = threading.Lock()
        self._verdicts = _LRU(self.config.verified_cache_size)
        self._inflight: dict[bytes, threading.Event] = {}
        self._seen = _LRU(self.config.seen_cache_size)
        # Owned by one thread: the pool itself.
        self._by_hash: dict[bytes, _Entry] = {}
        self._by_sender: dict[bytes, dict[int, _Entry]] = {}
        self._ready: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0

    # ---- the signature, verified once ---------------------------------------------------

    def verified(self, tx_hash: bytes) -> bool:
        """True if this node already verified a valid signature for ``tx_hash``.

        The executor uses it to skip re-verifying transactions it saw in the mempool.
        Thread-safe.
        """
        with self._lock:
            return self._verdicts.get(tx_hash) is True

    def check_signature(self, tx: Transaction) -> bool:
        """Verify ``tx``'s signature unless this node already did; remember the verdict.

        Thread-safe. Concurrent calls for the same transaction run one verification: the
        later callers wait for the first one's verdict.
        """
        tx_hash = tx.hash
        while True:
            with self._lock:
                verdict = self._verdicts.get(tx_hash)
                if verdict is not None:
                    return verdict
                event = self._inflight.get(tx_hash)
                if event is None:
                    event = threading.Event()
                    self._inflight[tx_hash] = event
                    break
            event.wait()
            # Loop: normally the verdict is cached now. If the verifier raised, there is
            # no verdict and this caller becomes the one to verify.
        try:
            verdict = bool(self._verify(tx))
            with self._lock:
                self._verdicts.put(tx_hash, verdict)
            return verdict
        finally:
            with self._lock:
                del self._inflight[tx_hash]
            event.set()

    # ---- entry ----------------------------------------------------------------------------

    def precheck(self, tx_bytes: bytes) -> Transaction:
        """Stateless checks, safe to run in a worker thread; raise ``TxRejected`` if bad.

        Those of ``precheck_unsigned``, then the signature (cached).
        """
        tx = self.precheck_unsigned(tx_bytes)
        self._check_signed(tx, tx.hash)
        return tx

    def precheck_unsigned(self, tx_bytes: bytes) -> Transaction:
        """The cheap stateless checks, in order: size, seen-cache duplicate, canonical
        decoding, chain id; raise ``TxRejected`` if bad. (``POST /txs?mode=async`` runs
        these before it answers.)"""
        if not isinstance(tx_bytes, bytes | bytearray | memoryview):
            raise TxRejected(BAD_ENCODING, "transaction is not bytes", None)
        tx_bytes = bytes(tx_bytes)
        if len(tx_bytes) > self.config.max_tx_bytes:
            raise TxRejected(
                TOO_LARGE,
                f"transaction of {len(tx_bytes)} bytes exceeds {self.config.max_tx_bytes}",
                None,
            )
        # For canonical bytes this is the transaction id, and only canonical bytes are ever
        # admitted, so a re-gossiped transaction is refused for the price of one hash.
        tx_hash = sha256(tx_bytes)
        with self._lock:
            seen = tx_hash in self._seen
        # The pool map belongs to the owning thread; a membership test is one atomic dict
        # lookup, and it catches pooled transactions the bounded seen-cache has forgotten.
        if seen or tx_hash in self._by_hash:
            raise TxRejected(DUPLICATE, "transaction already seen", tx_hash)
        try:
            tx = Transaction.decode(tx_bytes, max_size=self.config.max_tx_bytes)
        except TxError as exc:
            raise TxRejected(exc.code, exc.message, tx_hash) from exc
        self._check_chain(tx, tx_hash)
        return tx

    def _check_chain(self, tx: Transaction, tx_hash: bytes) -> None:
        if tx.chain_id != self.chain_id:
            raise TxRejected(
                BAD_CHAIN_ID, f"transaction is for chain {tx.chain_id!r}, not {self.chain_id!r}",
                tx_hash,
            )

    def _check_signed(self, tx: Transaction, tx_hash: bytes) -> None:
        if not self.check_signature(tx):
            raise TxRejected(BAD_SIGNATURE, "signature does not verify for the sender", tx_hash)

    def _check_stateless(self, tx: Transaction, tx_hash: bytes) -> None:
        self._check_chain(tx, tx_hash)
        self._check_signed(tx, tx_hash)

    def add(self, tx_bytes: bytes) -> AddResult:
        """Offer one signed transaction (its canonical bytes). Never raises for bad input."""
        try:
            tx = self.precheck(tx_bytes)
        except TxRejected as exc:
            return exc.result()
        return self.add_checked(tx)

    def add_checked(self, tx: Transaction) -> AddResult:
        """The stateful half of ``add`` for a transaction that went through ``precheck``.

        Safe for any decoded transaction: the chain id and the signature are checked again
        here, the signature from the cache (so no second verification).
        """
        data = tx.encode()
        tx_hash = tx.hash
        if len(data) > self.config.max_tx_bytes:
            return AddResult(TOO_LARGE, f"transaction of {len(data)} bytes exceeds "
                             f"{self.config.max_tx_bytes}", tx_hash)
        with self._lock:
            seen = tx_hash in self._seen
        if seen or tx_hash in self._by_hash:
            return AddResult(DUPLICATE, "transaction already seen", tx_hash)
        try:
            self._check_stateless(tx, tx_hash)
        except TxRejected as exc:
            return exc.result()

        queue = self._by_sender.get(tx.sender, {})
        expected = self._next_nonce(tx.sender)
        if tx.nonce < expected:
            return AddResult(NONCE_TOO_LOW,
                             f"nonce {tx.nonce} is below the sender's next nonce {expected}",
                             tx_hash)
        if tx.nonce in queue:
            return AddResult(NONCE_IN_USE,
                             f"another transaction with nonce {tx.nonce} is already waiting",
                             tx_hash)
        tip = _contiguous_tip(queue, expected)
        if tx.nonce - (tip + 1) > self.config.max_nonce_gap:
            return AddResult(
                NONCE_GAP_TOO_LARGE,
                f"nonce {tx.nonce} is more than {self.config.max_nonce_gap} ahead of the "
                f"next usable nonce {tip + 1}",
                tx_hash,
            )
        if len(queue) >= self.config.max_per_sender:
            return AddResult(SENDER_FULL,
                             f"sender already has {len(queue)} transactions waiting "
                             f"(limit {self.config.max_per_sender})", tx_hash)
        if (len(self._by_hash) >= self.config.max_txs
                or self._bytes + len(data) > self.config.max_bytes):
            return AddResult(MEMPOOL_FULL,
                             f"mempool is full ({len(self._by_hash)} transactions, "
                             f"{self._bytes} bytes)", tx_hash)
        code, reason = self._run_check(tx, expected)
        if code != OK:
            return AddResult(code, reason, tx_hash)

        entry = _Entry(tx, data, tx_hash)
        queue = self._by_sender.setdefault(tx.sender, queue)
        queue[tx.nonce] = entry
        self._by_hash[tx_hash] = entry
        self._bytes += len(data)
        with self._lock:
            self._seen.put(tx_hash)
        if tx.nonce == tip + 1:
            self._settle(queue, expected)
        if entry.ready:
            return AddResult(OK, "ready", tx_hash, ready=True)
        return AddResult(OK, f"waiting for nonce {tip + 1}", tx_hash)

    def _run_check(self, tx: Transaction, expected: int) -> tuple[str, str]:
        result = self._check(tx)
        if isinstance(result, tuple):
            code, reason = result
        else:
            code, reason = result.code, result.reason
        if code == self.config.checker_nonce_code and tx.nonce > expected:
            return OK, ""
        return code, reason

    def _settle(self, queue: dict[int, _Entry], expected: int) -> int:
        """Make the sender's ready set exactly its contiguous run from ``expected``, and keep
        that run in nonce order inside the global ready order. Returns the first nonce after
        the run. Costs O(k log k) for a sender with k waiting transactions (k is capped)."""
        run = expected
        moved = False
        for nonce in sorted(queue):
            entry = queue[nonce]
            if nonce == run:
                if not entry.ready:
                    entry.ready = True
                    self._ready[entry.hash] = entry
                    moved = True
                elif moved:
                    # A lower nonce just became ready behind this one: keep nonce order.
                    self._ready.move_to_end(entry.hash)
                run += 1
            elif entry.ready:
                entry.ready = False
                del self._ready[entry.hash]
        return run

    # ---- leaving --------------------------------------------------------------------------

    def reap(self, max_txs: int, max_bytes: int) -> list[bytes]:
        """Ready transactions for a block, oldest-ready first, at most ``max_txs`` of them
        and ``max_bytes`` in total. Stops at the first transaction that does not fit, so a
        sender's nonces always come out contiguous. The pool is not changed."""
        out: list[bytes] = []
        total = 0
        for entry in self._ready.values():
            if len(out) >= max_txs or total + len(entry.data) > max_bytes:
                break
            out.append(entry.data)
            total += len(entry.data)
        return out

    def update(
        self,
        committed_tx_hashes: Iterable[bytes],
        next_nonce: NextNonce | None = None,
        check: Checker | None = None,
    ) -> list[bytes]:
        """After a block commits: evict its transactions, then re-check the rest.

        ``next_nonce`` and ``check`` replace the injected ones when given (the node passes
        views of the newly committed state). A waiting transaction is dropped if its nonce
        is now too low, if ``check`` now refuses it, or if it is left too far beyond its
        sender's contiguous run; a transaction after a dropped one goes back to pending.
        Committed hashes stay in the seen-cache so late gossip of them is cheap to refuse.
        Returns the hashes of the transactions dropped (not those committed).
        """
        if next_nonce is not None:
            self._next_nonce = next_nonce
        if check is not None:
            self._check = check
        committed = list(committed_tx_hashes)
        with self._lock:
            for tx_hash in committed:
                self._seen.put(tx_hash)
        moved: set[bytes] = set()
        for tx_hash in committed:
            entry = self._by_hash.get(tx_hash)
            if entry is not None:
                moved.add(entry.tx.sender)
                self._remove(entry)

        dropped: list[bytes] = []
        for sender in list(self._by_sender):
            dropped.extend(self._recheck_sender(sender, sender in moved))
        if dropped:
            with self._lock:
                # Forget refused transactions so one that becomes valid later can be
                # offered again; the verdict cache still spares its signature.
                for tx_hash in dropped:
                    self._seen.discard(tx_hash)
        return dropped

    def _recheck_sender(self, sender: bytes, moved: bool) -> list[bytes]:
        queue = self._by_sender[sender]
        expected = self._next_nonce(sender)
        if not self.config.recheck_all and not moved:
            first = queue[min(queue)]
            # A ready lowest nonce equals the committed next nonce before this block, so
            # if it still equals it now, this sender's committed nonce did not move.
            if first.ready and first.tx.nonce == expected:
                return []
        dropped: list[bytes] = []
        keep: list[_Entry] = []
        for nonce in sorted(queue):
            entry = queue[nonce]
            if nonce < expected or self._run_check(entry.tx, expected)[0] != OK:
                dropped.append(entry.hash)
                self._remove(entry)
            else:
                keep.append(entry)
        # Re-derive which survivors are ready, then drop those left beyond the window.
        run = self._settle(queue, expected) if queue else expected
        for entry in keep:
            if not entry.ready and entry.tx.nonce - run > self.config.max_nonce_gap:
                dropped.append(entry.hash)
                self._remove(entry)
        return dropped

    def _remove(self, entry: _Entry) -> None:
        del self._by_hash[entry.hash]
        queue = self._by_sender[entry.tx.sender]
        del queue[entry.tx.nonce]
        if not queue:
            del self._by_sender[entry.tx.sender]
        if entry.ready:
            del self._ready[entry.hash]
            entry.ready = False
        self._bytes -= len(entry.data)

    # ---- views ----------------------------------------------------------------------------

    def size(self) -> int:
        """Transactions in the pool, ready and pending."""
        return len(self._by_hash)

    def bytes(self) -> int:
        """Total encoded size of the transactions in the pool."""
        return self._bytes

    def ready_count(self) -> int:
        return len(self._ready)

    def has(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> bytes | None:
        """The signed bytes of a transaction in the pool, or ``None``."""
        entry = self._by_hash.get(tx_hash)
        return None if entry is None else entry.data

    def get_tx(self, tx_hash: bytes) -> Transaction | None:
        """The decoded transaction in the pool (saves a block validator a decode)."""
        entry = self._by_hash.get(tx_hash)
        return None if entry is None else entry.tx

    def seen(self, tx_hash: bytes) -> bool:
        """True if the seen-cache holds ``tx_hash`` (pooled or committed recently)."""
        with self._lock:
            return tx_hash in self._seen

    def sender_nonces(self, sender: bytes) -> list[int]:
        """The nonces waiting for ``sender``, ascending (for APIs and tests)."""
        return sorted(self._by_sender.get(sender, ()))


def _contiguous_tip(queue: dict[int, _Entry], expected: int) -> int:
    """The highest nonce of the run ``expected, expected+1, ...`` present in ``queue``,
    or ``expected - 1`` if ``expected`` itself is missing."""
    tip = expected - 1
    while tip + 1 in queue:
        tip += 1
    return tip
