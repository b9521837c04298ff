"""The plan's rules, one small module per concern, all pure functions over a ``Ctx``.

``HANDLERS`` maps each transaction type to the function that applies it; scheduled work
(notice, objection close, jury close, settlement, arrears removal) lives in ``schedule``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contracts.rules import arrears, claims, governance, jury, membership, waiting
from contracts.rules.context import Ctx

Handler = Callable[[Ctx, bytes, dict[str, Any]], None]

HANDLERS: dict[str, Handler] = {
    "register_member": membership.register_member,
    "approve_juror": membership.approve_juror,
    "leave": membership.leave,
    "file_claim": claims.file_claim,
    "assess_claim": claims.assess_claim,
    "object_claim": claims.object_claim,
    "appeal_claim": claims.appeal_claim,
    "jury_vote": jury.jury_vote,
    "record_arrears": arrears.record_arrears,
    "record_payment": arrears.record_payment,
    "record_refund": waiting.record_refund,
    "propose": governance.propose,
    "vote_proposal": governance.vote_proposal,
}
