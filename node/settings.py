"""A node's tunables and their defaults: the one place they are written down.

``tessera node`` (tools/cli.py) takes its flag defaults from these dataclasses at parse time,
so this module imports nothing but :mod:`dataclasses`: reading a default must not load gRPC,
LMDB or the consensus core, or every ``tessera --help`` would pay for them. The node itself
builds them from the parsed flags (node/server.py) and hands them to
:class:`~node.raftstore.RaftStore` and :class:`~node.kv_service.KVService`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftSettings:
    """How every partition's Raft group on this node runs (``tessera node --tick-ms`` etc.)."""

    tick_s: float = 0.05  # one Raft tick; an election times out after election_tick to 2x that many
    election_tick: int = 10
    heartbeat_tick: int = 2
    max_inflight_msgs: int = 256  # appends in flight to one follower
    max_size_per_msg: int = 1 << 20
    compact_threshold: int = 10_000  # compact a partition's log once it holds this many applied entries
    compact_keep: int = 1_000  # applied entries kept after compaction, for slow followers


@dataclass(frozen=True, slots=True)
class Limits:
    """What the node's KV service accepts (``tessera node --max-key-bytes`` etc.)."""

    max_key_bytes: int = 4096
    max_value_bytes: int = 1 << 20
    max_batch_ops: int = 1024
    default_scan_limit: int = 1000
    max_scan_limit: int = 10_000
    default_stale_ms: int = 5_000  # a STALE read that names no bound accepts data this old
    request_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """What a node queues at most before it answers RESOURCE_EXHAUSTED (node/admission.py;
    ``tessera node --max-proposals`` etc.)."""

    partition_proposals: int = 1024
    node_proposals: int = 8192
    stream_bytes: int = 64 << 20
    snapshots_out: int = 4
    snapshots_in: int = 4
    retry_after_ms: int = 100  # the hint sent with a refusal: about a round or two under load

    def __post_init__(self) -> None:
        for name in ("partition_proposals", "node_proposals", "stream_bytes", "snapshots_out", "snapshots_in"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")


HEARTBEAT_INTERVAL_S = 1.0
"""How often a node reports to placement when nothing prompts it sooner (``--heartbeat-interval``)."""

DISK_RESERVE_MB = 32
"""Space a node sets aside and gives back when its disk fills (``--disk-reserve-mb``; at most 5% of
the file system; node/disk_full.py)."""
