"""Transaction types: who may send each, and the exact schema of its body.

A body is a msgpack map whose keys are exactly the type's fields (none missing, none
extra), plus any of its optional fields. Field kinds and their msgpack types:

* ``bin32`` - bin, exactly 32 bytes (public keys and SHA-256 hashes)
* ``uint``  - non-negative integer (positive fixint / uint family), at most 2**63-1
* ``bool``  - true / false
* ``date``  - str ``YYYY-MM-DD`` (a real calendar date)
* ``code``  - str, a disease code ``[a-z0-9][a-z0-9_.-]{0,47}``
* ``name``  - str of at most 64 characters (a validator's name)
* ``gkind`` - str, one of ``GOV_KINDS`` (a governance change kind)
* ``role``  - str, one of ``GRANTABLE_ROLES``
* ``tags``  - an array of 1 to 16 ``[uint key_id, bin32 tag]`` pairs (``register_member``'s
  identity tags, docs/privacy.md) with distinct key ids and distinct tags; which key ids
  it must cover is a rule (``identity_keys_mismatch``)
* ``map``   - a map with str keys (``set_params``' changed parameters; what may be in it is
  a rule: docs/governance.md, "Rule parameters")

``propose`` has per-kind fields: ``GOV_KIND_FIELDS`` names, for each kind, exactly the
optional fields that kind requires (and ``GOV_KIND_OPTIONAL`` those it may add); any
other optional field is refused with ``bad_body``.

Roles: ``registrar``, ``assessor`` and ``operator`` keys are listed in genesis and then
granted or revoked by governance (a type may accept more than one role:
``TxType.roles``); ``member`` means the sender has a member record (whether the member is
active is a rule, checked later); ``governor`` means the sender is the operator account
of a validator in the set of the executing height (docs/governance.md).
docs/transactions.md documents every type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts import errors
from contracts.calendar import CalendarError, parse_date
from contracts.errors import RuleError
from contracts.params import CODE_RE, MAX_IDENTITY_KEY_ID, MAX_IDENTITY_KEYS

REGISTRAR = "registrar"
ASSESSOR = "assessor"
MEMBER = "member"
OPERATOR = "operator"
GOVERNOR = "governor"
ROLES = (REGISTRAR, ASSESSOR, MEMBER, OPERATOR, GOVERNOR)
#: the roles governance may grant and revoke (role records in the state)
GRANTABLE_ROLES = (REGISTRAR, ASSESSOR, OPERATOR)

#: change kinds of ``propose`` and the optional body fields each requires
GOV_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "add_validator": ("pub_key", "power", "node_key", "name", "operator"),
    "remove_validator": ("pub_key",),
    "set_power": ("pub_key", "power"),
    "rotate_key": ("pub_key", "new_pub_key"),
    "grant_role": ("account", "role"),
    "revoke_role": ("account", "role"),
    "set_params": ("params", "from_period"),
}
#: the optional body fields a kind may add
GOV_KIND_OPTIONAL: dict[str, tuple[str, ...]] = {"rotate_key": ("new_node_key",)}
GOV_KINDS = tuple(GOV_KIND_FIELDS)
MAX_NAME_LEN = 64


@dataclass(frozen=True)
class TxType:
    name: str
    role: str
    fields: dict[str, str]
    doc: str
    #: fields a body may leave out (when each is required is a rule, docs/transactions.md)
    optional: dict[str, str] = field(default_factory=dict)
    #: further roles that may send this type besides ``role``
    other_roles: tuple[str, ...] = ()

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.role, *self.other_roles)

    @property
    def all_fields(self) -> dict[str, str]:
        return {**self.fields, **self.optional}


TX_TYPES: dict[str, TxType] = {t.name: t for t in (
    TxType("register_member", REGISTRAR, {
        "member": "bin32", "identity_tags": "tags", "birth_date": "date",
        "health_commitment": "bin32", "credit_attestation": "bin32", "credit_passed": "bool",
    }, "admit a member key after identity, health and credit checks off chain",
        optional={"guardian_tag": "bin32"}),
    TxType("approve_juror", REGISTRAR, {"member": "bin32", "exam_ref": "bin32"},
           "attest that a member passed the juror exam"),
    TxType("file_claim", MEMBER, {
        "disease": "code", "diagnosed_ms": "uint", "accident": "bool",
        "evidence_hash": "bin32",
    }, "claim the lump sum for a diagnosis"),
    TxType("assess_claim", ASSESSOR, {"claim_id": "uint", "approve": "bool",
                                      "report_hash": "bin32"},
           "approve or deny a filed claim", optional={"accident": "bool"}),
    TxType("object_claim", MEMBER, {"claim_id": "uint", "reason_hash": "bin32"},
           "object to a claim in public notice"),
    TxType("appeal_claim", MEMBER, {"claim_id": "uint", "reason_hash": "bin32"},
           "the claimant takes a denied claim to a jury"),
    TxType("jury_vote", MEMBER, {"claim_id": "uint", "pay": "bool"},
           "a juror votes on a disputed claim"),
    TxType("record_arrears", REGISTRAR, {"member": "bin32", "period": "uint"},
           "record that a member's deduction for a settled period failed"),
    TxType("record_payment", REGISTRAR, {"member": "bin32", "period": "uint"},
           "record that a member paid the arrears of a period"),
    TxType("leave", MEMBER, {}, "the member leaves the plan"),
    TxType("record_refund", REGISTRAR, {"member": "bin32", "payment_ref": "bin32"},
           "record the refund of the shares a member barred by rule 3 paid",
           other_roles=(OPERATOR,)),
    TxType("propose", GOVERNOR, {"kind": "gkind", "deadline_ms": "uint"},
           "a validator's operator proposes one governance change (counts as its yes)",
           optional={"pub_key": "bin32", "power": "uint", "node_key": "bin32",
                     "name": "name", "operator": "bin32", "new_pub_key": "bin32",
                     "new_node_key": "bin32", "account": "bin32", "role": "role",
                     "params": "map", "from_period": "uint"}),
    TxType("vote_proposal", GOVERNOR, {"proposal_id": "uint", "yes": "bool"},
           "a validator's operator votes yes or no on an open proposal"),
)}

_UINT_MAX = (1 << 63) - 1


def _check_field(name: str, kind: str, value: Any) -> None:
    if kind == "bin32":
        ok = isinstance(value, bytes) and len(value) == 32
    elif kind == "uint":
        ok = (isinstance(value, int) and not isinstance(value, bool)
              and 0 <= value <= _UINT_MAX)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "date":
        try:
            parse_date(value)
            ok = True
        except CalendarError:
            ok = False
    elif kind == "code":
        ok = isinstance(value, str) and bool(CODE_RE.match(value))
    elif kind == "name":
        ok = isinstance(value, str) and len(value) <= MAX_NAME_LEN
    elif kind == "gkind":
        ok = isinstance(value, str) and value in GOV_KIND_FIELDS
    elif kind == "role":
        ok = isinstance(value, str) and value in GRANTABLE_ROLES
    elif kind == "tags":
        ok = _tags_ok(value)
    elif kind == "map":
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    else:  # pragma: no cover - the table above only uses the kinds listed
        raise AssertionError(kind)
    if not ok:
        raise RuleError(errors.BAD_BODY, f"field {name!r} must be {kind}")


def _tags_ok(value: Any) -> bool:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IDENTITY_KEYS:
        return False
    for pair in value:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], int)
                and not isinstance(pair[0], bool) and 1 <= pair[0] <= MAX_IDENTITY_KEY_ID
                and isinstance(pair[1], bytes) and len(pair[1]) == 32):
            return False
    return (len({p[0] for p in value}) == len(value)
            and len({p[1] for p in value}) == len(value))


def check_body(type_name: str, body: Any) -> TxType:
    """Validate ``body`` against the schema of ``type_name``; return the type."""
    t = TX_TYPES.get(type_name)
    if t is None:
        raise RuleError(errors.UNKNOWN_TYPE, f"unknown transaction type {type_name!r}")
    if not isinstance(body, dict):
        raise RuleError(errors.BAD_BODY, "body must be a map")
    missing = set(t.fields) - set(body)
    if missing:
        raise RuleError(errors.BAD_BODY, f"body is missing {sorted(missing)}")
    extra = set(body) - set(t.fields) - set(t.optional)
    if extra:
        raise RuleError(errors.BAD_BODY, f"body has unknown fields {sorted(extra)}")
    for name, kind in t.all_fields.items():
        if name in body:
            _check_field(name, kind, body[name])
    if t.name == "propose":
        _check_kind_fields(body)
    return t


def _check_kind_fields(body: dict[str, Any]) -> None:
    """A ``propose`` body carries exactly its kind's fields (and its optional ones)."""
    kind = body["kind"]
    need = set(GOV_KIND_FIELDS[kind])
    allowed = need | set(GOV_KIND_OPTIONAL.get(kind, ())) | {"kind", "deadline_ms"}
    missing = need - set(body)
    if missing:
        raise RuleError(errors.BAD_BODY, f"{kind} needs {sorted(missing)}")
    extra = set(body) - allowed
    if extra:
        raise RuleError(errors.BAD_BODY, f"{kind} does not take {sorted(extra)}")
