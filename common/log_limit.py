"""Rate-limited logging: a hostile or broken peer must not be able to fill a disk with logs.

Whatever a remote party can trigger at will (a malformed request, a garbage frame on the Raft
port, a refused snapshot) is logged through a :class:`LogLimiter` rather than straight to its
logger. Each *kind* of event (a short fixed string the caller picks, e.g. ``"malformed"``)
has a token bucket: ``burst`` records pass at once, then one more every ``interval_s /
burst`` seconds; the rest are counted, and the next record of that kind that passes is
preceded by one line saying how many were suppressed. So a flood of N bad requests costs
``burst`` lines plus about one line per ``interval_s / burst`` seconds, whatever N is.

Suppressed records cost a dict lookup and an addition: the limiter is meant to sit on paths a
flood hits. The number of kinds is bounded (``max_kinds``); kinds beyond it share one bucket,
so even kinds built from remote input could not grow it without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

OVERFLOW_KIND = "(other)"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0
    since: float = 0.0  # when the first record now counted in ``suppressed`` was dropped


class LogLimiter:
    """Log at most ``burst`` records of one kind at once, refilled at ``burst / interval_s``
    per second; count the rest and report the count with the next record that passes."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval_s: float = 60.0,
        max_kinds: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.logger = logger
        self.burst = burst
        self.interval_s = interval_s
        self.max_kinds = max_kinds
        self._rate = burst / interval_s  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self.suppressed_total = 0  # every record dropped so far (for tests and stats)

    def allow(self, kind: str) -> bool:
        """Take a token for ``kind``: True when a record of it may be written now (and then
        the "suppressed" line, if any is due, has already been written)."""
        now = self._clock()
        b = self._buckets.get(kind)
        if b is None:
            if len(self._buckets) >= self.max_kinds:
                kind = OVERFLOW_KIND
                b = self._buckets.get(kind)
            if b is None:
                b = self._buckets[kind] = _Bucket(float(self.burst), now)
        b.tokens = min(float(self.burst), b.tokens + (now - b.stamp) * self._rate)
        b.stamp = now
        if b.tokens < 1.0:
            if not b.suppressed:
                b.since = now
            b.suppressed += 1
            self.suppressed_total += 1
            return False
        b.tokens -= 1.0
        if b.suppressed:
            self.logger.warning(
                "suppressed %d similar %r log lines in the last %.0f s", b.suppressed, kind, now - b.since
            )
            b.suppressed = 0
        return True

    def log(self, level: int, kind: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """``logger.log(level, msg, *args)`` if ``kind`` has a token; True when written."""
        if not self.logger.isEnabledFor(level) or not self.allow(kind):
            return False
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, msg, *args)

    def error(self, kind: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        return self.log(logging.ERROR, kind, msg, *args, exc_info=exc_info)

    def pending(self) -> dict[str, int]:
        """Per kind, the records dropped and not yet reported (tests, shutdown)."""
        return {k: b.suppressed for k, b in self._buckets.items() if b.suppressed}
