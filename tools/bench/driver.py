"""The narrow interface the load generator drives: one per target kind (Tessera, etcd).

The generator never imports a target's client; it calls these five coroutines, so the same
workload, the same key generator and the same latency accounting measure both stores.
A failed operation raises :class:`DriverError` with a short ``kind`` (``"unavailable"``,
``"deadline"``, ``"not_leader"``...) that the report counts errors by.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class DriverError(Exception):
    """An operation failed; ``kind`` is a short stable name the report groups errors by."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(message or kind)
        self.kind = kind


@dataclass(frozen=True)
class Read:
    """A read's answer: the value and the store's version of the key (Tessera's version, etcd's
    mod_revision), which a compare-and-set then names; ``None`` from ``get`` means absent."""

    value: bytes
    version: int


class Driver(Protocol):
    """One connection (or pool) to a target, used by many concurrent workers of one process."""

    async def put(self, key: bytes, value: bytes, timeout: float) -> None: ...

    async def get(self, key: bytes, consistency: str, timeout: float) -> Read | None:
        """``consistency`` is Tessera's word: ``linearizable``, ``lease`` or ``stale``; etcd maps
        ``linearizable`` to a linearizable Range and the others to a serializable one."""
        ...

    async def scan(self, start: bytes, limit: int, consistency: str, timeout: float) -> int:
        """Reads up to ``limit`` pairs from ``start`` on; returns how many came back."""
        ...

    async def cas(self, key: bytes, expected_version: int, value: bytes, timeout: float) -> bool:
        """Writes ``value`` if the key's version is ``expected_version`` (0: absent); True if it did."""
        ...

    async def close(self) -> None: ...


class LocalTarget(Protocol):
    """A throw-away cluster the bench started itself (``--local``): what ``--failover`` needs."""

    @property
    def target(self) -> str:
        """The ``--target`` string that reaches it (``tessera://...`` or ``etcd://...``)."""
        ...

    def leader_for(self, key: bytes) -> str:
        """The member that leads ``key`` now (a Tessera store id or an etcd member name)."""
        ...

    def leaders(self) -> dict[str, int]:
        """How many partitions each member leads (etcd: one); the failover report names them."""
        ...

    def kill(self, member: str) -> None:
        """SIGKILL the member's process."""
        ...

    def restart(self, member: str) -> None: ...

    def elections(self) -> int:
        """Leader changes seen since start (Tessera: sum over partitions of term changes; etcd: its
        ``etcd_server_leader_changes_seen_total``); the matrix reports those not caused by it."""
        ...

    def stop(self) -> None: ...
