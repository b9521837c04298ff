"""Generate tests/vectors/transactions.json: one signed example of every transaction type,
then examples of optional fields (``assess_claim`` with its ``accident`` finding,
``register_member`` of a minor with its ``guardian_tag``, one under two identity keys),
then the governance types (``propose`` once per change kind, ``vote_proposal``) last.

Each vector gives the inputs (chain id, type, sender, nonce, body with every field's kind)
and the exact bytes another implementation must produce: the canonical unsigned payload,
the bytes that are signed (domain-separated), the Ed25519 signature by the fixed seed key
0x01 * 32, the signed transaction, and its hash. Run ``python tests/vectors/generate.py``
to rewrite the file; tests/test_contracts_vectors.py fails if it is stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # allow running as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from chain.crypto import Domain, PrivateKey, sign_bytes  # noqa: E402
from chain.hashing import sha256  # noqa: E402
from chain.tx import Transaction, to_jsonable  # noqa: E402
from contracts.identity import identity_tag, identity_tags  # noqa: E402
from contracts.txtypes import TX_TYPES  # noqa: E402

OUT = Path(__file__).resolve().parent / "transactions.json"
CHAIN_ID = "mutual-vectors"
SEED = b"\x01" * 32


#: identity keys of the vectors' registrar (never on chain; here so a client can check its
#: HMAC: tag = HMAC-SHA256(key, canonical identity text), docs/privacy.md)
IDENTITY_KEYS = {1: sha256(b"vector identity key 1"), 2: sha256(b"vector identity key 2")}


#: valid resident IDs (GB 11643 check digits), made up for the vectors
ADULT_ID, CHILD_ID, LATER_ID = "110105199005010018", "110105201803090016", "110105198001010016"


def _h(label: str) -> bytes:
    return sha256(label.encode())


def bodies(member: bytes) -> dict[str, dict[str, Any]]:
    """One representative body per type (the fixed key plays every role here)."""
    return {
        "register_member": {
            "member": member,
            "identity_tags": identity_tags(IDENTITY_KEYS, [1], ADULT_ID),
            "birth_date": "1990-05-01", "health_commitment": _h("salt-1 || health"),
            "credit_attestation": _h("credit attestation"), "credit_passed": True,
        },
        "approve_juror": {"member": member, "exam_ref": _h("exam")},
        "file_claim": {"disease": "malignant_tumor", "diagnosed_ms": 1_547_481_600_000,
                       "accident": False, "evidence_hash": _h("evidence")},
        "assess_claim": {"claim_id": 1, "approve": True, "report_hash": _h("report")},
        "object_claim": {"claim_id": 1, "reason_hash": _h("objection")},
        "appeal_claim": {"claim_id": 2, "reason_hash": _h("appeal")},
        "jury_vote": {"claim_id": 2, "pay": True},
        "record_arrears": {"member": member, "period": 7},
        "record_payment": {"member": member, "period": 7},
        "leave": {},
        "record_refund": {"member": member, "payment_ref": _h("refund-transfer")},
    }


#: the governance types, vectors after every other (docs/governance.md)
GOV_TYPES = ("propose", "vote_proposal")
_DEADLINE = 1_705_000_000_000


def gov_bodies() -> list[tuple[str, dict[str, Any]]]:
    """``propose`` once per change kind, then ``vote_proposal``."""
    base = {"deadline_ms": _DEADLINE}
    return [
        ("propose", {**base, "kind": "add_validator", "pub_key": _h("new validator"),
                     "power": 10, "node_key": _h("new node"), "name": "v4",
                     "operator": _h("new operator")}),
        ("propose", {**base, "kind": "remove_validator", "pub_key": _h("old validator")}),
        ("propose", {**base, "kind": "set_power", "pub_key": _h("old validator"),
                     "power": 7}),
        ("propose", {**base, "kind": "rotate_key", "pub_key": _h("old validator"),
                     "new_pub_key": _h("rotated validator")}),
        ("propose", {**base, "kind": "rotate_key", "pub_key": _h("old validator"),
                     "new_pub_key": _h("rotated validator 2"),
                     "new_node_key": _h("rotated node")}),
        ("propose", {**base, "kind": "grant_role", "account": _h("new registrar"),
                     "role": "registrar"}),
        ("propose", {**base, "kind": "revoke_role", "account": _h("old assessor"),
                     "role": "assessor"}),
        ("propose", {**base, "kind": "set_params", "from_period": 12,
                     "params": {"fee_bps": 600, "jury": {"mode": "panel"},
                                "disease_overrides": {"thyroid_cancer": 4_000_000}}}),
        # adding an identity key for new members (docs/privacy.md)
        ("propose", {**base, "kind": "set_params", "from_period": 13,
                     "params": {"identity_key_ids": [1, 2]}}),
        ("vote_proposal", {"proposal_id": 1, "yes": True}),
        ("vote_proposal", {"proposal_id": 2, "yes": False}),
    ]


def extra_bodies() -> list[tuple[str, dict[str, Any]]]:
    """Further examples, after one of each type: the optional fields' forms."""
    return [
        ("assess_claim", {"claim_id": 3, "approve": False, "accident": False,
                          "report_hash": _h("report-waiting")}),
        # a child joins on the guardian's credit attestation
        ("register_member", {
            "member": _h("child member key"),
            "identity_tags": identity_tags(IDENTITY_KEYS, [1], CHILD_ID),
            "birth_date": "2018-03-09", "health_commitment": _h("salt-2 || child health"),
            "credit_attestation": _h("guardian credit attestation"), "credit_passed": True,
            "guardian_tag": identity_tag(IDENTITY_KEYS[1], ADULT_ID),
        }),
        # after a rotation to identity_key_ids [1, 2]: one tag under each key in use
        ("register_member", {
            "member": _h("member after rotation"),
            "identity_tags": identity_tags(IDENTITY_KEYS, [1, 2], LATER_ID),
            "birth_date": "1980-01-01", "health_commitment": _h("salt-3 || health"),
            "credit_attestation": _h("credit attestation 3"), "credit_passed": True,
        }),
    ]


def build() -> dict[str, Any]:
    key = PrivateKey(SEED)
    pk = key.public_key.raw
    all_bodies = bodies(pk)
    if set(all_bodies) | set(GOV_TYPES) != set(TX_TYPES):
        raise SystemExit("vectors must cover exactly the transaction types in TX_TYPES")
    vectors = []
    cases = ([(name, all_bodies[name]) for name in sorted(all_bodies)] + extra_bodies()
             + gov_bodies())
    for nonce, (name, body) in enumerate(cases, start=1):
        tx = Transaction.create(key, CHAIN_ID, name, nonce, body)
        payload = tx.signing_payload()
        vectors.append({
            "type": name,
            "role": " or ".join(TX_TYPES[name].roles),
            "chain_id": CHAIN_ID,
            "sender_hex": pk.hex(),
            "nonce": nonce,
            "body": to_jsonable(body),
            "body_kinds": {k: TX_TYPES[name].all_fields[k] for k in body},
            "unsigned_hex": payload.hex(),
            "sign_bytes_hex": sign_bytes(Domain.TX, CHAIN_ID, payload).hex(),
            "signature_hex": tx.sig.hex(),
            "signed_hex": tx.encode().hex(),
            "tx_hash_hex": tx.hash.hex(),
        })
    return {
        "about": "mutual-ledger transaction vectors; see docs/transactions.md and "
                 "docs/encoding.md. body values of kind bin32 are shown as hex; they are "
                 "msgpack bin in the encoding.",
        "seed_hex": SEED.hex(),
        "public_key_hex": pk.hex(),
        "domain": Domain.TX.value,
        "vectors": vectors,
        "identity_tags": {
            "about": "tag = HMAC-SHA256(identity key, canonical identity text); the keys "
                     "are the registrars' secret, shown here only for these vectors "
                     "(docs/privacy.md)",
            "keys_hex": {str(k): v.hex() for k, v in IDENTITY_KEYS.items()},
            "cases": [{"identity": ident, "key_id": k,
                       "tag_hex": identity_tag(IDENTITY_KEYS[k], ident).hex()}
                      for ident in (ADULT_ID, CHILD_ID, LATER_ID) for k in (1, 2)],
        },
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
