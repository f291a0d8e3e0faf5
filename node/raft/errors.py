"""Typed errors raised by the consensus core.

Callers branch on the type, never on the message text.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class for every error the core raises."""


class NotLeaderError(RaftError):
    """A leader-only request reached a replica that is not the leader.

    ``leader`` is the best-known leader id, or 0 when none is known.
    """

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDroppedError(RaftError):
    """The leader refused a proposal; ``reason`` says why (transfer, pending conf change...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"proposal dropped: {reason}")
        self.reason = reason


class CompactedError(RaftError):
    """The requested index is below the first index kept in the log."""


class UnavailableError(RaftError):
    """The requested index is above the last index in the log."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """The storage cannot produce a snapshot right now; the core retries later."""


class SnapshotOutOfDateError(RaftError):
    """A snapshot older than the one already held was offered to storage."""
