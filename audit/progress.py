"""Progress reporting for long-running commands (``mutual audit``): a one-line bar with
rate and ETA on a terminal, plain periodic lines when the output is a file or a pipe.

The clock is injectable so tests can drive it; nothing here changes what is measured.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 28


def _eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0 or seconds > 1e7:  # NaN or absurd
        return "--:--"
    seconds = int(seconds + 0.5)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Reports ``done`` of ``total`` units (blocks) plus a secondary count (transactions).

    On a TTY the bar is redrawn at most ``tty_interval`` seconds apart with ``\\r``; on
    anything else one plain line is written every ``line_interval`` seconds, so a log file
    gets a readable trail instead of thousands of carriage returns. ``enabled=False``
    makes every call a no-op (``--json``).
    """

    def __init__(self, total: int, *, label: str = "blocks", stream: TextIO | None = None,
                 enabled: bool = True, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 tty_interval: float = 0.1, line_interval: float = 5.0) -> None:
        self.total = max(0, total)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock = clock
        self.start = clock()
        self.interval = tty_interval if self.tty else line_interval
        self._last = self.start
        self._drawn = False
        self.done = 0
        self.extra = 0

    def update(self, done: int, extra: int = 0, force: bool = False) -> None:
        self.done, self.extra = done, extra
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        self.stream.write(self.render(now))
        self.stream.flush()
        self._drawn = True

    def render(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        xrate = self.extra / elapsed
        remaining = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.done}/{self.total} {self.label} {pct:5.1f}%  "
                f"{rate:,.0f} {self.label}/s  {self.extra} txs ({xrate:,.0f} tx/s)  "
                f"ETA {_eta(remaining)}")
        if self.tty:
            filled = int(BAR_WIDTH * self.done / self.total) if self.total else BAR_WIDTH
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            return f"\r[{bar}] {text}\x1b[K"
        return f"audit: {text}\n"

    def finish(self) -> None:
        """Draw the final state and end the bar's line."""
        if not self.enabled:
            return
        self.update(self.done, self.extra, force=True)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
