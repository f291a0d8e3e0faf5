"""Quorum arithmetic (node/raft/quorum.py) against brute force, over every configuration shape
up to 7 voters.

The code computes; the oracles here *define*: an index is committed when the replicas that
reached it form a quorum (a majority of each non-empty half of a joint configuration), and a
vote is WON when it wins whatever the missing voters answer, LOST when it loses whatever they
answer, PENDING otherwise. Configurations are enumerated by shape (how many voters are only
incoming, only outgoing, or in both halves), which is all that the arithmetic can see; values
and votes are enumerated exhaustively for each shape.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TypeVar

from node.raft.quorum import _UNBOUNDED, VoteResult, joint_index, joint_vote, majority_index, majority_vote

MAX_VOTERS = 7
INDEXES = (0, 1)  # with "absent" (the default) as a third value: enough for every order and tie

T = TypeVar("T")


def shapes() -> Iterator[tuple[frozenset[int], frozenset[int]]]:
    """Every (incoming, outgoing) up to MAX_VOTERS distinct voters, one per shape."""
    for only_in, only_out, both in itertools.product(range(MAX_VOTERS + 1), repeat=3):
        if only_in + only_out + both > MAX_VOTERS:
            continue
        ids = itertools.count(1)
        i = frozenset(next(ids) for _ in range(only_in))
        o = frozenset(next(ids) for _ in range(only_out))
        b = frozenset(next(ids) for _ in range(both))
        yield i | b, o | b


def is_quorum(voters: frozenset[int], who: set[int]) -> bool:
    return not voters or len(voters & who) * 2 > len(voters)


def oracle_index(incoming: frozenset[int], outgoing: frozenset[int], values: Mapping[int, int], default: int) -> int:
    members = incoming | outgoing
    if not members:
        return _UNBOUNDED
    best = None
    for candidate in {values.get(v, default) for v in members}:
        reached = {v for v in members if values.get(v, default) >= candidate}
        if is_quorum(incoming, reached) and is_quorum(outgoing, reached):
            best = candidate if best is None else max(best, candidate)
    if best is None:  # no value is reached by a quorum: nothing above the lowest
        return min(values.get(v, default) for v in members)
    return best


def oracle_vote(incoming: frozenset[int], outgoing: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    members = incoming | outgoing
    missing = sorted(v for v in members if v not in votes)
    outcomes = set()
    for answers in itertools.product((True, False), repeat=len(missing)):
        complete = {**votes, **dict(zip(missing, answers))}
        granted = {v for v, yes in complete.items() if yes}
        outcomes.add(is_quorum(incoming, granted) and is_quorum(outgoing, granted))
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


def assignments(members: frozenset[int], domain: tuple[T | None, ...]) -> Iterator[dict[int, T]]:
    """Every map from members to ``domain``, where ``None`` in the domain means "absent"."""
    ordered = sorted(members)
    for values in itertools.product(domain, repeat=len(ordered)):
        yield {v: x for v, x in zip(ordered, values) if x is not None}


def test_committed_index_is_the_highest_index_a_quorum_reached() -> None:
    checked = 0
    for incoming, outgoing in shapes():
        members = incoming | outgoing
        for values in assignments(members, (*INDEXES, None)):
            want = oracle_index(incoming, outgoing, values, default=-1)
            got = joint_index(incoming, outgoing, values, default=-1)
            assert got == want, (sorted(incoming), sorted(outgoing), values, got, want)
            if not outgoing:
                assert majority_index(incoming, values, default=-1) == want
            checked += 1
    assert checked > 50_000  # the enumeration really ran


def test_votes_are_won_or_lost_exactly_when_every_completion_agrees() -> None:
    checked = 0
    for incoming, outgoing in shapes():
        members = incoming | outgoing
        for votes in assignments(members, (True, False, None)):
            want = oracle_vote(incoming, outgoing, votes)
            assert joint_vote(incoming, outgoing, votes) == want, (sorted(incoming), sorted(outgoing), votes)
            if not outgoing:
                assert majority_vote(incoming, votes) == want
            checked += 1
    assert checked > 50_000
