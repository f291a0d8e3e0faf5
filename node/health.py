"""Whether a node serves, as the standard gRPC health service reports it.

A node is NOT_SERVING while any *reason* holds, SERVING when none does. The reasons the node
itself sets: ``replaying`` (from the moment its gRPC server listens until its WAL is replayed
and every replica is open) and ``failed`` (the WAL failed or a round hit an internal error:
the node has failed stop for good, docs/decisions.md D14). Anything else that should take the
node out of rotation (a full disk, say) sets a reason of its own with :meth:`NodeHealth.set`,
and clears it with ``set(name, None)``; reasons show as the metric
``tessera_node_not_serving{reason=...}`` too (node/metrics.py).

The answer is the same for the whole server (service "") and for each service the node
serves, so ``grpc_health_probe`` and grpcurl see it whichever they ask.
"""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("tessera.node.health")

REPLAYING = "replaying"
FAILED = "failed"


class NodeHealth:
    def __init__(self, servicer: health.aio.HealthServicer, services: tuple[str, ...]) -> None:
        self.servicer = servicer
        self.services = ("", *services)
        self.reasons: dict[str, str] = {}  # name -> why, for logs and the metrics
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # publications one at a time: the last one says what holds now

    @property
    def serving(self) -> bool:
        return not self.reasons

    async def publish(self) -> None:
        """Tell the health service what :attr:`serving` says now (await it where you can)."""
        async with self._lock:
            for name in self.services:
                serving = self.serving
                await self.servicer.set(
                    name,
                    health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING,
                )

    def set(self, name: str, why: str | None) -> None:
        """Hold (``why`` given) or clear (None) the reason ``name``; the health service hears of
        it at once (from the event loop, in a task of its own)."""
        before = self.serving
        if why is None:
            if self.reasons.pop(name, None) is None:
                return
        else:
            if self.reasons.get(name) == why:
                return
            self.reasons[name] = why
        if self.serving != before:
            log.log(logging.INFO if self.serving else logging.WARNING, "health: %s%s",
                    "SERVING" if self.serving else "NOT_SERVING", "" if self.serving else f" ({name}: {why})")
        task = asyncio.get_running_loop().create_task(self.publish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
