"""The placement service's tunables and their defaults: the one place they are written down.

``tessera router`` and ``tessera cluster up`` (tools/cli.py) take their flag defaults from
:class:`PlacementConfig` at parse time, so this module imports nothing but
:mod:`dataclasses`: reading a default must not load gRPC or asyncio, or every
``tessera --help`` would pay for them. The router builds one from the parsed flags
(router/main.py) and hands it to :class:`~router.placement.runtime.Placement`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    partitions: int = 8  # pre-split a brand-new cluster into this many partitions
    replicas: int = 3  # replicas of each pre-split partition; bootstrap waits for this many stores
    store_down_after_s: float = 5.0  # a store silent this long is reported down
    max_down_s: float = 30.0  # a store down this long has its replicas re-created elsewhere
    split_size: int = 64 << 20  # a partition larger than this (bytes, as its leader reports) is split (D21)
    schedule_interval_s: float = 1.0  # the scheduler's period on the placement leader; 0: no scheduler
    max_moves: int = 4  # replica moves (snapshots to new replicas) in flight at once, cluster-wide
    max_transfers: int = 4  # leader transfers the scheduler keeps in flight at once


# Members of a placement group, at most: every command waits on a quorum of them, and more
# than seven buys no availability a store of this size needs (etcd advises the same).
MAX_GROUP_MEMBERS = 7


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """How the placement group's Raft runs (router/placement/group.py)."""

    tick_s: float = 0.05
    election_tick: int = 10
    heartbeat_tick: int = 2
    checkpoint_every: int = 2000  # applied commands between checkpoints of the table (--checkpoint-every)

    @property
    def keep(self) -> int:
        """Commands kept in the log behind a checkpoint, for members a little behind; one
        further behind is sent the checkpoint instead."""
        return max(1, self.checkpoint_every // 4)
