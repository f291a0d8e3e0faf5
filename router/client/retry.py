"""The retry policy as a pure function: what one failed attempt means.

Kept free of I/O and of the client's state so the policy can be tested exhaustively and read
in one place. ``classify`` says what to do about one failed attempt; the client applies the
decision to its routing cache and loops until the call's deadline, sleeping as its
``BackoffPolicy`` (common/backoff.py) says whenever a decision asks for a backoff.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from router.client.errors import AccessDeniedError, RpcFailure, ServerError, TesseraError, invalid_argument_from
from tesserapb import errors_pb2, meta_pb2


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after a failed attempt.

    final: raise this instead of retrying.
    backoff: sleep (by the policy, at least min_backoff_s) before the next attempt.
    leader_store_id / leader_address: the partition's leader according to the failing replica.
    clear_leader: forget the cached leader of the partition (mid-election, or unreachable).
    descriptors: newer descriptors to merge into the routing cache.
    drop_partition: forget this partition in the routing cache.
    refresh: reload routing from the router before the next attempt.
    store_failed: the target store looked unreachable; try another replica next.
    """

    final: TesseraError | None = None
    backoff: bool = False
    min_backoff_s: float = 0.0
    leader_store_id: int = 0
    leader_address: str = ""
    clear_leader: bool = False
    descriptors: tuple[meta_pb2.PartitionDescriptor, ...] = ()
    drop_partition: bool = False
    refresh: bool = False
    store_failed: bool = False


MAX_SERVER_BACKOFF_MS = 10_000
"""A busy server's retry-after hint (``ServerBusy.backoff_ms``: overload, a full disk) is honoured
up to this: the client waits at least the hint, but a hint never parks a call longer (its own
deadline still ends it sooner)."""

# Codes that mean "this attempt did not get through; another may": the server is down,
# restarting, unreachable, slow, or the multiplexed stream broke.
_CONNECTION_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED}
)


# A multiplexed stream that dies with the node (SIGKILL) may end with INTERNAL ("Internal error
# from Core") or UNKNOWN rather than UNAVAILABLE. Answers to individual requests travel inside
# the stream, so a stream-level status is always about the connection: retry (writes keep their
# request id, so one that did get through is not applied twice).
_STREAM_BREAK_CODES = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


_ACCESS_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


def classify(failure: RpcFailure) -> Decision:
    error = failure.error
    if error is not None:
        decision = _classify_error(error, failure)
        if decision is not None:
            return decision
    if failure.code == grpc.StatusCode.INVALID_ARGUMENT:
        return Decision(final=invalid_argument_from(failure))
    if failure.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return Decision(backoff=True)
    if failure.code in _ACCESS_CODES:
        return Decision(final=AccessDeniedError(failure.describe(), failure.code))
    if failure.code in _CONNECTION_CODES or (failure.source == "stream" and failure.code in _STREAM_BREAK_CODES):
        if failure.source == "router":
            return Decision(backoff=True, refresh=True)
        return Decision(backoff=True, store_failed=True, clear_leader=True)
    return Decision(final=ServerError(failure.describe(), failure.code))


def _classify_error(error: errors_pb2.Error, failure: RpcFailure) -> Decision | None:
    """What a structured error says to do; None for a kind the status code decides."""
    kind = error.WhichOneof("kind")
    if kind == "not_leader":
        nl = error.not_leader
        if nl.leader_store_id:
            return Decision(leader_store_id=nl.leader_store_id, leader_address=nl.leader_address)
        # Mid-election: nobody knows yet. Wait a little; the router may learn it first.
        return Decision(backoff=True, clear_leader=True, refresh=True)
    if kind == "epoch_not_match":
        enm = error.epoch_not_match
        descs = ((enm.current,) if enm.HasField("current") else ()) + tuple(enm.related)
        return Decision(descriptors=descs, refresh=not descs)
    if kind == "key_not_in_partition":
        knp = error.key_not_in_partition
        if knp.HasField("partition"):
            return Decision(descriptors=(knp.partition,))
        return Decision(refresh=True, backoff=True)
    if kind == "partition_not_found":
        return Decision(drop_partition=True, refresh=True, backoff=True)
    if kind == "server_busy":
        hint_ms = min(error.server_busy.backoff_ms, MAX_SERVER_BACKOFF_MS)
        return Decision(backoff=True, min_backoff_s=hint_ms / 1000.0)
    if kind == "invalid_argument":
        return Decision(final=invalid_argument_from(failure))
    return None
