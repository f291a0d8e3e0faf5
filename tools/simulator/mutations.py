"""Known Raft bugs the simulator must catch.

Three are one-method overrides of :class:`node.raft.raft.Raft` (the core's
mutation hooks); ``vote-not-persisted`` is a driver bug: the simulated
replica sends its vote answers before the hard state recording the vote is
on disk, so a crash in between forgets the vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.raft.raft import Raft
from node.raft.types import Entry


class CommitPreviousTerm(Raft):
    """Commit by counting replicas even for entries of earlier terms (Raft paper, Figure 8)."""

    def can_commit_at(self, index: int) -> bool:
        return True


class VoteIgnoresLog(Raft):
    """Grant votes without the up-to-date-log check."""

    def log_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class ApplyUncommitted(Raft):
    """Hand the application every entry in the log, committed or not."""

    def entries_to_apply(self) -> list[Entry]:
        log = self.log
        if log.unstable_snapshot is not None or log.last_index() <= log.applied:
            return []
        return log.slice(log.applied + 1, log.last_index() + 1)


@dataclass(frozen=True)
class Mutation:
    name: str
    raft_class: type[Raft] = Raft
    early_votes: bool = False  # driver sends vote answers before persisting the vote
    doc: str = ""


MUTATIONS: dict[str, Mutation] = {
    "commit-previous-term": Mutation("commit-previous-term", CommitPreviousTerm, doc=CommitPreviousTerm.__doc__),
    "vote-ignores-log": Mutation("vote-ignores-log", VoteIgnoresLog, doc=VoteIgnoresLog.__doc__),
    "vote-not-persisted": Mutation(
        "vote-not-persisted", Raft, early_votes=True, doc="Send vote answers before the vote is persisted."
    ),
    "apply-uncommitted": Mutation("apply-uncommitted", ApplyUncommitted, doc=ApplyUncommitted.__doc__),
}

NO_MUTATION = Mutation("none")


def get_mutation(name: str | None) -> Mutation:
    if name is None or name == "" or name == "none":
        return NO_MUTATION
    try:
        return MUTATIONS[name]
    except KeyError:
        valid = ", ".join(sorted(MUTATIONS))
        raise ValueError(f"unknown mutation {name!r}; valid mutations: {valid}") from None
