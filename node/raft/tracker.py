"""The leader's view of the group: membership, per-peer progress, and votes."""

from __future__ import annotations

from .progress import Progress
from .quorum import VoteResult, joint_index, joint_vote
from .types import ConfState


class ProgressTracker:
    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.conf = ConfState()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self._ids: list[int] = []

    # -- membership -----------------------------------------------------------

    def set_config(self, cs: ConfState, next_index: int) -> None:
        """Switch membership; new peers start probing at ``next_index``."""
        self.conf = cs
        members = cs.all_nodes()
        learners = cs.learners | cs.learners_next
        for node_id in members:
            pr = self.progress.get(node_id)
            if pr is None:
                pr = Progress(next_index, self.max_inflight, node_id in learners)
                # A new peer is assumed alive until a CheckQuorum round says otherwise.
                pr.recent_active = True
                self.progress[node_id] = pr
            else:
                pr.is_learner = node_id in learners
        for node_id in list(self.progress):
            if node_id not in members:
                del self.progress[node_id]
        self._ids = sorted(self.progress)

    def ids(self) -> list[int]:
        """Every member, sorted (deterministic message order)."""
        return self._ids

    def is_voter(self, node_id: int) -> bool:
        return node_id in self.conf.voters or node_id in self.conf.voters_outgoing

    def voter_ids(self) -> list[int]:
        return sorted(self.conf.voters | self.conf.voters_outgoing)

    def is_singleton(self) -> bool:
        return len(self.conf.voters) == 1 and not self.conf.voters_outgoing

    # -- quorum questions -----------------------------------------------------

    def committed_index(self) -> int:
        match = {i: pr.match for i, pr in self.progress.items()}
        return joint_index(self.conf.voters, self.conf.voters_outgoing, match)

    def quorum_stamp(self, own_id: int, own_stamp: int) -> int:
        """The newest leader stamp acknowledged by a quorum (the leader counts itself)."""
        stamps = {i: pr.stamp for i, pr in self.progress.items()}
        stamps[own_id] = own_stamp
        return joint_index(self.conf.voters, self.conf.voters_outgoing, stamps, default=-(1 << 62))

    def quorum_last_heard(self, own_id: int, now: int) -> int:
        """The latest time by which a quorum (the leader included) had answered."""
        heard = {i: pr.last_heard for i, pr in self.progress.items()}
        heard[own_id] = now
        return joint_index(self.conf.voters, self.conf.voters_outgoing, heard, default=-(1 << 62))

    def quorum_active(self, own_id: int) -> bool:
        active = {i: (pr.recent_active or i == own_id) for i, pr in self.progress.items()}
        return joint_vote(self.conf.voters, self.conf.voters_outgoing, active) == VoteResult.WON

    def quorum_acked(self, acks: set[int]) -> bool:
        votes = dict.fromkeys(acks, True)
        return joint_vote(self.conf.voters, self.conf.voters_outgoing, votes) == VoteResult.WON

    # -- elections ------------------------------------------------------------

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally(self) -> VoteResult:
        return joint_vote(self.conf.voters, self.conf.voters_outgoing, self.votes)
