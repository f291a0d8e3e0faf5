"""The public KV API as served by a node: validation, routing checks, reads and writes.

Every request is checked, in this order, before anything happens: input
limits (INVALID_ARGUMENT naming the limit), the partition (hosted here?),
the epoch the client routed with, the key range, and leadership.  Only then
is a write proposed or a read started, so a rejected request has no effect.

Writes carry the client's request id into the command: a retry of a write
whose first attempt did commit returns the first result (see
:mod:`node.state.store`).  Reads follow the requested consistency:
LEASE (default) and LINEARIZABLE on the leader, STALE on any replica that
heard from its leader within the bound.

See docs/architecture.md ("A write, end to end").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, TypeVar

import grpc

from common.wire import errors as werr
from common.wire.descriptors import descriptor_to_pb
from common.wire.errors import WireError
from node.disk_full import RETRY_AFTER_MS
from node.kv_stream import StreamSession, Unanswered
from node.metrics import NodeStats
from node.raft import NotLeaderError, ProposalDroppedError
from node.raftstore import RaftStore
from node.replica import Replica
from node.requests import Proposal, ProposalLost, ReplicaStopped
from node.settings import Limits
from node.state.commands import Command, Op, OpKind
from node.state.store import REJECTED, OpResult
from tesserapb import errors_pb2, kv_pb2, kv_pb2_grpc, meta_pb2

MAX_REQUEST_ID_BYTES = 64


def _read_timed_out() -> WireError:
    return WireError(grpc.StatusCode.UNAVAILABLE, "leadership not confirmed in time")


def _write_timed_out() -> WireError:
    return WireError(
        grpc.StatusCode.UNAVAILABLE, "write not confirmed in time; outcome unknown (retry with the same request_id)"
    )


class _Pending:
    """A stream item served without a task (D25), not yet answered: answered exactly once, by
    whichever comes first of what settles it (the subclass's callbacks) and its deadline."""

    __slots__ = ("kind", "out", "pending", "rep", "respond", "svc", "t0", "timer")

    timed_out: ClassVar[Callable[[], WireError]]  # the deadline's answer

    def __init__(
        self,
        svc: KVService,
        rep: Replica,
        kind: str,
        out: kv_pb2.StreamResponseItem,
        respond: Callable[[kv_pb2.StreamResponseItem], None],
        pending: Unanswered,
        t0: float,
    ) -> None:
        self.svc, self.rep, self.kind, self.out, self.respond, self.pending, self.t0 = (
            svc, rep, kind, out, respond, pending, t0
        )
        self.timer: asyncio.TimerHandle | None = rep.loop.call_later(svc.limits.request_timeout_s, self._expired)
        pending.add(self)

    def _answer(self, fill: Callable[[kv_pb2.StreamResponseItem], None]) -> None:
        """Settled before the deadline: ``fill`` writes the result into the answer (or raises
        the WireError that is the answer)."""
        assert self.timer is not None
        self.timer.cancel()
        self.timer = None
        out = self.out
        try:
            fill(out)
        except WireError as exc:
            exc.fill(out)
        except Exception as exc:
            out.code = grpc.StatusCode.INTERNAL.value[0]
            out.message = f"internal error: {exc}"
        self._done()

    def _expired(self) -> None:
        if self.timer is None:
            return
        self.timer = None
        type(self).timed_out().fill(self.out)
        self._done()

    def _done(self) -> None:
        self.pending.done(self)
        self.svc.stats.requests.note(self.kind, self.out.code, time.perf_counter() - self.t0)
        self.respond(self.out)

    def abandon(self) -> None:
        """The stream ended: never answer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _PendingWrite(_Pending):
    """A put or delete proposed: settled by its proposal, called from the round that applied
    it (node.requests.Proposal), so its answer is queued there and then."""

    __slots__ = ()
    timed_out = staticmethod(_write_timed_out)

    def __init__(self, proposal: Proposal, *args: Any) -> None:
        super().__init__(*args)
        proposal.on_settled = self._settled

    def _settled(self, results: list[OpResult] | None, exc: BaseException | None) -> None:
        self.svc.rs.admission.proposal_settled()
        if self.timer is None:
            return  # answered already (deadline)

        def fill(out: kv_pb2.StreamResponseItem) -> None:
            (r,) = self.svc._outcome(self.rep, results, exc)
            if self.kind == "put":
                out.put.version = r.version
            else:
                out.delete.deleted = r.existed

        self._answer(fill)


def _failure(fut: asyncio.Future[Any]) -> BaseException | None:
    if fut.cancelled():
        return ReplicaStopped("the read was cancelled (replica closing)")
    return fut.exception()


class _PendingGet(_Pending):
    """A get waiting for its read barrier (a ReadIndex round trip, or the apply of the index
    it must see): settled by the barrier's callbacks, then read."""

    __slots__ = ("key", "version")
    timed_out = staticmethod(_read_timed_out)

    def __init__(self, key: bytes, index_fut: asyncio.Future[int], *args: Any) -> None:
        super().__init__(*args)
        self.key = key
        self.version = self.rep.descriptor.epoch.version  # the range served must still hold at the read
        index_fut.add_done_callback(self._indexed)  # shared by the reads of a round: never cancelled

    def _indexed(self, fut: asyncio.Future[int]) -> None:
        if self.timer is None:
            return  # answered already (deadline)
        exc = _failure(fut)
        if exc is not None or self.rep.applied >= fut.result():
            self._read(exc)
        else:
            self.rep.wait_applied(fut.result()).add_done_callback(self._applied)

    def _applied(self, fut: asyncio.Future[None]) -> None:
        if self.timer is not None:
            self._read(_failure(fut))

    def _read(self, failure: BaseException | None) -> None:
        def fill(out: kv_pb2.StreamResponseItem) -> None:
            if failure is not None:
                raise self.svc._barrier_error(self.rep, failure)
            self.svc._check_still_holds(self.rep, self.version, [self.key])
            out.get.CopyFrom(self.svc._read_key(self.key))

        self._answer(fill)


_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_T = TypeVar("_T")


def _invalid(field: str, message: str, limit: int = 0) -> WireError:
    return WireError.of(werr.invalid_argument(field, message, limit), message)


_READ_MODES = {
    kv_pb2.CONSISTENCY_UNSPECIFIED: "lease",
    kv_pb2.LEASE: "lease",
    kv_pb2.LINEARIZABLE: "linearizable",
    kv_pb2.STALE: "stale",
}


class KVService(kv_pb2_grpc.KVServicer):
    def __init__(
        self,
        raftstore: RaftStore,
        address_of: Callable[[int], str],
        limits: Limits = Limits(),
        stats: NodeStats | None = None,
    ) -> None:
        self.rs = raftstore
        self.address_of = address_of
        self.limits = limits
        # What the node's metrics export (node/metrics.py): plain counts, a bisect per request.
        self.stats = stats if stats is not None else NodeStats()
        self.wire_address = ""  # host:port of the KV wire (node.kv_wire, D28); "": none

    # -- validation -------------------------------------------------------------

    def _check_key(self, key: bytes, field: str = "key", write: bool = False) -> None:
        if write and not key:
            raise _invalid(field, f"{field} must not be empty for a write")
        if len(key) > self.limits.max_key_bytes:
            raise _invalid(
                field,
                f"{field} is {len(key)} bytes, over the limit of {self.limits.max_key_bytes} bytes",
                self.limits.max_key_bytes,
            )

    def _check_value(self, value: bytes) -> None:
        if len(value) > self.limits.max_value_bytes:
            raise _invalid(
                "value",
                f"value is {len(value)} bytes, over the limit of {self.limits.max_value_bytes} bytes",
                self.limits.max_value_bytes,
            )

    def _read_mode(self, opts: kv_pb2.ReadOptions) -> str:
        mode = _READ_MODES.get(opts.consistency)
        if mode is None:
            raise _invalid("read_options.consistency", f"unknown consistency {opts.consistency}")
        return mode

    # -- routing ----------------------------------------------------------------

    def _descriptor(self, rep: Replica) -> meta_pb2.PartitionDescriptor:
        return descriptor_to_pb(rep.descriptor, rep.leader_store(), rep.raw.term)

    def _range_moved(self, rep: Replica, why: str) -> WireError:
        """EpochNotMatch after a split: the partition's current descriptor, and the partitions
        hosted here that cover the rest of the client's old range (the split's new halves)."""
        err = errors_pb2.Error(epoch_not_match=errors_pb2.EpochNotMatch(current=self._descriptor(rep)))
        d = rep.descriptor
        for other in self.rs.replicas.values():
            od = other.descriptor
            if other is not rep and od.epoch.version >= d.epoch.version and (od.start == d.end or od.end == d.start):
                err.epoch_not_match.related.append(self._descriptor(other))
        return WireError.of(err, f"partition {rep.pid} {why}; it now holds [{d.start!r}, {d.end!r})")

    def _check_still_holds(self, rep: Replica, version: int, keys: list[bytes]) -> None:
        """After waiting (a read barrier), the range may have been split: a key no longer
        ours must be read from its new partition, whose writes this replica may lack."""
        if rep.descriptor.epoch.version != version or any(not rep.contains(k) for k in keys):
            raise self._range_moved(rep, "was split while the request waited")

    def _route(self, ctx: kv_pb2.RequestContext, keys: list[bytes]) -> Replica:
        if self.rs.failed is not None:
            raise WireError(grpc.StatusCode.UNAVAILABLE, str(self.rs.failed))
        pid = ctx.partition_id
        if pid == 0 and keys:
            rep = next((r for r in self.rs.replicas.values() if r.contains(keys[0])), None)
            if rep is None:
                raise WireError.of(werr.partition_not_found(0), f"no partition here holds key {keys[0]!r}")
        else:
            rep = self.rs.replicas.get(pid)
            if rep is None:
                raise WireError.of(werr.partition_not_found(pid), f"partition {pid} is not hosted on this node")
        # A zero epoch means the client did not say; any other must match the range version.
        if (
            ctx.HasField("epoch")
            and (ctx.epoch.version or ctx.epoch.conf_ver)
            and ctx.epoch.version != rep.descriptor.epoch.version
        ):
            err = errors_pb2.Error(epoch_not_match=errors_pb2.EpochNotMatch(current=self._descriptor(rep)))
            raise WireError.of(
                err,
                f"partition {rep.pid} epoch version is {rep.descriptor.epoch.version}, "
                f"request has {ctx.epoch.version}",
            )
        for k in keys:
            if not rep.contains(k):
                err = errors_pb2.Error(
                    key_not_in_partition=errors_pb2.KeyNotInPartition(key=k, partition=self._descriptor(rep))
                )
                raise WireError.of(err, f"key {k!r} is outside partition {rep.pid}")
        return rep

    def _not_leader(self, rep: Replica, hint: int | None = None) -> WireError:
        store = rep.leader_store() if hint is None else (rep.store_of(hint) or 0)
        addr = self.address_of(store) if store else ""
        return WireError.of(
            werr.not_leader(rep.pid, store, addr),
            f"this node is not the leader of partition {rep.pid}" + (f"; try store {store} at {addr}" if store else ""),
        )

    # -- writes -----------------------------------------------------------------

    def _propose(self, rep: Replica, cmd: Command) -> asyncio.Future[list[OpResult] | None]:
        fut = self._proposing(rep, cmd, rep.propose)
        self.rs.admission.admitted(fut)
        return fut

    def _propose_call(self, rep: Replica, cmd: Command) -> Proposal:
        """As :meth:`_propose`, for a proposal settled by a call (a stream's write): the caller
        sets its ``on_settled``, which must call ``admission.proposal_settled`` first."""
        p = self._proposing(rep, cmd, rep.propose_call)
        self.rs.admission.admitted_call()
        return p

    def _proposing(self, rep: Replica, cmd: Command, propose: Callable[[Command], _T]) -> _T:
        """Check ``cmd`` against the bounds, then ``propose`` it; a refusal is a WireError."""
        self._may_propose(rep, cmd)
        try:
            made = propose(cmd)
        except NotLeaderError as exc:
            raise self._not_leader(rep, exc.leader) from None
        except ReplicaStopped as exc:
            raise WireError(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        self.stats.proposals += 1
        return made

    def _may_propose(self, rep: Replica, cmd: Command) -> None:
        """Raise the WireError that refuses ``cmd`` before it is proposed (a bound, a full disk)."""
        if len(cmd.request_id) > MAX_REQUEST_ID_BYTES:
            raise _invalid(
                "context.request_id",
                f"request_id is {len(cmd.request_id)} bytes, over the limit of {MAX_REQUEST_ID_BYTES}",
                MAX_REQUEST_ID_BYTES,
            )
        if self.rs.disk.full:  # node.disk_full: nothing new until the disk has room again
            raise WireError.of(werr.server_busy(f"disk full: {self.rs.disk.reason}", RETRY_AFTER_MS),
                               f"disk full on store {self.rs.store_id}: writes are refused until space returns")
        # node.admission: bounded queues, RESOURCE_EXHAUSTED past them
        self.rs.admission.admit_proposal(rep.requests.in_flight())

    def _outcome(self, rep: Replica, results: list[OpResult] | None, exc: BaseException | None) -> list[OpResult]:
        """The results of a settled proposal, or the WireError its failure means to a client."""
        if exc is not None:
            if isinstance(exc, NotLeaderError):
                raise self._not_leader(rep, exc.leader)
            if isinstance(exc, ProposalDroppedError):
                raise WireError.of(werr.server_busy(exc.reason, 50), str(exc))
            if isinstance(exc, ProposalLost):
                raise self._not_leader(rep)
            if isinstance(exc, ReplicaStopped):
                raise WireError(grpc.StatusCode.UNAVAILABLE, f"{exc}; outcome unknown")
            raise exc
        if results is REJECTED or not results:
            raise self._range_moved(rep, "was split before the write applied; it was not applied")
        return results

    async def _write(self, rep: Replica, cmd: Command) -> list[OpResult]:
        fut = self._propose(rep, cmd)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.limits.request_timeout_s)
        except TimeoutError:
            raise _write_timed_out() from None
        except Exception:
            pass  # the proposal failed: _outcome says how
        exc = fut.exception()
        return self._outcome(rep, None if exc is not None else fut.result(), exc)

    def _answered_now(
        self, item: kv_pb2.StreamRequestItem, respond: Callable[[kv_pb2.StreamResponseItem], None]
    ) -> bool:
        """Answer a get on the stream without a task if it needs no waiting (see _get_now)."""
        t0 = time.perf_counter()
        try:
            resp = self._get_now(item.get)
        except WireError as exc:
            self._refuse(kv_pb2.StreamResponseItem(request_id=item.request_id), "get", exc, t0, respond)
            return True
        except Exception:
            return False  # the task path reports it
        if resp is None:
            return False
        self.stats.requests.note("get", 0, time.perf_counter() - t0)
        respond(kv_pb2.StreamResponseItem(request_id=item.request_id, get=resp))
        return True

    def _refuse(
        self,
        out: kv_pb2.StreamResponseItem,
        kind: str,
        exc: WireError,
        t0: float,
        respond: Callable[[kv_pb2.StreamResponseItem], None],
    ) -> None:
        """Answer a stream item with the error checking it raised, at once."""
        exc.fill(out)
        self.stats.requests.note(kind, out.code, time.perf_counter() - t0)
        respond(out)

    def _start_get(
        self,
        item: kv_pb2.StreamRequestItem,
        respond: Callable[[kv_pb2.StreamResponseItem], None],
        pending: Unanswered,
    ) -> bool:
        """A LINEARIZABLE get (or a LEASE get that must wait) on the stream, served without a
        task: its read barrier started now, its answer given from the barrier's callbacks.
        False for what keeps its task (STALE reads)."""
        t0 = time.perf_counter()
        req = item.get
        out = kv_pb2.StreamResponseItem(request_id=item.request_id)
        try:
            self._check_key(req.key)
            mode = self._read_mode(req.read_options)
            if mode == "stale":
                return False
            rep = self._route(req.context, [req.key])
            self.rs.catch_up()  # a paused process must see its lease expire first
            if not rep.is_leader():
                raise self._not_leader(rep)
            try:
                index_fut = rep.read_index(lease=(mode == "lease"))
            except (NotLeaderError, ReplicaStopped) as exc:
                raise self._barrier_error(rep, exc) from None
        except WireError as exc:
            self._refuse(out, "get", exc, t0, respond)
            return True
        except Exception:
            return False  # the task path reports it
        _PendingGet(req.key, index_fut, self, rep, "get", out, respond, pending, t0)
        return True

    def _start_write(
        self,
        item: kv_pb2.StreamRequestItem,
        kind: str,
        respond: Callable[[kv_pb2.StreamResponseItem], None],
        pending: Unanswered,
    ) -> None:
        """A put or delete on the stream, served without a task: checked and proposed now,
        answered from the proposal's done callback (or its deadline's timer). A write is most of
        what a loaded node serves; a task, a shield and a wait_for per write were a tenth of
        the node's time (docs/decisions.md D23 has the profile)."""
        t0 = time.perf_counter()
        out = kv_pb2.StreamResponseItem(request_id=item.request_id)
        try:
            if kind == "put":
                req = item.put
                self._check_key(req.key, write=True)
                self._check_value(req.value)
                rep = self._route(req.context, [req.key])
                cmd = Command(req.context.request_id, (Op(OpKind.PUT, req.key, req.value),))
            else:
                dreq = item.delete
                self._check_key(dreq.key, write=True)
                rep = self._route(dreq.context, [dreq.key])
                cmd = Command(dreq.context.request_id, (Op(OpKind.DELETE, dreq.key),))
            proposal = self._propose_call(rep, cmd)
        except WireError as exc:
            self._refuse(out, kind, exc, t0, respond)
            return
        except Exception as exc:
            out.code = grpc.StatusCode.INTERNAL.value[0]
            out.message = f"internal error: {exc}"
            self.stats.requests.note(kind, out.code, time.perf_counter() - t0)
            respond(out)
            return
        _PendingWrite(proposal, self, rep, kind, out, respond, pending, t0)

    async def _put(self, req: kv_pb2.PutRequest) -> kv_pb2.PutResponse:
        self._check_key(req.key, write=True)
        self._check_value(req.value)
        rep = self._route(req.context, [req.key])
        (r,) = await self._write(rep, Command(req.context.request_id, (Op(OpKind.PUT, req.key, req.value),)))
        return kv_pb2.PutResponse(version=r.version)

    async def _delete(self, req: kv_pb2.DeleteRequest) -> kv_pb2.DeleteResponse:
        self._check_key(req.key, write=True)
        rep = self._route(req.context, [req.key])
        (r,) = await self._write(rep, Command(req.context.request_id, (Op(OpKind.DELETE, req.key),)))
        return kv_pb2.DeleteResponse(deleted=r.existed)

    async def _cas(self, req: kv_pb2.CompareAndSetRequest) -> kv_pb2.CompareAndSetResponse:
        self._check_key(req.key, write=True)
        self._check_value(req.value)
        rep = self._route(req.context, [req.key])
        op = Op(OpKind.CAS, req.key, req.value, req.expected_version, req.delete)
        (r,) = await self._write(rep, Command(req.context.request_id, (op,)))
        if r.succeeded:
            value = b"" if req.delete else req.value
            return kv_pb2.CompareAndSetResponse(succeeded=True, current_version=r.version, current_value=value)
        return kv_pb2.CompareAndSetResponse(succeeded=False, current_version=r.version, current_value=r.value)

    async def _batch(self, req: kv_pb2.BatchRequest) -> kv_pb2.BatchResponse:
        if not req.ops:
            raise _invalid("ops", "a batch needs at least one operation")
        if len(req.ops) > self.limits.max_batch_ops:
            raise _invalid(
                "ops",
                f"{len(req.ops)} operations, over the limit of {self.limits.max_batch_ops}",
                self.limits.max_batch_ops,
            )
        ops = []
        for w in req.ops:
            kind = w.WhichOneof("op")
            if kind == "put":
                self._check_key(w.put.key, "ops.put.key", write=True)
                self._check_value(w.put.value)
                ops.append(Op(OpKind.PUT, w.put.key, w.put.value))
            elif kind == "delete":
                self._check_key(w.delete.key, "ops.delete.key", write=True)
                ops.append(Op(OpKind.DELETE, w.delete.key))
            elif kind == "cas":
                self._check_key(w.cas.key, "ops.cas.key", write=True)
                self._check_value(w.cas.value)
                ops.append(Op(OpKind.CAS, w.cas.key, w.cas.value, w.cas.expected_version, w.cas.delete))
            else:
                raise _invalid("ops", "every operation must be a put, a delete or a cas")
        rep = self._route(req.context, [o.key for o in ops])
        results = await self._write(rep, Command(req.context.request_id, tuple(ops)))
        return kv_pb2.BatchResponse(
            results=[
                kv_pb2.WriteResult(
                    version=r.version, deleted=(o.kind == OpKind.DELETE and r.existed), succeeded=r.succeeded
                )
                for o, r in zip(ops, results)
            ]
        )

    # -- reads ------------------------------------------------------------------

    async def _read_barrier(self, rep: Replica, mode: str, stale_ms: int) -> None:
        """Wait until this replica may serve a read of the requested consistency."""
        loop = asyncio.get_running_loop()
        if mode == "stale":
            bound = (stale_ms or self.limits.default_stale_ms) / 1000.0
            if rep.is_leader():
                self.rs.catch_up()
                if rep.raw.lease_read_index() is not None:
                    return
            elif loop.time() - self.rs.ticker.leader_contact(rep) <= bound:
                target = rep.leader_commit
                if rep.applied >= target:
                    return
                try:
                    await asyncio.wait_for(asyncio.shield(rep.wait_applied(target)), bound)
                    return
                except TimeoutError:
                    pass
            raise self._not_leader(rep)
        self.rs.catch_up()  # a paused process must see its lease expire first
        if not rep.is_leader():
            raise self._not_leader(rep)
        try:
            index_fut = rep.read_index(lease=(mode == "lease"))
            if index_fut.done():  # a lease: no need for wait_for's machinery
                index = index_fut.result()
            else:
                index = await asyncio.wait_for(asyncio.shield(index_fut), self.limits.request_timeout_s)
            if rep.applied < index:
                await asyncio.wait_for(asyncio.shield(rep.wait_applied(index)), self.limits.request_timeout_s)
        except TimeoutError:
            raise _read_timed_out() from None
        except (NotLeaderError, ReplicaStopped) as exc:
            raise self._barrier_error(rep, exc) from None

    def _barrier_error(self, rep: Replica, exc: BaseException) -> WireError:
        """What a read barrier's failure means to a client (anything unexpected propagates)."""
        if isinstance(exc, NotLeaderError):
            return self._not_leader(rep, exc.leader)
        if isinstance(exc, ReplicaStopped):
            return WireError(grpc.StatusCode.UNAVAILABLE, str(exc))
        raise exc

    async def _get(self, req: kv_pb2.GetRequest) -> kv_pb2.GetResponse:
        self._check_key(req.key)
        mode = self._read_mode(req.read_options)
        rep = self._route(req.context, [req.key])
        version = rep.descriptor.epoch.version
        await self._read_barrier(rep, mode, req.read_options.max_staleness_ms)
        self._check_still_holds(rep, version, [req.key])
        return self._read_key(req.key)

    def _read_key(self, key: bytes) -> kv_pb2.GetResponse:
        got = self.rs.state.get(key)
        if got is None:
            return kv_pb2.GetResponse(found=False)
        return kv_pb2.GetResponse(found=True, value=got[0], version=got[1])

    def _get_now(self, req: kv_pb2.GetRequest) -> kv_pb2.GetResponse | None:
        """A LEASE get answered on the spot when the leader's lease holds and it has applied
        the lease's read index (the common case under load); None when it must wait, which
        :meth:`_get` then does. Raises WireError as :meth:`_get` would."""
        self._check_key(req.key)
        if self._read_mode(req.read_options) != "lease":
            return None
        rep = self._route(req.context, [req.key])
        self.rs.catch_up()  # a paused process must see its lease expire first
        if not rep.is_leader():
            raise self._not_leader(rep)
        index = rep.lease_index_now()
        if index is None or rep.applied < index:
            return None
        return self._read_key(req.key)

    async def _scan(self, req: kv_pb2.ScanRequest) -> kv_pb2.ScanResponse:
        self._check_key(req.start, "start")
        self._check_key(req.end, "end")
        if req.end and req.start > req.end:
            raise _invalid("end", "scan range is inverted: start is after end")
        limit = req.limit or self.limits.default_scan_limit
        if limit > self.limits.max_scan_limit:
            raise _invalid(
                "limit",
                f"limit {limit} is over the maximum of {self.limits.max_scan_limit}",
                self.limits.max_scan_limit,
            )
        mode = self._read_mode(req.read_options)
        rep = self._route(req.context, [] if req.context.partition_id else [req.start])
        start = max(req.start, rep.start)
        end = req.end
        if rep.end and (not end or end > rep.end):
            end = rep.end
        version = rep.descriptor.epoch.version
        await self._read_barrier(rep, mode, req.read_options.max_staleness_ms)
        self._check_still_holds(rep, version, [])
        rows = self.rs.state.scan(start, end, limit)
        resp = kv_pb2.ScanResponse(kvs=[kv_pb2.KeyValue(key=k, value=v, version=ver) for k, v, ver in rows])
        if len(rows) >= limit:
            resp.more = True
            resp.resume_key = rows[-1][0] + b"\x00"
        elif end != req.end:
            resp.more = True  # the partition ends before the requested range does
            resp.resume_key = rep.end
        return resp

    # -- gRPC surface -------------------------------------------------------------

    async def _unary(
        self, handler: Callable[[_Req], Awaitable[_Resp]], request: _Req, context: grpc.aio.ServicerContext
    ) -> _Resp:
        rpc = self._RPC_OF[handler.__name__]
        t0 = time.perf_counter()
        try:
            resp = await handler(request)
        except WireError as exc:
            self.stats.requests.note(rpc, exc.code.value[0], time.perf_counter() - t0)
            await werr.abort(context, exc)
        except Exception:
            self.stats.requests.note(rpc, grpc.StatusCode.UNKNOWN.value[0], time.perf_counter() - t0)
            raise
        self.stats.requests.note(rpc, 0, time.perf_counter() - t0)
        return resp

    async def Get(self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext) -> kv_pb2.GetResponse:
        return await self._unary(self._get, request, context)

    async def Put(self, request: kv_pb2.PutRequest, context: grpc.aio.ServicerContext) -> kv_pb2.PutResponse:
        return await self._unary(self._put, request, context)

    async def Delete(self, request: kv_pb2.DeleteRequest, context: grpc.aio.ServicerContext) -> kv_pb2.DeleteResponse:
        return await self._unary(self._delete, request, context)

    async def CompareAndSet(
        self, request: kv_pb2.CompareAndSetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.CompareAndSetResponse:
        return await self._unary(self._cas, request, context)

    async def Scan(self, request: kv_pb2.ScanRequest, context: grpc.aio.ServicerContext) -> kv_pb2.ScanResponse:
        return await self._unary(self._scan, request, context)

    async def Batch(self, request: kv_pb2.BatchRequest, context: grpc.aio.ServicerContext) -> kv_pb2.BatchResponse:
        return await self._unary(self._batch, request, context)

    _ITEM_HANDLERS: ClassVar[Mapping[str, str]] = {
        "get": "_get",
        "put": "_put",
        "delete": "_delete",
        "compare_and_set": "_cas",
        "scan": "_scan",
        "batch": "_batch",
    }
    _RPC_OF: ClassVar[Mapping[str, str]] = {v: k for k, v in _ITEM_HANDLERS.items()}  # "_cas" -> "compare_and_set"

    async def _serve_item(self, item: kv_pb2.StreamRequestItem) -> kv_pb2.StreamResponseItem:
        kind = item.WhichOneof("request")
        out = kv_pb2.StreamResponseItem(request_id=item.request_id)
        if kind is None:
            out.code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            out.message = "stream item carries no request"
            return out
        handler = getattr(self, self._ITEM_HANDLERS[kind])
        t0 = time.perf_counter()
        try:
            resp = await handler(getattr(item, kind))
        except WireError as exc:
            exc.fill(out)
        except Exception as exc:  # one bad item never breaks the stream
            out.code = grpc.StatusCode.INTERNAL.value[0]
            out.message = f"internal error: {exc}"
        else:
            getattr(out, kind).CopyFrom(resp)
        self.stats.requests.note(kind, out.code, time.perf_counter() - t0)
        return out

    async def Stream(
        self, request_iterator: AsyncIterator[kv_pb2.StreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.StreamResponse]:
        """Serve tagged requests concurrently; pack whatever is done into each response."""
        wake = asyncio.Event()
        session = StreamSession(self, wake.set)
        done = False

        async def reader() -> None:
            nonlocal done
            try:
                async for req in request_iterator:
                    session.take(req)
                await session.drain()
            finally:
                done = True
                wake.set()

        reading = asyncio.ensure_future(reader())
        stats = self.stats
        stats.streams_open += 1
        try:
            while True:
                await wake.wait()
                wake.clear()
                for resp in session.take_answers():
                    yield resp
                if done and not session.has_answers:
                    break
        finally:
            stats.streams_open -= 1
            reading.cancel()
            session.close()

    async def WireEndpoint(
        self, request: kv_pb2.WireEndpointRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.WireEndpointResponse:
        return kv_pb2.WireEndpointResponse(address=self.wire_address)
