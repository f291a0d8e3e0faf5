"""Fault profiles: each seed picks one, which fixes the cluster size, the
message batching, the clocks and how hard the nemesis pushes.

Each profile puts one class of situations under pressure (README.md has the
table); none is aimed at a particular bug:

* ``balanced``, ``network``, ``pauses``, ``crashy``, ``membership``: the
  everyday mix, each leaning on one kind of fault (``membership`` also asks
  learners to campaign and has snapshots that are slow to become available).
* ``figure8``: one entry per append message and one append in flight per
  follower, every new leader crashed or cut off soon after its election
  (often before its first append leaves), leaders crashing right after they
  advance the commit index.  ``crashy`` kills replicas while a term/vote
  write is in flight.  These failpoints are harmless to a correct Raft.
* ``even``: four-replica groups (two-two splits have no majority), single and
  joint changes, the network cut the moment a joint configuration is applied.
* ``resize``: joint transitions between sizes (3->4, 4->5, 5->3 and the
  rest), with the same joint-time cuts and leader crashes.
* ``deposed``: leaders cut off, paused or overtaken while clients keep
  sending them reads (lease and ReadIndex); clocks 12.5% apart, exactly the
  core's stated drift bound; the longest message delays.
* ``stale``: late copies of messages (snapshots most of all) arriving long
  after the log, term or configuration moved on; leaders cut off with a
  minority while a burst of proposals builds a long uncommitted tail (half
  the seeds with a small uncommitted-entries limit, which the burst hits);
  snapshots that stay unavailable to the core for a while after compaction.
* ``confstorm``: membership changes proposed back to back, and together with
  leadership transfers (some to the voter the change removes), changes no
  configuration allows, campaigns asked of replicas that may not stand; the
  driver leaves the refusing to the core.
* ``grow``: a group bootstrapped with a single voter that grows (1->3 and
  on, through joint configurations) and shrinks back, down to one voter
  again; a one-voter group answers reads and wins elections on its own.
* ``rejoin``: followers cut off for many election timeouts that come back,
  and transfers to followers that are behind; PreVote always on, so the
  ``stability`` check judges every lost leadership.
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
    periods: tuple[int, ...] = (10, 9)  # tick periods a replica's clock is drawn from (time units)
    pre_vote: float = 0.8  # chance that the seed runs with PreVote
    spare: int = 3  # node ids beyond the initial members, for learners
    late_prob: float = 0.0  # chance a message also gets a late copy (snapshots: 4x)
    late_delay: tuple[int, int] = (150, 2000)  # when that copy lands
    joint_trap: float = 0.0  # chance of a cut (or leader crash) the moment a joint configuration applies
    burst: tuple[int, int] = (10, 60)  # entries a cut-off leader is given by the `tail` action
    max_uncommitted: tuple[int, ...] = (1 << 16,)  # Config.max_uncommitted_entries choices
    snap_busy: float = 0.0  # chance that a new snapshot stays unavailable to the core for a while
    snap_busy_time: tuple[int, int] = (20, 200)  # how long it stays unavailable
    lull_time: tuple[int, int] = (300, 1500)  # how long the `lull` action silences the clients
    min_voters: int = 3  # the membership driver never shrinks the group below this
    slow_inbound: tuple[int, int] = (40, 120)  # extra delay of messages to a leader the `depose` action slows


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
    ("lull", 1),
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
            ("campaign-learner", 1),
        ),
        snap_busy=0.2,
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
            ("lull", 2),
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
            ("lull", 2),
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
    Profile(
        "even",
        sizes=(4,),
        spare=4,
        gap=(40, 120),
        actions=(
            ("member", 5),
            ("resize", 3),
            ("partition", 3),
            ("isolate-leader", 2),
            ("heal", 2),
            ("crash", 2),
            ("crash-leader", 1),
            ("restart", 1),
            ("transfer", 2),
            ("compact", 2),
            ("pause", 1),
            ("lull", 2),
        ),
        joint_trap=0.7,
    ),
    Profile(
        "resize",
        sizes=(3, 4, 5),
        spare=5,
        gap=(30, 100),
        actions=(
            ("resize", 8),
            ("member", 2),
            ("compact", 3),
            ("transfer", 1),
            ("partition", 1),
            ("heal", 1),
            ("crash", 1),
            ("crash-leader", 1),
            ("restart", 1),
        ),
        joint_trap=0.8,
    ),
    Profile(
        "deposed",
        periods=(9, 8),
        gap=(40, 140),
        pause_time=(40, 160),
        partition_time=(60, 400),
        actions=(
            ("depose", 8),
            ("pause-leader", 2),
            ("isolate-leader", 1),
            ("partition", 1),
            ("heal", 1),
            ("transfer", 1),
            ("crash", 1),
            ("compact", 1),
        ),
        long_delay_prob=0.1,
        long_delay_hi=120,
        read_ratio=0.7,
        clients=5,
        keys=2,
        wander=0.05,
    ),
    Profile(
        "stale",
        dup_prob=0.05,
        late_prob=0.04,
        actions=(
            ("tail", 4),
            ("compact", 4),
            ("partition", 2),
            ("isolate-leader", 2),
            ("heal", 2),
            ("crash-leader", 2),
            ("crash", 1),
            ("restart", 1),
            ("member", 1),
            ("transfer", 1),
        ),
        partition_time=(100, 500),
        max_uncommitted=(24, 1 << 16),
        snap_busy=0.3,
    ),
    Profile(
        "confstorm",
        spare=4,
        gap=(30, 100),
        actions=(
            ("member-storm", 5),
            ("transfer-member", 4),
            ("member-invalid", 1),
            ("campaign-learner", 1),
            ("member", 2),
            ("resize", 2),
            ("transfer", 2),
            ("compact", 2),
            ("crash-leader", 1),
            ("partition", 1),
            ("heal", 1),
            ("crash", 1),
            ("restart", 1),
        ),
    ),
    Profile(
        "grow",
        sizes=(1,),
        spare=5,
        min_voters=1,
        gap=(40, 120),
        actions=(
            ("resize", 4),
            ("member", 3),
            ("member-invalid", 2),
            ("transfer", 1),
            ("compact", 2),
            ("crash", 1),
            ("restart", 1),
            ("partition", 1),
            ("heal", 1),
            ("pause", 1),
        ),
        joint_trap=0.3,
    ),
    Profile(
        "rejoin",
        pre_vote=1.0,
        gap=(60, 160),
        partition_time=(200, 1500),
        actions=(
            ("rejoin", 5),
            ("lagging-transfer", 4),
            ("transfer", 1),
            ("compact", 2),
            ("crash", 1),
            ("restart", 1),
            ("pause", 1),
            ("lull", 2),
        ),
    ),
)

PROFILE_NAMES = tuple(p.name for p in PROFILES)



_WEIGHTED = tuple(p for p in PROFILES for _ in range(p.weight))


def choose_profile(rng: random.Random) -> Profile:
    return _WEIGHTED[rng.randrange(len(_WEIGHTED))]
