"""Raft traffic leaving this node: messages grouped per peer store, snapshots streamed.

The core addresses messages to replica ids; a replica's descriptor says which store hosts
each one.  Messages go to the transport (one batched stream per peer store); a snapshot
message becomes a streamed image of the partition's applied state, read from one LMDB
transaction, and its outcome goes back to the core.  Store-level heartbeats (partition 0)
tell peers this store is alive, so idle (quiesced) groups need no traffic of their own.

See docs/architecture.md ("Traffic between nodes") and docs/decisions.md D8.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol

from common.descriptor import Descriptor
from node.admission import Admission
from node.raft import Message, MessageType, Snapshot, SnapshotMeta
from node.raft_codec import message_to_pb
from node.replica import Replica
from node.state.snapshot_file import snapshot_stream
from node.state.store import StateStore
from tesserapb import raft_pb2

log = logging.getLogger("tessera.outbox")


class Transport(Protocol):
    """What the outbox needs of :class:`node.transport.RaftTransport`."""

    def send(self, to_store: int, msgs: Sequence[raft_pb2.RaftMessage]) -> None: ...

    def flush(self) -> None:
        """Write what :meth:`send` queued now, where the connection allows (else soon)."""
        ...

    async def send_snapshot(
        self,
        to_store: int,
        first: raft_pb2.RaftMessage,
        chunks: Iterable[bytes],
        *,
        descriptor: Descriptor | None = None,
    ) -> tuple[bool, str]: ...


class Outbox:
    def __init__(
        self,
        store_id: int,
        transport: Transport,
        state: StateStore,
        kick: Callable[[], None],
        admission: Admission | None = None,
    ) -> None:
        self.store_id = store_id
        self.admission = admission or Admission()  # bounds the snapshots streamed at once
        self.transport = transport
        self.state = state
        self._kick = kick
        self._bg: set[asyncio.Task[None]] = set()
        self.msgs_sent = 0
        self.snapshots_sent = 0  # snapshot images streamed, and those that failed (node/metrics.py)
        self.snapshots_send_failed = 0

    def send(self, rep: Replica, msgs: Sequence[Message]) -> None:
        """Send a replica's messages: one transport batch per destination store."""
        if not msgs:
            return
        epoch = (rep.descriptor.epoch.conf_ver, rep.descriptor.epoch.version)
        by_store: dict[int, list[raft_pb2.RaftMessage]] = {}
        for m in msgs:
            if m.type == MessageType.SNAP:
                self._spawn(self._send_snapshot(rep, m))
                continue
            store = rep.store_of(m.dst)
            if store is None:
                continue  # a member this descriptor does not know yet; the core retries
            by_store.setdefault(store, []).append(message_to_pb(rep.pid, epoch, m))
        for store, pbs in by_store.items():
            self.msgs_sent += len(pbs)
            self.transport.send(store, pbs)

    def flush(self) -> None:
        """Put what was sent so far on the wire now (the transport would, a moment later)."""
        self.transport.flush()

    def send_store_heartbeats(self, peers: Iterable[int]) -> None:
        for store in peers:
            self.transport.send(
                store,
                [raft_pb2.RaftMessage(partition_id=0, type=MessageType.HEARTBEAT, src=self.store_id, dst=store)],
            )

    async def close(self) -> None:
        for t in list(self._bg):
            t.cancel()
        for t in list(self._bg):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)

    async def _send_snapshot(self, rep: Replica, m: Message) -> None:
        store = rep.store_of(m.dst)
        ok = False
        if store is not None and not self.admission.admit_snapshot_out():
            log.info("snapshot of partition %d to store %d deferred: %d snapshots already streaming",
                     rep.pid, store, self.admission.snapshots_out)
        elif store is not None:
            try:
                ok = await self._stream_snapshot(rep, m, store)
            finally:
                self.admission.snapshot_out_done()
        if not ok:
            self.snapshots_send_failed += 1
        rep.raw.report_snapshot(m.dst, ok)
        self._kick()

    async def _stream_snapshot(self, rep: Replica, m: Message, store: int) -> bool:
        """Stream one image (one of the admitted few); True if the peer took it."""
        ok = False
        reader = self.state.open_snapshot(rep.pid, rep.start, rep.end)
        try:
            meta = reader.meta
            # The image streamed is the applied state as of now, which may be newer than
            # the one the core named: announce the one the follower really gets.
            m = dataclasses.replace(
                m, snapshot=Snapshot(SnapshotMeta(meta.applied_index, meta.applied_term, meta.conf_state))
            )
            epoch = (rep.descriptor.epoch.conf_ver, rep.descriptor.epoch.version)
            ok, reason = await self.transport.send_snapshot(
                store,
                message_to_pb(rep.pid, epoch, m),
                snapshot_stream(reader.chunks()),
                descriptor=reader.descriptor,
            )
            if ok:
                self.snapshots_sent += 1
                log.info(
                    "sent snapshot of partition %d at index %d to store %d", rep.pid, meta.applied_index, store
                )
            else:
                log.warning("snapshot of partition %d to store %d refused: %s", rep.pid, store, reason,
                            extra={"partition": rep.pid})
        except Exception as exc:  # transport failure: the core probes again later
            log.warning("snapshot of partition %d to store %s failed: %s", rep.pid, store, exc,
                        extra={"partition": rep.pid})
        finally:
            reader.close()
        return ok
