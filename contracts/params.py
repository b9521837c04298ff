"""The plan's rule parameters: validation, the two profiles, and the schedule they define.

Parameters live in genesis ``params`` (a JSON object of integers, text, lists and maps; no
floats). ``Params.from_dict`` refuses any unknown, missing or mistyped field with a
``ParamsError`` naming it. ``profile("production")`` is the real plan; ``profile("devnet")``
shrinks every duration and schedule so a whole join -> claim -> notice -> objection -> jury
-> settlement cycle fits in a few minutes of block time. docs/rules.md lists every field.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from contracts.calendar import DAY_MS, IntervalSchedule, MonthlySchedule, Schedule

MAX_DISEASES = 100
MAX_WAITING_PERIODS = 1000
#: at most this many identity keys in use (each registration carries one tag per key)
MAX_IDENTITY_KEYS = 16
#: an identity key id is a uint32
MAX_IDENTITY_KEY_ID = (1 << 32) - 1
CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}$")

# The China Insurance Association's 25 standard critical illnesses plus thyroid cancer,
# which the plan lists separately so it can pay a smaller lump sum for it.
PRODUCTION_DISEASES = [
    "malignant_tumor", "thyroid_cancer", "acute_myocardial_infarction", "stroke_sequelae",
    "major_organ_transplant", "cabg", "end_stage_renal_failure", "multiple_limb_loss",
    "acute_fulminant_hepatitis", "benign_brain_tumor", "chronic_liver_failure",
    "encephalitis_sequelae", "deep_coma", "binocular_blindness", "deafness",
    "loss_of_speech", "aplastic_anemia", "major_head_trauma", "parkinsons_disease",
    "severe_burns", "pulmonary_hypertension", "motor_neuron_disease", "alzheimers_disease",
    "paralysis", "heart_valve_surgery", "aortic_surgery",
]

_PRODUCTION: dict[str, Any] = {
    "min_join_age_days": 30,
    "max_join_age_years": 59,
    # the registrars' identity keys in use, the last one current (docs/privacy.md): a
    # registration carries the member's tag under each (contracts/identity.py)
    "identity_key_ids": [1],
    "waiting_ms": 90 * DAY_MS,
    "schedule": {"kind": "monthly", "notice_days": [7, 21], "settlement_days": [14, 28]},
    "objection_window_ms": 3 * DAY_MS,
    "appeal_window_ms": 7 * DAY_MS,
    "fee_bps": 800,
    "payout_bands": [
        {"max_age": 39, "fen": 30_000_000},   # 300,000 yuan
        {"max_age": 59, "fen": 10_000_000},   # 100,000 yuan
    ],
    "disease_codes": PRODUCTION_DISEASES,
    "disease_overrides": {"thyroid_cancer": 5_000_000},  # 50,000 yuan at any age
    "cap_per_case_fen": 10,          # 0.1 yuan per paid case per member
    "cap_per_year_fen": 18_800,      # 188 yuan per member per cap year
    "arrears_grace_ms": 2 * DAY_MS,  # removed 2 days before the next deduction
    # M counts members protected (waiting period over) at the notice: docs/rules.md rule 6
    "sharing_basis": "protected",
    # below this age (completed years) a member joins on a guardian's credit attestation
    # (docs/rules.md rule 1): the age of majority of China's Civil Code, art. 17
    "adult_age_years": 18,
    # cover and sharing end at the 60th birthday: docs/rules.md rule 1, "Upper age"
    "max_age_years": 60,
    "jury": {
        "mode": "open",
        "window_ms": 5 * DAY_MS,
        "open_quorum": 1000,
        "pass_bps": 5000,            # pay iff yes > 50 % of votes cast
        "panel_size": 11,
        "panel_min_votes": 6,
        "juror_min_age_years": 18,
        "juror_min_membership_ms": 30 * DAY_MS,
    },
}

_DEVNET: dict[str, Any] = {
    **copy.deepcopy(_PRODUCTION),
    "waiting_ms": 30_000,
    "schedule": {"kind": "interval", "period_ms": 60_000, "notice_offset_ms": 20_000,
                 "settlement_offset_ms": 45_000, "periods_per_year": 12},
    "objection_window_ms": 10_000,
    "appeal_window_ms": 20_000,
    "arrears_grace_ms": 5_000,
    "jury": {
        "mode": "open",
        "window_ms": 15_000,
        "open_quorum": 3,
        "pass_bps": 5000,
        "panel_size": 3,
        "panel_min_votes": 2,
        "juror_min_age_years": 18,
        "juror_min_membership_ms": 10_000,
    },
}

PROFILES = {"production": _PRODUCTION, "devnet": _DEVNET}


SHARING_BASES = ("protected", "joined")
# Optional fields and what their absence means (genesis files written before they existed
# keep the meaning they had): docs/rules.md, "Parameters".
OPTIONAL_DEFAULTS: dict[str, Any] = {"sharing_basis": "joined", "adult_age_years": None,
                                     "max_age_years": None}


class ParamsError(ValueError):
    """Genesis rule parameters are missing, unknown, mistyped or inconsistent."""


def profile(name: str) -> dict[str, Any]:
    """A fresh copy of a named profile's params object (for ``mutual genesis new``)."""
    if name not in PROFILES:
        raise ParamsError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return copy.deepcopy(PROFILES[name])


def _int(d: dict, key: str, where: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise ParamsError(f"{where}{key} must be an integer")
    if not lo <= v <= hi:
        raise ParamsError(f"{where}{key} = {v} is outside [{lo}, {hi}]")
    return v


def _fields(d: Any, required: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise ParamsError(f"{where or 'params'} must be an object")
    missing = required - set(d)
    if missing:
        raise ParamsError(f"{where or 'params '}missing {sorted(missing)}")
    unknown = set(d) - required
    if unknown:
        raise ParamsError(f"{where or 'params '}unknown fields {sorted(unknown)}")
    return d


@dataclass(frozen=True)
class JuryParams:
    mode: str
    window_ms: int
    open_quorum: int
    pass_bps: int
    panel_size: int
    panel_min_votes: int
    juror_min_age_years: int
    juror_min_membership_ms: int


@dataclass(frozen=True)
class Params:
    """Validated rule parameters. ``raw`` is the exact genesis object (for the state)."""

    min_join_age_days: int
    max_join_age_years: int
    #: the identity keys in use, the last one current (docs/privacy.md)
    identity_key_ids: tuple[int, ...]
    waiting_ms: int
    schedule: dict[str, Any]
    objection_window_ms: int
    appeal_window_ms: int
    fee_bps: int
    payout_bands: tuple[tuple[int, int], ...]
    disease_codes: frozenset[str]
    disease_overrides: dict[str, int]
    cap_per_case_fen: int
    cap_per_year_fen: int
    arrears_grace_ms: int
    jury: JuryParams
    raw: dict[str, Any]
    sharing_basis: str = "joined"
    #: None: every member attests their own credit (genesis files without the field)
    adult_age_years: int | None = None
    #: the upper age (rule 1, "Upper age"); None (absent from genesis): members never age out
    max_age_years: int | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Params:
        top = {"min_join_age_days", "max_join_age_years", "identity_key_ids", "waiting_ms",
               "schedule", "objection_window_ms", "appeal_window_ms", "fee_bps",
               "payout_bands", "disease_codes", "disease_overrides", "cap_per_case_fen",
               "cap_per_year_fen", "arrears_grace_ms", "jury"}
        present = set(OPTIONAL_DEFAULTS) & set(d) if isinstance(d, dict) else set()
        _fields(d, top | present, "")
        w = "params."
        min_days = _int(d, "min_join_age_days", w, 0, 366 * 150)
        max_years = _int(d, "max_join_age_years", w, 0, 150)
        if min_days > max_years * 366 + 365:
            raise ParamsError("params.min_join_age_days exceeds the maximum join age")
        key_ids = _identity_key_ids(d["identity_key_ids"])
        waiting = _int(d, "waiting_ms", w, 0, 10 * 366 * DAY_MS)
        objection = _int(d, "objection_window_ms", w, 1, 366 * DAY_MS)
        appeal = _int(d, "appeal_window_ms", w, 1, 366 * DAY_MS)
        fee = _int(d, "fee_bps", w, 0, 10_000)
        cap_case = _int(d, "cap_per_case_fen", w, 1, 10**12)
        cap_year = _int(d, "cap_per_year_fen", w, 1, 10**12)
        grace = _int(d, "arrears_grace_ms", w, 0, 366 * DAY_MS)

        bands_doc = d["payout_bands"]
        if not isinstance(bands_doc, list) or not 1 <= len(bands_doc) <= 16:
            raise ParamsError("params.payout_bands must be a list of 1 to 16 bands")
        bands: list[tuple[int, int]] = []
        for i, b in enumerate(bands_doc):
            bw = f"params.payout_bands[{i}]."
            _fields(b, {"max_age", "fen"}, bw)
            age = _int(b, "max_age", bw, 0, 150)
            if bands and age <= bands[-1][0]:
                raise ParamsError(f"{bw}max_age must be strictly increasing")
            bands.append((age, _int(b, "fen", bw, 1, 10**13)))

        codes_doc = d["disease_codes"]
        if not isinstance(codes_doc, list) or not 1 <= len(codes_doc) <= MAX_DISEASES:
            raise ParamsError(f"params.disease_codes must list 1 to {MAX_DISEASES} codes")
        for c in codes_doc:
            if not isinstance(c, str) or not CODE_RE.match(c):
                raise ParamsError(f"params.disease_codes: invalid code {c!r}")
        if len(set(codes_doc)) != len(codes_doc):
            raise ParamsError("params.disease_codes has duplicates")
        codes = frozenset(codes_doc)
        over_doc = d["disease_overrides"]
        if not isinstance(over_doc, dict):
            raise ParamsError("params.disease_overrides must be an object")
        overrides = {}
        for code in over_doc:
            if code not in codes:
                raise ParamsError(f"params.disease_overrides: {code!r} is not a disease code")
            overrides[code] = _int(over_doc, code, "params.disease_overrides.", 1, 10**13)

        jury_doc = _fields(d["jury"], {"mode", "window_ms", "open_quorum", "pass_bps",
                                       "panel_size", "panel_min_votes",
                                       "juror_min_age_years", "juror_min_membership_ms"},
                           "params.jury.")
        jw = "params.jury."
        if jury_doc["mode"] not in ("open", "panel"):
            raise ParamsError("params.jury.mode must be 'open' or 'panel'")
        panel_size = _int(jury_doc, "panel_size", jw, 1, 1001)
        jury = JuryParams(
            mode=jury_doc["mode"],
            window_ms=_int(jury_doc, "window_ms", jw, 1, 366 * DAY_MS),
            open_quorum=_int(jury_doc, "open_quorum", jw, 1, 10**9),
            pass_bps=_int(jury_doc, "pass_bps", jw, 0, 9_999),
            panel_size=panel_size,
            panel_min_votes=_int(jury_doc, "panel_min_votes", jw, 1, panel_size),
            juror_min_age_years=_int(jury_doc, "juror_min_age_years", jw, 0, 150),
            juror_min_membership_ms=_int(jury_doc, "juror_min_membership_ms", jw, 0,
                                         10 * 366 * DAY_MS),
        )
        schedule = _check_schedule(d["schedule"], objection, grace)
        basis = d.get("sharing_basis", OPTIONAL_DEFAULTS["sharing_basis"])
        if basis not in SHARING_BASES:
            raise ParamsError("params.sharing_basis must be 'protected' or 'joined'")
        if (basis == "protected" and schedule["kind"] == "interval"
                and waiting > MAX_WAITING_PERIODS * schedule["period_ms"]):
            # the notice snapshot reads one cohort count per period a waiting period spans
            raise ParamsError(f"params.waiting_ms must span at most {MAX_WAITING_PERIODS} "
                              "periods")
        adult = (None if "adult_age_years" not in d
                 else _int(d, "adult_age_years", w, 1, 150))
        max_age = None
        if "max_age_years" in d:
            # a member may join at max_join_age_years, so cover must last beyond it
            max_age = _int(d, "max_age_years", w, max_years + 1, 150)
        return cls(min_days, max_years, key_ids, waiting, schedule, objection, appeal, fee,
                   tuple(bands), codes, overrides, cap_case, cap_year, grace, jury,
                   copy.deepcopy(d), basis, adult, max_age)

    def to_dict(self) -> dict[str, Any]:
        """The genesis params object these were validated from."""
        return copy.deepcopy(self.raw)

    def make_schedule(self, genesis_ms: int) -> Schedule:
        s = self.schedule
        if s["kind"] == "monthly":
            return MonthlySchedule(genesis_ms, s["notice_days"], s["settlement_days"])
        return IntervalSchedule(genesis_ms, s["period_ms"], s["notice_offset_ms"],
                                s["settlement_offset_ms"], s["periods_per_year"])

    def age_band(self, age: int) -> list[int] | None:
        """``[lowest, highest]`` age (completed years) of the payout band ``age`` falls in,
        or None beyond every band: what a claim's public notice shows instead of an age."""
        lo = 0
        for max_age, _ in self.payout_bands:
            if age <= max_age:
                return [lo, max_age]
            lo = max_age + 1
        return None

    def payout_for(self, disease: str, age: int) -> int | None:
        """Lump sum in fen for ``disease`` at ``age`` (completed years), or None if no band."""
        if disease in self.disease_overrides:
            return self.disease_overrides[disease]
        for max_age, fen in self.payout_bands:
            if age <= max_age:
                return fen
        return None


def _identity_key_ids(v: Any) -> tuple[int, ...]:
    w = "params.identity_key_ids"
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_IDENTITY_KEYS:
        raise ParamsError(f"{w} must list 1 to {MAX_IDENTITY_KEYS} key ids")
    for k in v:
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_IDENTITY_KEY_ID:
            raise ParamsError(f"{w}: {k!r} is not a key id (an integer 1..{MAX_IDENTITY_KEY_ID})")
    if len(set(v)) != len(v):
        raise ParamsError(f"{w} has duplicates")
    return tuple(v)


def _check_schedule(s: Any, objection_ms: int, grace_ms: int) -> dict[str, Any]:
    w = "params.schedule."
    if not isinstance(s, dict) or s.get("kind") not in ("monthly", "interval"):
        raise ParamsError("params.schedule.kind must be 'monthly' or 'interval'")
    if s["kind"] == "monthly":
        _fields(s, {"kind", "notice_days", "settlement_days"}, w)
        nd, sd = s["notice_days"], s["settlement_days"]
        if (not isinstance(nd, list) or not isinstance(sd, list) or not nd
                or len(nd) != len(sd) or len(nd) > 14):
            raise ParamsError(f"{w}notice_days and settlement_days must be equal-length "
                              "non-empty lists")
        for v in nd + sd:
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 28:
                raise ParamsError(f"{w}days must be integers 1..28 (every month has them)")
        merged = [x for pair in zip(nd, sd, strict=True) for x in pair]
        if any(a >= b for a, b in zip(merged, merged[1:], strict=False)):
            raise ParamsError(f"{w}days must alternate notice < settlement < next notice")
        for n_day, s_day in zip(nd, sd, strict=True):
            if (s_day - n_day) * DAY_MS < objection_ms:
                raise ParamsError("the objection window must close by the settlement day")
        # shortest gap between consecutive settlements, including across a 28-day February
        gaps = [b - a for a, b in zip(sd, sd[1:], strict=False)] + [sd[0] + 28 - sd[-1]]
        if grace_ms >= min(gaps) * DAY_MS:
            raise ParamsError("arrears_grace_ms must be shorter than the gap between "
                              "settlements")
        return {"kind": "monthly", "notice_days": list(nd), "settlement_days": list(sd)}
    _fields(s, {"kind", "period_ms", "notice_offset_ms", "settlement_offset_ms",
                "periods_per_year"}, w)
    period = _int(s, "period_ms", w, 1_000, 366 * DAY_MS)
    notice = _int(s, "notice_offset_ms", w, 0, period - 1)
    settle = _int(s, "settlement_offset_ms", w, notice + 1, period + notice - 1)
    ppy = _int(s, "periods_per_year", w, 1, 1_000)
    if settle - notice < objection_ms:
        raise ParamsError("the objection window must close by the settlement")
    if grace_ms >= period:
        raise ParamsError("arrears_grace_ms must be shorter than a period")
    return {"kind": "interval", "period_ms": period, "notice_offset_ms": notice,
            "settlement_offset_ms": settle, "periods_per_year": ppy}
