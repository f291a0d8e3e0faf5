"""A running digest of every processed event plus a short tail for reports.

Two runs of one seed must feed identical strings here, which is what the
determinism test compares (``SeedResult.digest``).
"""

from __future__ import annotations

import hashlib
from collections import deque

TAIL = 30


class Trace:
    __slots__ = ("_hash", "events", "tail")

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.tail: deque[str] = deque(maxlen=TAIL)
        self.events = 0

    def record(self, line: str) -> None:
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.tail.append(line)
        self.events += 1

    def note(self, line: str) -> None:
        """Something worth seeing in the tail that is part of the digest too."""
        self.record("  " + line)

    def digest(self) -> str:
        return self._hash.hexdigest()

    def tail_text(self) -> str:
        return "\n".join(self.tail)
