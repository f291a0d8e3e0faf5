"""Exponential backoff with jitter: the one policy behind every retry loop.

The client library backs off between attempts of a call (router/client), the node between
reconnects to a peer store (node/transport.py); each keeps its own numbers in a
:class:`BackoffPolicy`. The policy is a pure function of the attempt number and a random
draw the caller makes, so it can be tested without clocks or seeds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Attempt n (0-based) waits between (1 - jitter) and 1 times
    min(max_s, initial_s * multiplier**n). Jitter keeps peers that failed together (a leader
    died under all of them) from retrying in lockstep.

    The defaults are the client library's: 10 ms doubling to half a second.
    """

    initial_s: float = 0.01
    max_s: float = 0.5
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1 or not 0 <= self.jitter <= 1:
            raise ValueError(f"bad backoff policy {self}")

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); ``rand`` in [0, 1)."""
        # The exponent stops at 64: far past any cap, and multiplier**attempt would overflow.
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        return ceiling * (1.0 - self.jitter * rand)
