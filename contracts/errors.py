"""Stable error codes for rejected transactions (documented in docs/transactions.md).

A rule that refuses a transaction raises ``RuleError(code, reason)``; the application turns
it into a ``Receipt`` with that code and changes no state. Codes are part of the public
interface (clients match on them), so never rename one: add a new code instead.
"""

from __future__ import annotations

OK = "ok"

# envelope and permission (checked by check_tx and again by deliver_tx)
WRONG_CHAIN_ID = "wrong_chain_id"
UNKNOWN_TYPE = "unknown_type"
BAD_BODY = "bad_body"
NOT_PERMITTED = "not_permitted"
BAD_NONCE = "bad_nonce"

# membership
UNKNOWN_MEMBER = "unknown_member"
MEMBER_EXISTS = "member_exists"
MEMBER_NOT_ACTIVE = "member_not_active"
IDENTITY_IN_USE = "identity_in_use"
IDENTITY_BARRED = "identity_barred"
OUTSIDE_AGE_WINDOW = "outside_age_window"
#: retired: the credit score left the chain (docs/privacy.md); no longer returned
CREDIT_TOO_LOW = "credit_too_low"
CREDIT_NOT_PASSED = "credit_not_passed"
IDENTITY_KEYS_MISMATCH = "identity_keys_mismatch"

# claims
UNKNOWN_DISEASE = "unknown_disease"
BAD_DATE = "bad_date"
OUTSIDE_COVER_AGE = "outside_cover_age"
AGED_OUT = "aged_out"
CLAIM_PENDING = "claim_pending"
UNKNOWN_CLAIM = "unknown_claim"
WRONG_CLAIM_STATE = "wrong_claim_state"
NOT_CLAIMANT = "not_claimant"
OWN_CLAIM = "own_claim"
WINDOW_CLOSED = "window_closed"
ALREADY_OBJECTED = "already_objected"
ACCIDENT_FINDING_REQUIRED = "accident_finding_required"
ACCIDENT_FINDING_NOT_ALLOWED = "accident_finding_not_allowed"
NOT_COVERED_IN_WAITING = "not_covered_in_waiting"

# jury
JURY_NOT_OPEN = "jury_not_open"
NOT_A_JUROR = "not_a_juror"
NOT_ON_PANEL = "not_on_panel"
ALREADY_VOTED = "already_voted"
ALREADY_JUROR = "already_juror"
JUROR_INELIGIBLE = "juror_ineligible"

# arrears
PERIOD_NOT_SETTLED = "period_not_settled"
NOTHING_OWED = "nothing_owed"
ALREADY_IN_ARREARS = "already_in_arrears"
NOT_IN_ARREARS = "not_in_arrears"

# refunds (rule 3)
NOT_REFUNDABLE = "not_refundable"
ALREADY_REFUNDED = "already_refunded"
REFUND_NOT_DUE = "refund_not_due"
NOTHING_TO_REFUND = "nothing_to_refund"
GUARDIAN_REQUIRED = "guardian_required"
GUARDIAN_NOT_ALLOWED = "guardian_not_allowed"
GUARDIAN_IS_MEMBER = "guardian_is_member"

# governance (docs/governance.md, "Error codes")
UNKNOWN_PROPOSAL = "unknown_proposal"
PROPOSAL_EXPIRED = "proposal_expired"
PROPOSAL_CLOSED = "proposal_closed"
ALREADY_VOTED_PROPOSAL = "already_voted_proposal"
BAD_DEADLINE = "bad_deadline"
TOO_MANY_PROPOSALS = "too_many_proposals"
POWER_SHIFT_TOO_LARGE = "power_shift_too_large"
EMPTY_VALIDATOR_SET = "empty_validator_set"
KEY_USED = "key_used"
NODE_KEY_IN_USE = "node_key_in_use"
BAD_OPERATOR = "bad_operator"
UNKNOWN_VALIDATOR = "unknown_validator"
BAD_VALIDATOR = "bad_validator"
ROLE_HELD = "role_held"
ROLE_NOT_HELD = "role_not_held"
BAD_PARAMS = "bad_params"
PARAM_NOT_CHANGEABLE = "param_not_changeable"
BAD_FROM_PERIOD = "bad_from_period"

#: every code with a one-line meaning; docs/transactions.md lists the same table and a test
#: checks they agree.
ALL_CODES: dict[str, str] = {
    OK: "the transaction was applied",
    WRONG_CHAIN_ID: "the transaction names another chain",
    UNKNOWN_TYPE: "no such transaction type",
    BAD_BODY: "the body does not match the type's schema (missing, extra or mistyped field)",
    NOT_PERMITTED: "the sender does not hold the role this type requires",
    BAD_NONCE: "the nonce is not exactly the sender's next nonce",
    UNKNOWN_MEMBER: "no member with that key",
    MEMBER_EXISTS: "a member record already exists for that key (use a new key to rejoin)",
    MEMBER_NOT_ACTIVE: "the member has left, was removed, was barred or was paid out",
    IDENTITY_IN_USE: "the identity already has a live membership",
    IDENTITY_BARRED: "the identity was barred by the waiting-period rule and may never rejoin",
    OUTSIDE_AGE_WINDOW: "age on the join date is outside the join window",
    CREDIT_TOO_LOW: "retired: no longer returned (the credit score left the chain; "
                    "credit_not_passed replaces it)",
    CREDIT_NOT_PASSED: "the registrar's credit attestation does not say passed",
    IDENTITY_KEYS_MISMATCH: "the identity tags do not cover exactly the identity keys in "
                            "use (identity_key_ids, in that order)",
    UNKNOWN_DISEASE: "the disease code is not on the covered list",
    BAD_DATE: "a date is malformed, in the future, or before the member joined",
    OUTSIDE_COVER_AGE: "age at diagnosis is beyond every payout band",
    AGED_OUT: "the diagnosis is on or after the member's max_age_years birthday (cover ended)",
    CLAIM_PENDING: "the member already has an open claim",
    UNKNOWN_CLAIM: "no claim with that id",
    WRONG_CLAIM_STATE: "the claim is not in a state that allows this action",
    NOT_CLAIMANT: "only the claimant may do this",
    OWN_CLAIM: "a claimant may not object to or judge their own claim",
    WINDOW_CLOSED: "the time window for this action has closed",
    ALREADY_OBJECTED: "this member already objected to this claim",
    ACCIDENT_FINDING_REQUIRED: "the claim is a waiting-period accident claim: the assessment "
                               "must state whether the accident is confirmed",
    ACCIDENT_FINDING_NOT_ALLOWED: "an accident finding is only for a claim filed as an "
                                  "accident and diagnosed inside the waiting period",
    NOT_COVERED_IN_WAITING: "inside the waiting period only a confirmed accident can be "
                            "approved",
    JURY_NOT_OPEN: "the claim has no jury open for voting (not drawn yet, or closed)",
    NOT_A_JUROR: "the sender is not an eligible juror",
    NOT_ON_PANEL: "the sender was not drawn for this claim's panel",
    ALREADY_VOTED: "this juror already voted on this claim",
    ALREADY_JUROR: "the member is already an approved juror",
    JUROR_INELIGIBLE: "the member does not meet the juror age, tenure or arrears conditions",
    PERIOD_NOT_SETTLED: "the period has not been settled yet",
    NOTHING_OWED: "the member owed nothing for that period",
    ALREADY_IN_ARREARS: "arrears for that member and period are already recorded",
    NOT_IN_ARREARS: "no open arrears for that member and period",
    NOT_REFUNDABLE: "the member's shares are not refundable (not barred by the "
                    "waiting-period rule)",
    ALREADY_REFUNDED: "the member's refund is already recorded",
    REFUND_NOT_DUE: "a period the member still shares in is not settled yet",
    NOTHING_TO_REFUND: "the member paid no shares, so there is nothing to refund",
    GUARDIAN_REQUIRED: "a member under the adult age joins on a guardian's attestation",
    GUARDIAN_NOT_ALLOWED: "only a member under the adult age names a guardian",
    GUARDIAN_IS_MEMBER: "the guardian's identity is the member's own",
    UNKNOWN_PROPOSAL: "no proposal with that id",
    PROPOSAL_EXPIRED: "the proposal's deadline has passed",
    PROPOSAL_CLOSED: "the proposal already passed or failed",
    ALREADY_VOTED_PROPOSAL: "this operator already voted on this proposal",
    BAD_DEADLINE: "the deadline is not after the block time or is too far ahead",
    TOO_MANY_PROPOSALS: "the number of open proposals is at its bound",
    POWER_SHIFT_TOO_LARGE: "the change would move a third or more of the voting power",
    EMPTY_VALIDATOR_SET: "the change would leave no validator",
    KEY_USED: "the consensus key is, or was once, used by a validator (or is an "
              "operator account)",
    NODE_KEY_IN_USE: "the node key is used by a validator in the set",
    BAD_OPERATOR: "the operator account is a consensus key or missing",
    UNKNOWN_VALIDATOR: "no validator with that consensus key in the set (nor jailed, for "
                       "set_power)",
    BAD_VALIDATOR: "the change's fields do not make a valid validator or set",
    ROLE_HELD: "the account already holds that role",
    ROLE_NOT_HELD: "the account does not hold that role",
    BAD_PARAMS: "the changed parameters are unknown, mistyped or inconsistent",
    PARAM_NOT_CHANGEABLE: "the parameter may not be changed on a running chain",
    BAD_FROM_PERIOD: "from_period is already in notice, too far ahead, or before a "
                     "pending change",
}


class RuleError(Exception):
    """A transaction broke a rule: ``code`` is stable, ``reason`` is for humans."""

    def __init__(self, code: str, reason: str) -> None:
        if code not in ALL_CODES or code == OK:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
