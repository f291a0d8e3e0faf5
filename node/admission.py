"""Admission: what a node takes on, bounded, so that overload is refused instead of queued.

A node offered more than it can serve must not queue without bound: the queue only grows, its
memory with it, every request in it waits longer than its client will, and the node serves
nothing useful until the backlog drains. So each place a request waits has a bound, and a
request past it is answered at once with ``ServerBusy`` (``RESOURCE_EXHAUSTED``) carrying a
retry-after hint (``ServerBusy.backoff_ms``, in the error details); the client backs off at
least that long (bounded: router/client/retry.py) and retries within its deadline:

* **proposals per partition**: queued for the next round plus proposed and not yet applied
  (``PendingRequests.in_flight``); the core's own ``max_uncommitted_entries`` bounds only what
  is appended, not what waits for the round that appends it;
* **proposals per node**: the same, summed over every partition (one counter, released by each
  proposal's future);
* **unanswered request bytes per ``KV.Stream``**: what one client connection may have in
  flight, queued answers included (they count until they are handed to gRPC);
* **concurrent snapshots**: images streamed to peers at once, and images received at once
  (each holds an LMDB read transaction, or a spool file, and a connection).

Each check on the hot path is an integer compare; the bounds are in :class:`AdmissionLimits`
(``tessera node --max-inflight-proposals`` etc.). See docs/limits.md.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from common.wire import errors as werr
from common.wire.errors import WireError
from node.settings import AdmissionLimits
from tesserapb import kv_pb2

log = logging.getLogger("tessera.admission")


def busy(reason: str, retry_after_ms: int) -> WireError:
    """The refusal: ServerBusy (RESOURCE_EXHAUSTED) whose ``backoff_ms`` is the retry-after hint."""
    return WireError.of(werr.server_busy(reason, retry_after_ms),
                        f"server busy: {reason}; retry after {retry_after_ms} ms")


class Admission:
    """The node-wide counters and the checks against them (one per node, on its event loop)."""

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits = limits or AdmissionLimits()
        self.proposals = 0  # proposals admitted and not yet settled, on every partition
        self.refused = 0  # requests refused for any bound, for metrics
        self.snapshots_out = 0  # images being streamed to peers
        self.snapshots_in = 0  # images being received from peers

    def admit_proposal(self, in_partition: int) -> None:
        """Raise ServerBusy if one more proposal would break a bound (``in_partition``: the
        partition's proposals queued and in flight)."""
        lim = self.limits
        if self.proposals >= lim.node_proposals:
            self.refused += 1
            raise busy(f"{self.proposals} proposals in flight on this node (limit {lim.node_proposals})",
                       lim.retry_after_ms)
        if in_partition >= lim.partition_proposals:
            self.refused += 1
            raise busy(f"{in_partition} proposals in flight on this partition (limit {lim.partition_proposals})",
                       lim.retry_after_ms)

    def admitted(self, fut: asyncio.Future[Any]) -> None:
        """Count ``fut``'s proposal until it settles."""
        self.proposals += 1
        fut.add_done_callback(self._settled)

    def admitted_call(self) -> None:
        """Count a proposal settled by a call (node.requests.Proposal): its settling calls
        :meth:`proposal_settled`."""
        self.proposals += 1

    def proposal_settled(self) -> None:
        self.proposals -= 1

    def _settled(self, _: asyncio.Future[Any]) -> None:
        self.proposal_settled()

    def stream(self, backlog: Callable[[], int] | None = None) -> StreamBudget:
        return StreamBudget(self, backlog)

    def admit_snapshot_out(self) -> bool:
        """Start streaming an image to a peer; False (report it failed, the core tries again
        later) when too many are under way."""
        if self.snapshots_out >= self.limits.snapshots_out:
            self.refused += 1
            return False
        self.snapshots_out += 1
        return True

    def snapshot_out_done(self) -> None:
        self.snapshots_out -= 1

    def admit_snapshot_in(self) -> bool:
        """A peer starts sending an image; False (refuse it) when too many arrive at once."""
        if self.snapshots_in >= self.limits.snapshots_in:
            self.refused += 1
            return False
        self.snapshots_in += 1
        return True

    def snapshot_in_done(self) -> None:
        self.snapshots_in -= 1


ITEM_COST_BYTES = 1024  # see StreamBudget.share


class StreamBudget:
    """What one client stream (``KV.Stream`` or a KV wire connection) makes the node hold:
    unanswered request bytes, answers not yet handed to the carrier, and what the carrier
    itself still buffers (``backlog``: a socket's unsent bytes). Each request item is charged
    its share of the message it came in (one ``ByteSize`` per message), released when its
    answer is handed on; each answer its own bytes, from when it is made until it is handed
    on. An item that would take the stream past the bound is answered at once with
    ServerBusy: a small message of many gets of a large value cannot make the node hold more
    than the bound in answers."""

    __slots__ = ("_adm", "_charges", "answering", "backlog", "limit", "unanswered")

    def __init__(self, adm: Admission, backlog: Callable[[], int] | None = None) -> None:
        self._adm = adm
        self.limit = adm.limits.stream_bytes
        self.unanswered = 0
        self.answering = 0
        self.backlog = backlog or _nothing
        self._charges: dict[int, int] = {}

    def share(self, req: kv_pb2.StreamRequest) -> int:
        """What each item of ``req`` is charged: its share of the message's bytes, and at least
        ITEM_COST_BYTES, what an unanswered item holds beyond its bytes (a task or a pending
        write, its answer): else a message of many tiny items (empty gets that must wait)
        would hold a task each, unbounded by the bytes they came in."""
        n = len(req.requests)
        return max(req.ByteSize() // n + 1, ITEM_COST_BYTES) if n else 0

    def admit(self, item: kv_pb2.StreamRequestItem, share: int) -> kv_pb2.StreamResponseItem | None:
        """Charge ``item``; or, past the bound, the answer that refuses it (charge nothing)."""
        held = self.unanswered + self.answering + self.backlog()
        if held + share > self.limit:
            self._adm.refused += 1
            out = kv_pb2.StreamResponseItem(request_id=item.request_id)
            busy(f"{held} bytes of requests and answers held for this stream (limit {self.limit})",
                 self._adm.limits.retry_after_ms).fill(out)
            return out
        self.unanswered += share
        rid = item.request_id
        self._charges[rid] = self._charges.get(rid, 0) + share
        return None

    def answered(self, items: list[kv_pb2.StreamResponseItem], nbytes: int = 0) -> None:
        """``items`` (``nbytes`` of answers) were handed on: release their charges."""
        charges = self._charges
        for it in items:
            c = charges.pop(it.request_id, 0)
            self.unanswered -= c
        self.answering -= nbytes


def _nothing() -> int:
    return 0


__all__ = ["Admission", "AdmissionLimits", "StreamBudget", "busy"]
