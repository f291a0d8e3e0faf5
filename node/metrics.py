"""A node's Prometheus metrics: what it counts, and the collector that exports it at scrape time.

Nothing here runs per request except :meth:`NodeStats.requests`'s ``note`` (a bisect and two
additions, common.metrics says why not prometheus_client's own Counter). The collector reads
the node's own counters (the round executor's, the WAL's, the outbox's, the ticker's), walks
the replicas for the gauges (leaders, apply lag) and asks LMDB its size, when Prometheus
scrapes, on the event loop. Names and what each one means: docs/observability.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import RpcStats, counter, histogram

if TYPE_CHECKING:
    from node.health import NodeHealth
    from node.raftstore import RaftStore


class NodeStats:
    """Counters the node keeps beside what its parts count themselves; plain ints, changed on
    the event loop. Another part that wants a number exported adds it here and in
    :class:`NodeCollector`."""

    __slots__ = (
        "leader_elections_won",
        "proposals",
        "requests",
        "snapshots_received",
        "snapshots_refused",
        "streams_open",
    )

    def __init__(self) -> None:
        self.requests = RpcStats()  # KV requests by rpc ("get", "put", ...) and status code
        self.proposals = 0  # client commands proposed (accepted by a leader's queue)
        self.streams_open = 0  # KV.Stream calls and KV wire connections in progress
        self.leader_elections_won = 0  # a replica here became leader
        self.snapshots_received = 0  # snapshot images received and installed (or not needed)
        self.snapshots_refused = 0  # received and refused, or the install failed


class NodeCollector(Collector):
    """Reads a running node's counters when Prometheus scrapes (see the module docstring)."""

    def __init__(
        self, store_id: int, stats: NodeStats, raftstore: Callable[[], RaftStore | None], health: NodeHealth
    ) -> None:
        """``raftstore`` gives the node's RaftStore, None while the node starts (then only the
        requests and health are told)."""
        self.store_id = store_id
        self.stats = stats
        self.raftstore = raftstore
        self.health = health

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield from s.requests.families("tessera_node", "KV requests (unary, and items of KV.Stream)")
        yield _gauge("tessera_node_streams_open", "KV.Stream calls and KV wire connections in progress", s.streams_open)
        yield _gauge("tessera_node_serving", "1 while the gRPC health service says SERVING, else 0",
                     int(self.health.serving))
        reasons = GaugeMetricFamily("tessera_node_not_serving", "1 for each reason the node is NOT_SERVING",
                                    labels=("reason",))
        for name in sorted(self.health.reasons):
            reasons.add_metric([name], 1)
        yield reasons
        rs = self.raftstore()
        if rs is None:
            return
        yield _gauge("tessera_node_failed", "1 once the node has failed stop (WAL or internal error)",
                     int(rs.failed is not None))

        # Raft: what went through the log, and the replicas' state now.
        ex = rs.executor
        yield counter("tessera_raft_proposals", "client commands proposed to a leader here", s.proposals)
        yield counter("tessera_raft_entries_committed", "committed log entries handed to apply, all partitions",
                      ex.entries_committed)
        yield counter("tessera_raft_entries_applied", "log entries applied to LMDB, all partitions",
                      ex.entries_applied)
        yield counter("tessera_raft_leader_elections_won", "times a replica here became its partition's leader",
                      s.leader_elections_won)
        replicas = leaders = lag = max_lag = quiet = 0
        for rep in rs.replicas.values():
            if rep.closed:
                continue
            replicas += 1
            raw = rep.raw
            if raw.is_leader:
                leaders += 1
            behind = max(0, raw.commit - rep.applied)
            lag += behind
            max_lag = max(max_lag, behind)
            quiet += raw.quiesced
        yield _gauge("tessera_raft_replicas", "partition replicas hosted here", replicas)
        yield _gauge("tessera_raft_leaders", "partitions led by this node", leaders)
        yield _gauge("tessera_raft_replicas_quiesced", "replicas whose group is quiet (no ticks)", quiet)
        yield _gauge("tessera_raft_apply_lag_entries", "committed entries not yet applied, summed over replicas",
                     lag)
        yield _gauge("tessera_raft_apply_lag_max_entries", "committed entries not yet applied, worst replica",
                     max_lag)
        out = rs.outbox
        yield counter("tessera_raft_messages_sent", "Raft messages handed to the transport", out.msgs_sent)
        snaps = CounterMetricFamily("tessera_raft_snapshots_sent", "snapshot images streamed to a follower, by result",
                                    labels=("result",))
        snaps.add_metric(["ok"], out.snapshots_sent)
        snaps.add_metric(["failed"], out.snapshots_send_failed)
        yield snaps
        got = CounterMetricFamily("tessera_raft_snapshots_received", "snapshot images received from a leader, "
                                  "by result", labels=("result",))
        got.add_metric(["ok"], s.snapshots_received)
        got.add_metric(["refused"], s.snapshots_refused)
        yield got

        # Rounds and the disk.
        yield counter("tessera_node_rounds", "Raft rounds run (each: one WAL write, one LMDB transaction)",
                      rs.rounds)
        trips = CounterMetricFamily("tessera_node_disk_trips", "rounds' disk trips, by where they ran",
                                    labels=("where",))
        trips.add_metric(["inline"], ex.trips_inline)
        trips.add_metric(["thread"], ex.trips_threaded)
        yield trips
        yield counter("tessera_node_ticker_repairs", "quiescence bookkeeping the once-a-second sweep repaired "
                      "(always 0 unless there is a bug)", rs.ticker.missed)
        wal = rs.wal.stats
        yield histogram("tessera_wal_fsync_duration_seconds", "time of one WAL fsync", wal.fsync)
        yield counter("tessera_wal_written_bytes", "bytes appended to the WAL", wal.bytes_written)
        yield counter("tessera_wal_writes", "WAL batch writes (one per round that had something to log)",
                      wal.writes)
        yield _gauge("tessera_wal_failed", "1 once the WAL has failed (it then accepts no writes, for good)",
                     int(rs.wal.failed))
        disk = rs.disk  # node.disk_full: writes refused, reads served, retried once a second
        yield _gauge("tessera_node_disk_full", "1 while the node finds its disk full and refuses writes",
                     int(disk.full))
        yield counter("tessera_node_disk_full_episodes", "times the disk was found full", disk.episodes)
        yield counter("tessera_node_disk_full_retries", "rounds that tried the disk again while it was full",
                      disk.retries)
        adm = rs.admission  # node.admission: requests answered RESOURCE_EXHAUSTED past a bound
        yield _gauge("tessera_node_proposals_in_flight", "writes admitted and not yet settled, all partitions",
                     adm.proposals)
        yield counter("tessera_node_busy_refusals", "requests answered RESOURCE_EXHAUSTED past a bound",
                      adm.refused)
        env = rs.state.env
        try:
            info, stat = env.info(), env.stat()
            used = (info["last_pgno"] + 1) * stat["psize"]
            yield _gauge("tessera_lmdb_used_bytes", "pages in use in the LMDB environment, in bytes", used)
            yield _gauge("tessera_lmdb_map_size_bytes", "the LMDB map size (the most it may grow to)",
                         info["map_size"])
        except Exception:  # closed (the node is stopping or has failed): no size to tell
            pass


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)

