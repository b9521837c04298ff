"""Signature-aware verification of certificates and evidence for the simulator.

With signatures on these are exactly ``consensus.certificate.verify`` (the standalone
certificate check block sync and the auditor use, over ``chain.certificate``) and
the evidence's own ``verify`` (duplicate votes or proposals). With signatures off (the simulator's fast mode, in which
every signature is 64 zero bytes) they perform the same checks minus Ed25519.
"""

from __future__ import annotations

from chain.certificate import CommitCertificate
from chain.evidence import Evidence
from chain.validators import ValidatorSet
from consensus.certificate import verify

CHAIN_ID = "sim-chain"


def certificate_ok(cert: CommitCertificate, validators: ValidatorSet, height: int,
                   block_id: bytes, signatures: bool) -> tuple[bool, str]:
    """``verify_certificate``, or its signature-free part when signatures are off."""
    if signatures:
        return verify(cert, block_id, validators, CHAIN_ID, height)
    if cert.height != height or cert.block_id != block_id:
        return False, "certificate is for another height or block"
    seen: set[int] = set()
    for s in cert.sigs:
        if s.validator in seen or not 0 <= s.validator < len(validators):
            return False, f"bad or repeated validator {s.validator}"
        seen.add(s.validator)
    if not validators.has_quorum(validators.power_of(list(seen))):
        return False, "not more than 2/3 of the power"
    return True, "ok"


def evidence_ok(ev: Evidence, validators: ValidatorSet,
                signatures: bool) -> tuple[bool, str]:
    """``ev.verify`` against ``validators`` (the set of the evidence's height), or its
    signature-free part; with signatures off the validator index is still checked."""
    if not signatures and not 0 <= ev.validator < len(validators):
        return False, f"validator {ev.validator} is not in the set of height {ev.height}"
    return ev.verify(CHAIN_ID, validators) if signatures else ev.check_shape()
