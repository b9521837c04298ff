"""China Standard Time dates from block time, ages, and the two settlement schedules.

Block time (integer ms since the Unix epoch, UTC) is the only clock. Calendar dates are
China Standard Time, a fixed UTC+8 with no daylight saving, so a date is
``floor((ms + 8 h) / 1 day)`` days after 1970-01-01. Everything here is integer arithmetic:
no floats, no local time zone, no system clock.

A schedule numbers settlement periods n = 1, 2, 3, ... For each period it gives the
public-notice instant ``notice_ms(n)`` (the sharing members are those protected at that
instant), the settlement instant ``settlement_ms(n)``, and the *cap year* the period
belongs to (the annual per-member cap is counted per cap year). Invariants checked by
``contracts.params``: notice(n) < settlement(n) < notice(n+1).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Protocol

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
CST_OFFSET_MS = 8 * HOUR_MS
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class CalendarError(ValueError):
    """A date string is malformed or out of range."""


def cst_date(ms: int) -> date:
    """The China Standard Time calendar date of the instant ``ms``."""
    return date.fromordinal(_EPOCH_ORDINAL + (ms + CST_OFFSET_MS) // DAY_MS)


def cst_midnight_ms(d: date) -> int:
    """The instant (ms) of 00:00 China Standard Time on ``d``."""
    return (d.toordinal() - _EPOCH_ORDINAL) * DAY_MS - CST_OFFSET_MS


def parse_date(text: object) -> date:
    """Parse ``YYYY-MM-DD`` strictly (exactly that shape, a real calendar date)."""
    if not isinstance(text, str) or not _DATE_RE.match(text):
        raise CalendarError(f"date {text!r} is not YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CalendarError(f"date {text!r} is not a calendar date") from exc


def age_years(birth: date, on: date) -> int:
    """Completed years of age on ``on`` (someone born on 29 February ages on 1 March)."""
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def age_days(birth: date, on: date) -> int:
    """Days of age on ``on``."""
    return on.toordinal() - birth.toordinal()


class Schedule(Protocol):
    """Period instants and cap years; n >= 1."""

    def notice_ms(self, n: int) -> int: ...
    def settlement_ms(self, n: int) -> int: ...
    def year(self, n: int) -> int: ...
    def first_period_of_year(self, y: int) -> int: ...


class MonthlySchedule:
    """Production schedule: notice and settlement on fixed days of each CST month.

    ``notice_days[i]`` pairs with ``settlement_days[i]`` (both at 00:00 CST). Period 1 is
    the first notice instant at or after genesis. The cap year is the CST calendar year.
    """

    def __init__(self, genesis_ms: int, notice_days: list[int], settlement_days: list[int]):
        self.notice_days = tuple(notice_days)
        self.settlement_days = tuple(settlement_days)
        self.k = len(notice_days)
        g = cst_date(genesis_ms)
        month_index = g.year * 12 + (g.month - 1)
        slot = 0
        while slot < self.k and cst_midnight_ms(
                date(g.year, g.month, self.notice_days[slot])) < genesis_ms:
            slot += 1
        # slot == k means the first notice falls in the next month (slot 0 there)
        self.base = month_index * self.k + slot

    def _slot_date(self, n: int, days: tuple[int, ...]) -> date:
        if n < 1:
            raise ValueError(f"period {n} < 1")
        idx = self.base + n - 1
        month_index, slot = divmod(idx, self.k)
        year, month0 = divmod(month_index, 12)
        return date(year, month0 + 1, days[slot])

    def notice_ms(self, n: int) -> int:
        return cst_midnight_ms(self._slot_date(n, self.notice_days))

    def settlement_ms(self, n: int) -> int:
        return cst_midnight_ms(self._slot_date(n, self.settlement_days))

    def year(self, n: int) -> int:
        return self._slot_date(n, self.notice_days).year

    def first_period_of_year(self, y: int) -> int:
        """May be < 1 for the genesis year (its first periods preceded genesis)."""
        return y * 12 * self.k - self.base + 1

    def first_notice_at_or_after(self, t: int) -> int:
        """``first_notice_at_or_after(self, t)`` from the CST month of ``t``: at most a
        month's notices are looked at (a join asks this, so it must not cost a search)."""
        d = cst_date(t)
        n = max(1, (d.year * 12 + d.month - 1) * self.k - self.base + 1)
        while self.notice_ms(n) < t:
            n += 1
        while n > 1 and self.notice_ms(n - 1) >= t:
            n -= 1
        return n


class IntervalSchedule:
    """Devnet schedule: period n starts at genesis + (n-1) * period_ms.

    Notice and settlement are fixed offsets into the period; a cap year is
    ``periods_per_year`` consecutive periods (cap year y holds periods y*ppy+1 .. (y+1)*ppy).
    """

    def __init__(self, genesis_ms: int, period_ms: int, notice_offset_ms: int,
                 settlement_offset_ms: int, periods_per_year: int):
        self.genesis_ms = genesis_ms
        self.period_ms = period_ms
        self.notice_offset_ms = notice_offset_ms
        self.settlement_offset_ms = settlement_offset_ms
        self.periods_per_year = periods_per_year

    def _start(self, n: int) -> int:
        if n < 1:
            raise ValueError(f"period {n} < 1")
        return self.genesis_ms + (n - 1) * self.period_ms

    def notice_ms(self, n: int) -> int:
        return self._start(n) + self.notice_offset_ms

    def settlement_ms(self, n: int) -> int:
        return self._start(n) + self.settlement_offset_ms

    def year(self, n: int) -> int:
        return (n - 1) // self.periods_per_year

    def first_period_of_year(self, y: int) -> int:
        return y * self.periods_per_year + 1

    def first_notice_at_or_after(self, t: int) -> int:
        """``first_notice_at_or_after(self, t)`` in closed form."""
        ahead = t - self.genesis_ms - self.notice_offset_ms
        return max(1, -(-ahead // self.period_ms) + 1)


def birthday(birth: date, years: int) -> date:
    """The date someone born on ``birth`` turns ``years`` (completed years, as
    ``age_years``: a 29 February birthday falls on 1 March in a common year)."""
    y = birth.year + years
    if birth.month == 2 and birth.day == 29 and not (y % 4 == 0 and (y % 100 != 0
                                                                     or y % 400 == 0)):
        return date(y, 3, 1)
    return date(y, birth.month, birth.day)


def first_notice_at_or_after(schedule: Schedule, t: int) -> int:
    """The first period n >= 1 whose notice instant is at or after ``t``. The two
    schedules answer in closed form (a month's notices at most); any other schedule by a
    search, O(log n) (notice instants increase with n)."""
    direct = getattr(schedule, "first_notice_at_or_after", None)
    if direct is not None:
        return direct(t)
    return search_first_notice(schedule, t)


def search_first_notice(schedule: Schedule, t: int) -> int:
    """``first_notice_at_or_after`` by doubling then bisection over ``notice_ms``."""
    hi = 1
    while schedule.notice_ms(hi) < t:
        hi *= 2
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if schedule.notice_ms(mid) < t:
            lo = mid + 1
        else:
            hi = mid
    return lo
