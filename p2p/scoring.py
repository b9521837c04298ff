"""Peer scores and temporary bans, keyed by node key, with an injected clock.

A score starts at 0, loses points for each offence and drifts back toward 0 at
``recovery_per_s`` points a second (whole points), so an honest peer with a rare glitch recovers while a
peer that keeps misbehaving reaches ``-threshold`` and is banned for ``ban_seconds``.
Bans last across reconnections; the score is reset when a ban starts.
"""

from __future__ import annotations

from collections.abc import Callable

# Penalty points per offence (threshold 100 = ban).
MALFORMED_MESSAGE = 100  # decrypted fine (so surely the peer's) but not a valid envelope
OVERSIZE_MESSAGE = 100  # a type's size limit exceeded
CORRUPT_STREAM = 25  # bad frame header or failed decryption: could be injected on the path
UNKNOWN_TYPE = 10  # maybe a newer protocol's message type
INVALID_MESSAGE = 25  # default when a handler raises InvalidMessage


class PeerScores:
    def __init__(self, *, threshold: int = 100, recovery_per_s: float = 1.0,
                 ban_seconds: float = 60.0, clock: Callable[[], float],
                 max_tracked: int = 10_000) -> None:
        self.threshold = threshold
        self.recovery_per_s = recovery_per_s
        self.ban_seconds = ban_seconds
        self.clock = clock
        self.max_tracked = max_tracked  # bounds memory: the allow-list bounds keys anyway
        self._scores: dict[bytes, tuple[float, float]] = {}  # key -> (score, as of time)
        self._bans: dict[bytes, float] = {}  # key -> banned until

    def score(self, key: bytes) -> float:
        if key not in self._scores:
            return 0.0
        value, at = self._scores[key]
        # whole points only, so offences in quick succession add up exactly
        return min(0.0, value + int((self.clock() - at) * self.recovery_per_s))

    def penalise(self, key: bytes, points: int) -> bool:
        """Subtract ``points``; True if the peer reached the threshold and is now banned."""
        value = self.score(key) - points
        if len(self._scores) >= self.max_tracked and key not in self._scores:
            self._scores.pop(next(iter(self._scores)))
        self._scores[key] = (value, self.clock())
        if value <= -self.threshold:
            self.ban(key)
            return True
        return False

    def ban(self, key: bytes, seconds: float | None = None) -> None:
        self._bans[key] = self.clock() + (self.ban_seconds if seconds is None else seconds)
        self._scores.pop(key, None)

    def unban(self, key: bytes) -> None:
        self._bans.pop(key, None)

    def banned_for(self, key: bytes) -> float:
        """Seconds left on the peer's ban, 0 if not banned."""
        until = self._bans.get(key)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._bans[key]
            return 0.0
        return left
