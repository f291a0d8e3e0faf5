"""Fault profiles: each seed picks one, which fixes the cluster size, the
message batching and how hard the nemesis pushes.

The mix is tuned so that correct code passes every seed while each mutation
is caught early (see README.md for the measured first-catching seeds).
``figure8`` exists for ``commit-previous-term``: one entry per append message
and one append in flight per follower, every new leader crashed or cut off
soon after its election (often before its first append leaves), leaders
crashing right after they advance the commit index.  ``crashy`` exists for
``vote-not-persisted``: replicas are often killed while a term/vote write is
in flight.  These failpoints are harmless to a correct Raft.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    weight: int = 1  # how often seeds pick this profile, relative to the others
    sizes: tuple[int, ...] = (3, 5)
    max_entries: tuple[int, ...] = (1, 2, 3, 64)
    max_inflight: tuple[int, ...] = (1, 4, 64)
    fault_time: tuple[int, int] = (10000, 20000)  # length of the fault phase (time units)
    gap: tuple[int, int] = (40, 160)  # time between nemesis actions
    actions: tuple[tuple[str, int], ...] = ()
    downtime: tuple[int, int] = (20, 400)
    pause_time: tuple[int, int] = (20, 300)
    partition_time: tuple[int, int] = (100, 600)
    flaky_time: tuple[int, int] = (100, 400)
    drop_prob: float = 0.0
    dup_prob: float = 0.02
    long_delay_prob: float = 0.05
    long_delay_hi: int = 60
    flaky_drop: float = 0.2
    flaky_dup: float = 0.1
    disk: tuple[int, int] = (1, 6)
    disk_slow_prob: float = 0.05
    disk_slow: tuple[int, int] = (20, 80)
    read_ratio: float = 0.4
    clients: int = 3
    keys: int = 3  # how many of the hot keys x, y, z the clients use
    wander: float = 0.15  # chance a client sends its next op to a random voter instead of its leader guess
    max_down: int = 2  # crashed + paused members at once (capped at a minority+1)
    vote_trap: float = 0.0  # chance per vote write of crashing the voter before the write lands
    leader_trap: float = 0.0  # chance that a new leader is crashed or cut off right after its election
    leader_trap_delay: tuple[int, int] = (1, 30)
    commit_trap: float = 0.0  # chance that a leader crashes right after advancing its commit index


BASE_ACTIONS = (
    ("crash", 3),
    ("crash-leader", 3),
    ("crash-writer", 2),
    ("restart", 2),
    ("pause", 2),
    ("pause-leader", 1),
    ("partition", 3),
    ("isolate-leader", 2),
    ("heal", 2),
    ("compact", 3),
    ("member", 3),
    ("transfer", 2),
    ("flaky", 1),
)

PROFILES: tuple[Profile, ...] = (
    Profile("balanced", actions=BASE_ACTIONS, vote_trap=0.1, leader_trap=0.1),
    Profile(
        "figure8",
        weight=2,
        sizes=(3, 3, 5),
        max_entries=(1,),
        max_inflight=(1,),
        gap=(30, 120),
        downtime=(20, 250),
        actions=(
            ("crash-leader", 8),
            ("crash", 3),
            ("restart", 2),
            ("isolate-leader", 4),
            ("partition", 3),
            ("heal", 2),
            ("pause-leader", 1),
            ("transfer", 2),
            ("compact", 1),
        ),
        read_ratio=0.2,
        clients=4,
        max_down=3,
        leader_trap=1.0,
        leader_trap_delay=(1, 60),
        commit_trap=0.1,
    ),
    Profile(
        "membership",
        gap=(40, 120),
        actions=(
            ("member", 8),
            ("compact", 4),
            ("transfer", 3),
            ("crash", 2),
            ("crash-leader", 1),
            ("restart", 1),
            ("partition", 1),
            ("heal", 1),
            ("pause", 1),
        ),
    ),
    Profile(
        "network",
        actions=(
            ("partition", 5),
            ("isolate-leader", 3),
            ("heal", 3),
            ("flaky", 3),
            ("pause", 2),
            ("pause-leader", 2),
            ("compact", 2),
            ("transfer", 1),
            ("crash", 1),
            ("restart", 1),
        ),
        drop_prob=0.02,
        dup_prob=0.05,
        long_delay_prob=0.1,
        long_delay_hi=120,
    ),
    Profile(
        "pauses",
        gap=(40, 140),
        pause_time=(60, 250),
        actions=(
            ("pause-leader", 6),
            ("pause", 2),
            ("isolate-leader", 2),
            ("partition", 1),
            ("heal", 1),
            ("crash", 1),
            ("transfer", 1),
            ("compact", 1),
        ),
        read_ratio=0.6,
        clients=5,
        keys=2,
    ),
    Profile(
        "crashy",
        weight=2,
        gap=(30, 100),
        downtime=(5, 120),
        actions=(
            ("crash-writer", 5),
            ("crash", 3),
            ("crash-leader", 3),
            ("restart", 3),
            ("isolate-leader", 2),
            ("partition", 2),
            ("heal", 2),
            ("compact", 2),
            ("member", 1),
        ),
        disk=(2, 10),
        disk_slow_prob=0.15,
        vote_trap=0.6,
        max_down=2,
    ),
)

PROFILE_NAMES = tuple(p.name for p in PROFILES)


_WEIGHTED = tuple(p for p in PROFILES for _ in range(p.weight))


def choose_profile(rng: random.Random) -> Profile:
    return _WEIGHTED[rng.randrange(len(_WEIGHTED))]
