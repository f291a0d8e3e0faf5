"""What the leader knows about each follower's log, and the flow control on it.

A follower is in one of three states (etcd's ``tracker.Progress``):

* PROBE: the leader does not know where the follower's log matches; it sends
  one append at a time and waits for the answer before the next.
* REPLICATE: the match point is known; appends stream optimistically, up to
  ``max_inflight`` unacknowledged messages.
* SNAPSHOT: the follower needs entries the leader compacted away; nothing is
  sent until the snapshot lands (or times out).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

NO_STAMP = -(1 << 62)


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of unacknowledged appends, oldest first."""

    __slots__ = ("_q", "capacity")

    def __init__(self, capacity: int) -> None:
        self._q: deque[int] = deque()
        self.capacity = capacity

    def add(self, last_index: int) -> None:
        self._q.append(last_index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    __slots__ = (
        "commit_sent",
        "inflights",
        "is_learner",
        "last_heard",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_elapsed",
        "stamp",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = max(next_index, 1)
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner
        # The highest commit index an append or heartbeat sent this peer carried.
        self.commit_sent = 0
        # Leader tick counter of the newest append/heartbeat this peer acknowledged.
        self.stamp = NO_STAMP
        # Leader tick counter when this peer last answered anything (CheckQuorum).
        self.last_heard = NO_STAMP

    def reset(self, next_index: int) -> None:
        self.match = 0
        self.next = max(next_index, 1)
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.snapshot_elapsed = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights.reset()
        self.stamp = NO_STAMP
        self.last_heard = NO_STAMP
        self.commit_sent = 0

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self.next = max(self.match + 1, pending + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.pending_snapshot = 0
        self.probe_sent = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_elapsed = 0
        self.probe_sent = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """An append up to ``index`` was acknowledged; False if that is old news."""
        updated = False
        if self.match < index:
            self.match = index
            self.probe_sent = False
            updated = True
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """An append at ``rejected`` was refused; back ``next`` off.  False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def state_name(self) -> str:
        return self.state.name.lower()
