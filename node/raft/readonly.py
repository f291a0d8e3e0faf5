"""Outstanding ReadIndex requests waiting for a heartbeat quorum to confirm leadership."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReadRequest:
    index: int
    context: bytes
    requester: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    """FIFO of reads; confirming one confirms every read queued before it."""

    def __init__(self) -> None:
        self._pending: dict[bytes, ReadRequest] = {}
        self._queue: list[bytes] = []

    def add(self, index: int, context: bytes, requester: int) -> None:
        if context in self._pending:
            return
        self._pending[context] = ReadRequest(index, context, requester)
        self._queue.append(context)

    def ack(self, node_id: int, context: bytes) -> set[int] | None:
        req = self._pending.get(context)
        if req is None:
            return None
        req.acks.add(node_id)
        return req.acks

    def release_through(self, context: bytes) -> list[ReadRequest]:
        """Remove and return every request up to and including ``context``."""
        if context not in self._pending:
            return []
        out: list[ReadRequest] = []
        while self._queue:
            ctx = self._queue.pop(0)
            out.append(self._pending.pop(ctx))
            if ctx == context:
                break
        return out

    def last_context(self) -> bytes:
        return self._queue[-1] if self._queue else b""

    def clear(self) -> None:
        self._pending.clear()
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)
