"""Time for every replica of a node: ticks from the event loop's clock, and idle groups' sleep.

Ticks come from the loop's monotonic clock.  When the loop was held up (a long GC, SIGSTOP),
the missed ticks are delivered before anything else, and :meth:`Ticker.catch_up` lets a read
path do the same first: a paused leader must see its lease expire rather than serve a stale
read.

Idle (quiesced) groups are not ticked: they count the ticks they skip and get them back as
a clock jump when woken.  An idle leader goes quiet after an election timeout of idleness;
an idle follower wakes when its leader's store falls silent, which the stores' own
heartbeats (one per tick per peer store, whatever the number of groups) tell.

See docs/decisions.md D7 (leases and missed ticks) and D8 (quiescence).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from node.outbox import Outbox
from node.replica import Replica

log = logging.getLogger("tessera.ticker")


class Ticker:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        replicas: Mapping[int, Replica],
        outbox: Outbox,
        *,
        store_id: int,
        tick_s: float,
        election_tick: int,
        kick: Callable[[], None],
        failed: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self.replicas = replicas
        self.outbox = outbox
        self.store_id = store_id
        self.tick_s = tick_s
        self.election_tick = election_tick
        self._kick = kick
        self._failed = failed
        self._last_tick = loop.time()
        # When each peer store was last heard from (any transport batch).
        self.last_seen: dict[int, float] = {}

    def restart_clock(self) -> None:
        self._last_tick = self.loop.time()

    def heard_from(self, store: int) -> None:
        self.last_seen[store] = self.loop.time()

    def catch_up(self) -> None:
        """Deliver the ticks elapsed since the last delivery (call before trusting a lease)."""
        now = self.loop.time()
        n = int((now - self._last_tick) / self.tick_s)
        if n <= 0:
            return
        self._last_tick += n * self.tick_s
        # More than two election timeouts of ticks changes nothing further.
        n = min(n, 2 * self.election_tick + 1)
        self._send_store_heartbeats()
        silent_after = self.election_tick * self.tick_s
        for rep in self.replicas.values():
            raw = rep.raw
            if raw.quiesced:
                rep.quiet_ticks += n
                if not rep.is_leader():
                    leader = rep.leader_store()
                    if leader == 0 or now - self.last_seen.get(leader, 0.0) > silent_after:
                        self.wake(rep)  # the leader's store went silent: time it out normally
                continue
            for _ in range(n):
                raw.tick()
            if rep.want_add or rep.want_remove or (rep.is_leader() and raw.conf_state.learners):
                done = rep.drive_membership()
                if done is not None:
                    log.info("partition %d: %s", rep.pid, done)
            if rep.is_leader() and not rep.requests.queued and raw.can_quiesce():
                rep.idle_ticks += n
                if rep.idle_ticks >= self.election_tick and raw.quiesce():
                    rep.quiet_ticks = 0
            else:
                rep.idle_ticks = 0
        self._kick()

    def wake(self, rep: Replica) -> None:
        """Bring an idle replica back to ticking before it serves anything."""
        if rep.raw.quiesced:
            rep.raw.wake(rep.quiet_ticks)
        rep.quiet_ticks = 0
        rep.idle_ticks = 0
        self._kick()

    def leader_contact(self, rep: Replica) -> float:
        """When this follower last knew its leader alive and its commit index current.

        An idle (quiesced) group sends no heartbeats: its leader's store heartbeats vouch for
        it instead, and nothing was committed meanwhile.
        """
        if rep.raw.quiesced:
            return max(rep.leader_contact, self.last_seen.get(rep.leader_store(), 0.0))
        return rep.leader_contact

    async def run(self) -> None:
        while True:
            delay = self._last_tick + self.tick_s - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.catch_up()

    def _send_store_heartbeats(self) -> None:
        if self._failed():
            # A failed node leads nothing any more: going silent is what makes the
            # followers of its idle (quiesced) groups wake up and elect a new leader.
            return
        peers = {r.store_id for rep in self.replicas.values() for r in rep.descriptor.replicas}
        peers.discard(self.store_id)
        self.outbox.send_store_heartbeats(sorted(peers))
