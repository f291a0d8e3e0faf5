"""Known Raft bugs the simulator must catch: the core's own, plus the driver's.

The core's mutations (one-method overrides of its rules, listed by
:func:`node.raft.known_mutations`) run inside the RawNode.  The simulator adds
driver bugs the core cannot express: ``vote-not-persisted`` sends vote answers
before the hard state recording the vote is on disk, so a crash in between
forgets the vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.raft import known_mutations


@dataclass(frozen=True)
class Mutation:
    name: str
    core: str | None = None  # the core mutation to run (RawNode(mutation=...)), if any
    early_votes: bool = False  # driver sends vote answers before persisting the vote


DRIVER_MUTATIONS: dict[str, Mutation] = {
    "vote-not-persisted": Mutation("vote-not-persisted", early_votes=True),
}
_DRIVER_DOCS = {"vote-not-persisted": "Send vote answers before the vote is persisted."}

# Core mutations no fault profile of the simulator provokes yet (none: ``long-lease`` is caught
# as ``lease-overlap`` since leaders are judged the moment a newer one is elected).
NOT_CAUGHT_YET: frozenset[str] = frozenset()

NO_MUTATION = Mutation("none")


def describe() -> dict[str, str]:
    """Every mutation ``tessera simulate --mutation`` takes, name -> what it does."""
    return {**known_mutations(), **_DRIVER_DOCS}


def get_mutation(name: str | None) -> Mutation:
    if name is None or name == "" or name == "none":
        return NO_MUTATION
    if name in DRIVER_MUTATIONS:
        return DRIVER_MUTATIONS[name]
    if name in known_mutations():
        return Mutation(name, core=name)
    valid = ", ".join(sorted(describe()))
    raise ValueError(f"unknown mutation {name!r}; valid mutations: {valid}")
