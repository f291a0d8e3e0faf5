"""Configuration of one replica of a Raft group, and the injected randomness.

The lease and its clock-drift bound: docs/decisions.md D7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Rand(Protocol):
    """The only randomness the core uses: election jitter.

    ``random.Random`` satisfies it; the simulator passes a seeded one so a
    run is reproducible bit for bit.
    """

    def randrange(self, start: int, stop: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Config:
    """Knobs of one replica.  Times are in ticks; the caller decides how long a tick is.

    ``lease_ticks`` bounds leader-lease reads.  A follower that heard from the
    leader refuses to vote for anyone else (PreVote or Vote, transfers
    excepted) until ``election_tick`` of *its own* ticks have passed, so a
    lease of ``lease_ticks`` measured on the leader's clock from the moment
    it *sent* the heartbeat a quorum acknowledged is safe provided no clock
    runs faster than another by more than ``(election_tick - 1) / lease_ticks``
    (with the defaults 10 and 8: 12.5%).  A process that is paused is not a
    fast clock: the driver must deliver the ticks that elapsed during the
    pause before serving any read.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    lease_ticks: int | None = None
    applied: int = 0
    max_size_per_msg: int = 1 << 20
    max_entries_per_msg: int = 1024
    max_inflight_msgs: int = 256
    max_uncommitted_entries: int = 1 << 16
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError("id must be a positive integer")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.election_tick < 3:
            raise ValueError("election_tick must be at least 3")
        if self.lease_ticks is not None and not 0 < self.lease_ticks < self.election_tick - 1:
            raise ValueError("lease_ticks must be in [1, election_tick - 1)")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be positive")

    @property
    def effective_lease_ticks(self) -> int:
        if self.lease_ticks is not None:
            return self.lease_ticks
        return max(1, self.election_tick - 2)
