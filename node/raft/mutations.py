"""Known Raft bugs, each a one-method override of :class:`~node.raft.raft.Raft`.

They exist to prove that the tests can fail: the simulator (``tessera simulate
--mutation``) and the real-cluster nemesis (``tessera nemesis --raft-mutation``,
which starts nodes with ``tessera node --raft-mutation``) must catch every one.
:data:`MUTATIONS` is the one table of their names.  Production code never
imports this module: :class:`~node.raft.rawnode.RawNode` loads it only when a
mutation is asked for, and :func:`node.raft.known_mutations` lists them.

See docs/decisions.md D16 and docs/testing.md.
"""

from __future__ import annotations

from .config import Config, Rand
from .quorum import VoteResult, majority_vote
from .raft import Raft
from .storage import LogStorage
from .types import Entry


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


class LearnerVotes(Raft):
    """Candidates canvass learners too and count their grants toward the voters' majority.

    The YugabyteDB bug Jepsen found (2019): a replica still catching up during a
    membership change helped elect a leader that lacked acknowledged writes.
    """

    def electorate(self) -> list[int]:
        return self.trk.ids()

    def vote_result(self) -> VoteResult:
        conf = self.trk.conf
        votes = self.trk.votes
        granted = sum(1 for v in votes.values() if v)
        need = len(conf.voters) // 2 + 1
        if conf.voters and granted >= need:
            return VoteResult.WON
        return majority_vote(conf.voters, votes)


class LongLease(Raft):
    """Hold the leader lease for ten election timeouts instead of less than one.

    A leader that was paused (GC, SIGSTOP) or cut off then serves LEASE reads while a newer
    leader already accepts writes: stale reads.  The simulator rarely catches it (CheckQuorum
    deposes a cut-off leader first); the nemesis's pause fault must.
    """

    def __init__(self, config: Config, storage: LogStorage, rng: Rand) -> None:
        super().__init__(config, storage, rng)
        self._lease_ticks = 10 * self.cfg.election_tick


MUTATIONS: dict[str, type[Raft]] = {
    "commit-previous-term": CommitPreviousTerm,
    "vote-ignores-log": VoteIgnoresLog,
    "apply-uncommitted": ApplyUncommitted,
    "learner-votes": LearnerVotes,
    "long-lease": LongLease,
}


class UnknownMutationError(ValueError):
    """A mutation name that is not in :data:`MUTATIONS`."""


def describe() -> dict[str, str]:
    """Name -> the first line of its docstring, for help texts."""
    return {name: (cls.__doc__ or "").strip().splitlines()[0] for name, cls in MUTATIONS.items()}


def raft_class_for(name: str) -> type[Raft]:
    """The :class:`Raft` subclass that injects mutation ``name``."""
    try:
        return MUTATIONS[name]
    except KeyError:
        raise UnknownMutationError(f"unknown raft mutation {name!r}; valid: {', '.join(sorted(MUTATIONS))}") from None
