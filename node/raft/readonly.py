"""Outstanding ReadIndex requests waiting for a heartbeat quorum to confirm leadership.

Each request gets a sequence number of the leader's own, never reused for the life of the
replica, and the heartbeat round that confirms it carries that number as its context, not
the client's.  A client context may come back (a retried or duplicated request); a sequence
number cannot, so an answer to a round sent before a request was queued can never count as
confirming it (thesis §6.4: only a round sent after the read was asked proves the leader
still leads).

See docs/decisions.md D12.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

_SEQ = struct.Struct(">Q")


@dataclass(slots=True)
class ReadRequest:
    index: int
    context: bytes  # the requester's, echoed in its ReadState
    requester: int
    seq: int
    acks: set[int] = field(default_factory=set)


def round_context(seq: int) -> bytes:
    """The heartbeat context of the round that confirms read ``seq`` and every one before it."""
    return _SEQ.pack(seq)


class ReadOnly:
    """FIFO of reads; confirming one confirms every read queued before it."""

    def __init__(self) -> None:
        self._pending: dict[int, ReadRequest] = {}
        self._queue: list[int] = []
        self._next_seq = 1

    def add(self, index: int, context: bytes, requester: int) -> bytes:
        """Queue a read at ``index``; returns the heartbeat context that confirms it."""
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = ReadRequest(index, context, requester, seq)
        self._queue.append(seq)
        return round_context(seq)

    def _request(self, round_ctx: bytes) -> ReadRequest | None:
        if len(round_ctx) != _SEQ.size:
            return None
        return self._pending.get(_SEQ.unpack(round_ctx)[0])

    def ack(self, node_id: int, round_ctx: bytes) -> set[int] | None:
        """``node_id`` answered the round ``round_ctx``: the replicas that confirmed it so far."""
        req = self._request(round_ctx)
        if req is None:
            return None
        req.acks.add(node_id)
        return req.acks

    def release_through(self, round_ctx: bytes) -> list[ReadRequest]:
        """Remove and return every request up to and including the one ``round_ctx`` confirms."""
        req = self._request(round_ctx)
        if req is None:
            return []
        out: list[ReadRequest] = []
        while self._queue:
            seq = self._queue.pop(0)
            out.append(self._pending.pop(seq))
            if seq == req.seq:
                break
        return out

    def last_context(self) -> bytes:
        """The context for a heartbeat round now: it confirms every queued read."""
        return round_context(self._queue[-1]) if self._queue else b""

    def clear(self) -> None:
        self._pending.clear()
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
