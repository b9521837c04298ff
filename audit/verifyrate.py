"""The Ed25519 verify rate of this machine: the baseline every benchmark reports against.

Measured the way a node checks a transaction (``PublicKey.verify`` of a signed payload in
the ``tx/v1`` domain), on one core, in the same run as the figure it is compared with.
"""

from __future__ import annotations

import time

from chain.crypto import Domain, PrivateKey

_CHAIN = "mutual-calibration"


def measure_verify_rate(seconds: float = 0.3) -> float:
    """Ed25519 verifications per second on one core, measured for ``seconds``."""
    key = PrivateKey(b"\x07" * 32)
    payload = b"\x85" + b"x" * 180  # about the size of a transaction's signed payload
    sig = key.sign(Domain.TX, _CHAIN, payload)
    pub = key.public_key
    if not pub.verify(Domain.TX, _CHAIN, payload, sig):  # also warms the key cache
        raise RuntimeError("Ed25519 self-check failed")
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            pub.verify(Domain.TX, _CHAIN, payload, sig)
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)
