"""Known Raft bugs the simulator must catch.

Most are one-method overrides of :class:`node.raft.raft.Raft` (the core's
mutation hooks, in :mod:`node.raft.mutations`); ``vote-not-persisted`` is a driver bug: the simulated
replica sends its vote answers before the hard state recording the vote is
on disk, so a crash in between forgets the vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.raft.mutations import ApplyUncommitted, CommitPreviousTerm, LearnerVotes, VoteIgnoresLog
from node.raft.raft import Raft


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
    "learner-votes": Mutation("learner-votes", LearnerVotes, doc=LearnerVotes.__doc__),
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
