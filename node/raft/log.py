"""The replica's view of its log: stable storage plus the not-yet-persisted tail.

Entries from ``unstable_offset`` on live only in memory until the
application persists them and :meth:`RaftLog.stable_to` is called.  A
snapshot received from the leader is likewise held in ``unstable_snapshot``
until persisted.  Indexes obey ``applied <= committed <= last_index()``
(except under the simulator's deliberately broken ``apply-uncommitted``).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import CompactedError, RaftError, UnavailableError
from .storage import LogStorage, limit_size
from .types import Entry, Snapshot


class RaftLog:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1
        self.unstable_snapshot: Snapshot | None = None
        first = storage.first_index()
        self.committed = first - 1
        self.applied = first - 1

    # -- index arithmetic -----------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.unstable_offset + len(self.unstable) - 1

    def stable_last_index(self) -> int:
        """The last index already on disk (what a leader may count for itself)."""
        return self.unstable_offset - 1

    def term(self, index: int) -> int:
        """Term at ``index``; raises CompactedError / UnavailableError outside the log."""
        off = self.unstable_offset
        if index >= off:
            j = index - off
            if j < len(self.unstable):
                return self.unstable[j].term
            raise UnavailableError(f"index {index} beyond last {self.last_index()}")
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            raise CompactedError(f"index {index} is below the pending snapshot")
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term_or_zero(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (CompactedError, UnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft's voting rule: is a log ending at (last_index, last_term) at least as new as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading entries --------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``, trimmed to ``max_size`` bytes (never below one)."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} compacted (first index {self.first_index()})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"slice up to {hi - 1} beyond last {self.last_index()}")
        off = self.unstable_offset
        ents: list[Entry] = []
        if lo < off:
            stop = min(hi, off)
            ents = self.storage.entries(lo, stop, max_size)
            if len(ents) < stop - lo:
                return ents
        if hi > off:
            tail = self.unstable[max(lo, off) - off : hi - off]
            ents = ents + tail if ents else tail
        return limit_size(ents, max_size)

    def entries_from(self, lo: int, max_size: int | None = None) -> list[Entry]:
        if lo > self.last_index():
            return []
        return self.slice(lo, self.last_index() + 1, max_size)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def has_unstable(self) -> bool:
        return bool(self.unstable) or self.unstable_snapshot is not None

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable)

    def has_next_committed(self) -> bool:
        return self.unstable_snapshot is None and self.committed > self.applied

    # -- writing ----------------------------------------------------------------

    def maybe_append(self, index: int, log_term: int, committed: int, ents: Sequence[Entry]) -> int | None:
        """Follower side of AppendEntries; returns the last new index, or None on mismatch."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.committed:
                raise RaftError(f"entry {conflict} conflicts with committed entry (commit {self.committed})")
            self.append(ents[conflict - (index + 1) :])
        self.commit_to(min(committed, last_new))
        return last_new

    def find_conflict(self, ents: Sequence[Entry]) -> int:
        """First index whose term differs from ours (or that we lack); 0 if none."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= ``index`` whose term is <= ``term`` (fast back-off)."""
        while index > 0:
            try:
                t = self.term(index)
            except (CompactedError, UnavailableError):
                return index
            if t <= term:
                return index
            index -= 1
        return 0

    def append(self, ents: Sequence[Entry]) -> int:
        if not ents:
            return self.last_index()
        after = ents[0].index - 1
        if after < self.committed:
            raise RaftError(f"append after {after} would rewrite committed {self.committed}")
        off = self.unstable_offset
        if after + 1 == off + len(self.unstable):
            self.unstable.extend(ents)
        elif after + 1 <= off:
            # Replaces part of what is already on disk; the application
            # truncates its storage when it persists these.
            self.unstable_offset = after + 1
            self.unstable = list(ents)
        else:
            del self.unstable[after + 1 - off :]
            self.unstable.extend(ents)
        return self.last_index()

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise RaftError(f"commit {index} is beyond the last index {self.last_index()}")
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        """Entries through ``index`` (of ``term``) are on disk.  Ignored if since replaced."""
        off = self.unstable_offset
        if index < off:
            return
        j = index - off
        if j >= len(self.unstable) or self.unstable[j].term != term:
            return
        del self.unstable[: j + 1]
        self.unstable_offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        snap = self.unstable_snapshot
        if snap is not None and snap.meta.index == index:
            self.unstable_snapshot = None

    def restore(self, snap: Snapshot) -> None:
        """Replace the log with a snapshot from the leader."""
        self.committed = snap.meta.index
        self.unstable_offset = snap.meta.index + 1
        self.unstable = []
        self.unstable_snapshot = snap
