"""The simulated network between replicas: delay, loss, duplication, partitions.

Every message gets its own random delay, so messages between two replicas
are reordered freely.  A partition is a set of blocked *directed* links,
checked when a message is sent: symmetric splits block both directions,
asymmetric faults only one.  Client traffic uses :meth:`client_delay` and is
never dropped (clients time out on their own when a replica is down).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class NetParams:
    delay_lo: int = 1
    delay_hi: int = 8
    long_delay_prob: float = 0.05
    long_delay_hi: int = 60
    drop_prob: float = 0.0
    dup_prob: float = 0.0


@dataclass(slots=True)
class Network:
    rng: random.Random
    params: NetParams
    blocked: set[tuple[int, int]] = field(default_factory=set)
    slow_to: dict[int, int] = field(default_factory=dict)  # destination -> extra delay of every message to it
    partition_kind: str = ""
    partition_gen: int = 0
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0

    def delay(self) -> int:
        p = self.params
        if p.long_delay_prob and self.rng.random() < p.long_delay_prob:
            return self.rng.randint(p.delay_hi, p.long_delay_hi)
        return self.rng.randint(p.delay_lo, p.delay_hi)

    def client_delay(self) -> int:
        return self.rng.randint(self.params.delay_lo, self.params.delay_hi)

    def deliveries(self, src: int, dst: int) -> list[int]:
        """Delays at which a message from src to dst arrives ([] = lost)."""
        self.sent += 1
        if (src, dst) in self.blocked:
            self.dropped += 1
            return []
        p = self.params
        if p.drop_prob and self.rng.random() < p.drop_prob:
            self.dropped += 1
            return []
        out = [self.delay()]
        if p.dup_prob and self.rng.random() < p.dup_prob:
            self.duplicated += 1
            out.append(self.delay())
        extra = self.slow_to.get(dst)
        if extra:
            out = [d + extra for d in out]
        return out

    # -- partitions --------------------------------------------------------

    def set_partition(self, kind: str, blocked: set[tuple[int, int]]) -> int:
        self.blocked = blocked
        self.partition_kind = kind
        self.partition_gen += 1
        return self.partition_gen

    def heal(self, gen: int | None = None) -> bool:
        """Clear the partition (only if it is still generation ``gen``, when given)."""
        if gen is not None and gen != self.partition_gen:
            return False
        had = bool(self.blocked)
        self.blocked = set()
        self.partition_kind = ""
        return had


def split(a: list[int], b: list[int]) -> set[tuple[int, int]]:
    """Symmetric: no traffic between group a and group b."""
    out = set()
    for x in a:
        for y in b:
            out.add((x, y))
            out.add((y, x))
    return out


def one_way(srcs: list[int], dsts: list[int]) -> set[tuple[int, int]]:
    """Asymmetric: srcs -> dsts is dropped, dsts -> srcs still delivered."""
    return {(x, y) for x in srcs for y in dsts if x != y}


def bridge(a: list[int], bridge_node: int, b: list[int]) -> set[tuple[int, int]]:
    """a and b cannot talk to each other; bridge_node talks to both."""
    return split(a, b)
