"""The bench's :class:`~tools.bench.driver.Driver` for etcd: its v3 gRPC API over ``grpc.aio``.

One channel per endpoint; every operation goes to the current leader, as the issue's reference
measurement did ("a Python grpc.aio client sending to its leader"), so no request pays a
follower's forwarding hop. The leader is found by asking every endpoint for its Status (the
member whose own id, in the reply header, is the leader it names; failing that, the leader a
majority of the others name) and found again after an error that can mean it moved.

Semantics, in Tessera's words (protos/tesserapb/etcd_rpc.proto has the messages):

* ``get(consistency)``: ``linearizable`` is a linearizable Range (``serializable=False``: the
  leader confirms it still leads before answering); ``lease`` and ``stale`` are serializable
  Ranges (served from the leader's own state, no round to the followers).
* a key's version is its ``mod_revision``; ``cas(key, v, value)`` is a Txn comparing
  ``mod_revision == v`` (``v == 0``: ``create_revision == 0``, i.e. absent) with one Put on
  success.
* ``scan(start, limit)``: Range ``[start, "\\0")`` (every key from ``start`` on) with ``limit``.

Errors become :class:`~tools.bench.driver.DriverError` kinds: ``deadline`` (DEADLINE_EXCEEDED or
the call's time ran out), ``not_leader`` (etcd's "leader changed" / "no leader" / "not leader"),
``unavailable`` (the endpoint is down or unreachable), ``overloaded`` (RESOURCE_EXHAUSTED,
etcd's "too many requests"), else the gRPC code's name in lower case. ``put``, ``get`` and
``scan`` are retried on the new leader within their timeout after ``not_leader`` or
``unavailable`` (a put of the same value twice is harmless to the bench); ``cas`` is never
retried, since a first attempt that did apply would then be reported as a failed compare.
After those errors and after a deadline the leader is looked for again before the next call,
and so it is after a reply from a newer Raft term than the one the leader was found in (a
leader that lost its place forwards requests rather than refuse them, which would otherwise
leave the driver sending through a follower).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import grpc
import grpc.aio

from tesserapb import etcd_rpc_pb2 as pb
from tesserapb import etcd_rpc_pb2_grpc as pb_grpc
from tools.bench.driver import DriverError, Read

_STATUS_TIMEOUT = 1.0  # per endpoint, while looking for the leader
_RETRY_PAUSE = 0.02  # between attempts while the leader is being elected
_NOT_LEADER = ("leader changed", "no leader", "not leader", "not capable")
_RETRIED = ("not_leader", "unavailable")
_ALL_KEYS_FROM = b"\x00"  # etcd's range_end for "every key >= key"


def endpoints_of(target: str) -> list[str]:
    """``etcd://h:p,h:p`` (or a bare ``h:p,h:p``, or ``http://`` URLs) -> ``["h:p", "h:p"]``."""
    if target.startswith("etcd://"):
        target = target[len("etcd://"):]
    out = []
    for part in target.split(","):
        endpoint = part.strip().removeprefix("http://").removeprefix("https://").rstrip("/")
        if endpoint:
            out.append(endpoint)
    if not out:
        raise ValueError(f"no etcd endpoint in {target!r}")
    return out


def error_kind(exc: grpc.RpcError) -> str:
    """The DriverError kind of a failed etcd call."""
    code, details = _code_and_details(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline"
    if any(s in details for s in _NOT_LEADER):
        return "not_leader"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unavailable"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return "overloaded"
    return code.name.lower() if code is not None else "error"


def _code_and_details(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    if isinstance(exc, grpc.aio.AioRpcError | grpc.Call):
        return exc.code(), exc.details() or ""
    return None, str(exc)


class EtcdDriver:
    """A :class:`~tools.bench.driver.Driver` for an etcd cluster; make it inside the event loop
    that uses it (grpc.aio channels belong to one loop)."""

    def __init__(self, endpoints: list[str]) -> None:
        if not endpoints:
            raise ValueError("EtcdDriver needs at least one endpoint")
        self.endpoints = list(endpoints)
        self._channels = [grpc.aio.insecure_channel(e) for e in self.endpoints]
        self._kv = [pb_grpc.KVStub(ch) for ch in self._channels]
        self._maint = [pb_grpc.MaintenanceStub(ch) for ch in self._channels]
        self._leader: int | None = None  # index into endpoints; None: find it before the next call
        self._last_leader: int | None = None
        self._term = 0  # the Raft term in which _leader was found to lead
        self._finding: asyncio.Task[int] | None = None
        self.leader_changes = 0  # times the driver moved to another endpoint (for reports and tests)

    @classmethod
    def from_target(cls, target: str) -> EtcdDriver:
        return cls(endpoints_of(target))

    @property
    def leader_endpoint(self) -> str | None:
        return None if self._leader is None else self.endpoints[self._leader]

    # -- finding the leader -----------------------------------------------------------

    async def leader(self, timeout: float) -> int:
        """The leader's endpoint index, asking every endpoint when it is not known. Concurrent
        callers share one search."""
        if self._leader is not None:
            return self._leader
        if self._finding is None or self._finding.done():
            self._finding = asyncio.ensure_future(self._find_leader())
        try:
            return await asyncio.wait_for(asyncio.shield(self._finding), timeout)
        except TimeoutError:
            raise DriverError("not_leader", f"no etcd leader found within {timeout:g} s") from None

    async def _find_leader(self) -> int:
        while True:
            found = await self._ask_for_leader()
            if found is not None:
                index, term = found
                if self._last_leader is not None and index != self._last_leader:
                    self.leader_changes += 1
                self._leader = self._last_leader = index
                self._term = max(self._term, term)
                return index
            await asyncio.sleep(_RETRY_PAUSE)

    async def _ask_for_leader(self) -> tuple[int, int] | None:
        """(the leader's endpoint index, its term), or None while no leader is known."""
        async def status(i: int) -> pb.StatusResponse | None:
            try:
                reply: pb.StatusResponse = await self._maint[i].Status(pb.StatusRequest(), timeout=_STATUS_TIMEOUT)
                return reply
            except grpc.RpcError:
                return None

        replies = await asyncio.gather(*(status(i) for i in range(len(self.endpoints))))
        ids = {r.header.member_id: i for i, r in enumerate(replies) if r is not None}
        for i, r in enumerate(replies):
            if r is not None and r.leader and r.leader == r.header.member_id:
                return i, r.raftTerm
        # Nobody answered as leader (it may be slow to answer Status): the leader most name, if
        # it is an endpoint we reach.
        named = Counter(r.leader for r in replies if r is not None and r.leader)
        if named:
            leader_id, votes = named.most_common(1)[0]
            if votes * 2 > len(self.endpoints) and leader_id in ids:
                return ids[leader_id], max(r.raftTerm for r in replies if r is not None and r.leader == leader_id)
        return None

    def _forget_leader(self, index: int) -> None:
        if self._leader == index:
            self._leader = None

    # -- calling it -------------------------------------------------------------------

    async def _call(self, method: str, request: object, timeout: float, retry: bool) -> object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DriverError("deadline", f"{method}: no answer within {timeout:g} s")
            i = await self.leader(remaining)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DriverError("deadline", f"{method}: no answer within {timeout:g} s")
            try:
                reply = await getattr(self._kv[i], method)(request, timeout=remaining)
                if reply.header.raft_term > self._term:
                    # A newer term than the one the leader was found in: leadership may have
                    # moved without any error (a deposed leader forwards what it gets), so
                    # look again before the next call rather than go on through a follower.
                    self._term = reply.header.raft_term
                    self._forget_leader(i)
                return reply
            except grpc.RpcError as exc:
                kind = error_kind(exc)
                if kind in _RETRIED or kind == "deadline":
                    # Look again before the next call: a leader that stopped answering (cut
                    # off rather than killed) times out instead of refusing. One search is
                    # shared by every caller.
                    self._forget_leader(i)
                details = _code_and_details(exc)[1]
                if not retry or kind not in _RETRIED:
                    raise DriverError(kind, f"etcd {method} at {self.endpoints[i]}: {details}") from None
            await asyncio.sleep(_RETRY_PAUSE)

    async def put(self, key: bytes, value: bytes, timeout: float) -> None:
        await self._call("Put", pb.PutRequest(key=key, value=value), timeout, retry=True)

    async def get(self, key: bytes, consistency: str, timeout: float) -> Read | None:
        request = pb.RangeRequest(key=key, serializable=consistency != "linearizable")
        reply = await self._call("Range", request, timeout, retry=True)
        assert isinstance(reply, pb.RangeResponse)
        if not reply.kvs:
            return None
        kv = reply.kvs[0]
        return Read(kv.value, kv.mod_revision)

    async def scan(self, start: bytes, limit: int, consistency: str, timeout: float) -> int:
        request = pb.RangeRequest(key=start or _ALL_KEYS_FROM, range_end=_ALL_KEYS_FROM, limit=limit,
                                  serializable=consistency != "linearizable")
        reply = await self._call("Range", request, timeout, retry=True)
        assert isinstance(reply, pb.RangeResponse)
        return len(reply.kvs)

    async def cas(self, key: bytes, expected_version: int, value: bytes, timeout: float) -> bool:
        if expected_version == 0:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.CREATE, key=key, create_revision=0)
        else:
            compare = pb.Compare(result=pb.Compare.EQUAL, target=pb.Compare.MOD, key=key,
                                 mod_revision=expected_version)
        request = pb.TxnRequest(compare=[compare], success=[pb.RequestOp(request_put=pb.PutRequest(key=key,
                                                                                                   value=value))])
        reply = await self._call("Txn", request, timeout, retry=False)
        assert isinstance(reply, pb.TxnResponse)
        return reply.succeeded

    async def close(self) -> None:
        if self._finding is not None and not self._finding.done():
            self._finding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._finding
        for ch in self._channels:
            await ch.close()
