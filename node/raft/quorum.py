"""Quorum arithmetic for simple majorities and joint configurations.

A joint configuration C(old,new) decides only with a majority of *both*
halves; an empty half agrees to everything, so a non-joint configuration is
just a joint one whose outgoing half is empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum

_UNBOUNDED = 1 << 63


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority_index(voters: frozenset[int], values: Mapping[int, int], default: int = 0) -> int:
    """The largest value that a majority of ``voters`` have reached (or passed).

    Used for the commit index (values = match indexes) and for the leader
    lease (values = acknowledged send stamps).  Empty ``voters`` -> unbounded.
    """
    n = len(voters)
    if n == 0:
        return _UNBOUNDED
    if n == 1:
        (only,) = voters
        return values.get(only, default)
    srt = sorted((values.get(v, default) for v in voters), reverse=True)
    return srt[n // 2]


def joint_index(
    incoming: frozenset[int], outgoing: frozenset[int], values: Mapping[int, int], default: int = 0
) -> int:
    return min(majority_index(incoming, values, default), majority_index(outgoing, values, default))


def majority_vote(voters: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is None:
            continue
        if got:
            granted += 1
        else:
            rejected += 1
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote(incoming: frozenset[int], outgoing: frozenset[int], votes: Mapping[int, bool]) -> VoteResult:
    a = majority_vote(incoming, votes)
    b = majority_vote(outgoing, votes)
    if a == b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
