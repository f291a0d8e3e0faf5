"""Time for every replica of a node: ticks from the event loop's clock, and idle groups' sleep.

Ticks come from the loop's monotonic clock.  When the loop was held up (a long GC, SIGSTOP),
the missed ticks are delivered before anything else, and :meth:`Ticker.catch_up` lets a read
path do the same first: a paused leader must see its lease expire rather than serve a stale
read.

Idle (quiesced) groups are not ticked, and cost nothing per tick: the ticker walks only the
replicas it knows to be awake.  A replica seen quiesced leaves that set for a quiet one, filed
under its leader's store, noting the tick count it went quiet at; it gets the ticks it skipped
back as a clock jump when woken (:meth:`Ticker.wake`).  An idle leader goes quiet after an
election timeout of idleness; an idle follower wakes when its leader's store falls silent,
which the stores' own heartbeats (one per tick per peer store, whatever the number of
groups) tell: each tick looks at the silent stores only, and wakes the followers filed under
them.  Whoever steps a message into a replica tells the ticker (:meth:`Ticker.stepped`),
since a message may wake a quiet follower or move it to another leader.

The ticker also says which replicas a round must look at (:meth:`Ticker.take_candidates`):
the awake ones and the ones touched since the last round (a message stepped, just gone
quiet).  A quiet replica nobody touched has no Ready.  Once a second a sweep checks both
claims over every replica and repairs (and counts, in ``missed``) any that failed.

See docs/decisions.md D7 (leases and missed ticks), D8 (quiescence) and D26 (idle cost).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from node.outbox import Outbox
from node.replica import Replica

log = logging.getLogger("tessera.ticker")

# Seconds between sweeps over every replica (the per-tick work skips the quiet ones).
SWEEP_S = 1.0


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
        # Ticks delivered so far (after the cap on a long pause): a quiet replica's skipped
        # ticks are the difference between now and when it went quiet.
        self.ticks = 0
        # pid -> replica, for the replicas that tick.
        self._awake: dict[int, Replica] = {}
        # pid -> (replica, self.ticks when it went quiet, the leader store it is filed under).
        self._quiet: dict[int, tuple[Replica, int, int]] = {}
        # leader store -> {pid: replica} of the quiet followers of that store's leaders.
        self._followers_of: dict[int, dict[int, Replica]] = {}
        # Replicas a round must look at besides the awake ones.
        self._touched: dict[int, Replica] = {}
        self._generation = -1
        self._peers: list[int] = []
        self._peers_due = True
        self._next_sweep = 0
        # Repairs the sweep had to make: a replica filed quiet that was awake, or one with
        # work no round was told of.  Always 0 unless something bypassed stepped/wake/touch.
        self.missed = 0

    def restart_clock(self) -> None:
        self._last_tick = self.loop.time()

    def heard_from(self, store: int) -> None:
        self.last_seen[store] = self.loop.time()

    def descriptors_changed(self) -> None:
        """A replica's descriptor changed: the peer stores to heartbeat may have."""
        self._peers_due = True

    # -- which replicas need what ---------------------------------------------------

    @property
    def awake(self) -> Mapping[int, Replica]:
        self._resync()
        return self._awake

    @property
    def quiet(self) -> Mapping[int, tuple[Replica, int, int]]:
        return self._quiet

    def touch(self, rep: Replica) -> None:
        """``rep`` may have work for the next round."""
        self._touched[rep.pid] = rep

    def take_candidates(self) -> list[Replica]:
        """The replicas the next round must look at: the awake ones and the touched ones."""
        self._resync()
        out = dict(self._awake)
        if self._touched:
            out.update(self._touched)
            self._touched = {}
        return [rep for pid, rep in out.items() if self.replicas.get(pid) is rep]

    def stepped(self, rep: Replica, was_quiet: bool) -> None:
        """A message was stepped into ``rep`` (``was_quiet``: its core was quiesced before)."""
        self._touched[rep.pid] = rep
        if not was_quiet:
            return  # awake (or gone quiet just now): the next tick files it if need be
        if not rep.raw.quiesced:
            # Woken by its leader's activity (or a new term): it ticks again. No clock jump,
            # as before: a follower's timers restart on hearing from its leader.
            self._unfile(rep)
            rep.quiet_ticks = rep.idle_ticks = 0
            if self.replicas.get(rep.pid) is rep:
                self._awake[rep.pid] = rep
            return
        entry = self._quiet.get(rep.pid)
        if entry is not None and entry[0] is rep and entry[2] != self._leader_of(rep):
            # Still quiet, under another leader (a new leader's quiesce heartbeat): refile.
            self._unfile(rep)
            self._file_quiet(rep, entry[1])

    def _leader_of(self, rep: Replica) -> int:
        return self.store_id if rep.is_leader() else rep.leader_store()

    def _file_quiet(self, rep: Replica, since: int) -> None:
        leader = self._leader_of(rep)
        self._quiet[rep.pid] = (rep, since, leader)
        if leader != self.store_id:
            self._followers_of.setdefault(leader, {})[rep.pid] = rep

    def _unfile(self, rep: Replica) -> tuple[Replica, int, int] | None:
        entry = self._quiet.get(rep.pid)
        if entry is None or entry[0] is not rep:
            return None
        del self._quiet[rep.pid]
        group = self._followers_of.get(entry[2])
        if group is not None:
            group.pop(rep.pid, None)
            if not group:
                del self._followers_of[entry[2]]
        return entry

    def _resync(self) -> None:
        """Replicas were opened or deleted: file the new ones as awake, forget the gone ones."""
        gen = getattr(self.replicas, "generation", None)
        if gen is not None and gen == self._generation:
            return
        self._generation = gen if gen is not None else -1
        self._peers_due = True
        for pid, rep in list(self._awake.items()):
            if self.replicas.get(pid) is not rep:
                del self._awake[pid]
        for pid, (rep, _, _) in list(self._quiet.items()):
            if self.replicas.get(pid) is not rep:
                self._unfile(rep)
        for pid, rep in self.replicas.items():
            if pid not in self._awake and pid not in self._quiet:
                # New here: it ticks (the next tick files it quiet if it is).
                self._awake[pid] = rep
                self._touched[pid] = rep

    def _sweep(self) -> None:
        """Check, over every replica, what the per-tick work takes on trust (see module doc)."""
        self._peers_due = True
        candidates = set(self._awake) | set(self._touched)
        for pid, rep in self.replicas.items():
            entry = self._quiet.get(pid)
            if entry is not None and not rep.raw.quiesced:
                self.missed += 1
                log.warning("partition %d: awake but filed as quiet; ticking it again", pid, extra={"partition": pid})
                self._unfile(rep)
                self._awake[pid] = rep
                self._kick()
            elif pid not in candidates and rep.has_work():
                self.missed += 1
                log.warning("partition %d: has work no round was told of", pid, extra={"partition": pid})
                self._touched[pid] = rep
                self._kick()

    # -- ticks ----------------------------------------------------------------------

    def catch_up(self) -> None:
        """Deliver the ticks elapsed since the last delivery (call before trusting a lease)."""
        now = self.loop.time()
        n = int((now - self._last_tick) / self.tick_s)
        if n <= 0:
            return
        self._last_tick += n * self.tick_s
        # More than two election timeouts of ticks changes nothing further.
        n = min(n, 2 * self.election_tick + 1)
        before = self.ticks
        self.ticks += n
        self._resync()
        self._send_store_heartbeats()
        silent_after = self.election_tick * self.tick_s
        ticked = False
        for pid, rep in list(self._awake.items()):
            raw = rep.raw
            if raw.quiesced:
                del self._awake[pid]
                self._touched[pid] = rep  # its last Ready (the quiesce heartbeat's answer)
                self._file_quiet(rep, before)
                if not rep.is_leader():
                    leader = rep.leader_store()
                    if leader == 0 or now - self.last_seen.get(leader, 0.0) > silent_after:
                        self.wake(rep)
                continue
            ticked = True
            for _ in range(n):
                raw.tick()
            if rep.want_add or rep.want_remove or (rep.is_leader() and raw.conf_state.learners):
                done = rep.drive_membership()
                if done is not None:
                    log.info("partition %d: %s", rep.pid, done, extra={"partition": rep.pid})
            if rep.is_leader() and not rep.requests.queued and raw.can_quiesce():
                rep.idle_ticks += n
                if rep.idle_ticks >= self.election_tick and raw.quiesce():
                    rep.quiet_ticks = 0
                    del self._awake[pid]
                    self._touched[pid] = rep  # its quiesce heartbeats leave in the next round
                    self._file_quiet(rep, self.ticks)
            else:
                rep.idle_ticks = 0
        # Quiet followers whose leader's store went silent: time their leader out normally.
        # (After the ticks: like those found quiet above, a replica woken now is not ticked
        # until the next delivery, its wake having jumped its clock over these ticks.)
        for store in [s for s in self._followers_of if s == 0 or now - self.last_seen.get(s, 0.0) > silent_after]:
            for rep in list(self._followers_of.get(store, {}).values()):
                self.wake(rep)
        if self.ticks >= self._next_sweep and not self._failed():  # a failed node runs no rounds
            self._next_sweep = self.ticks + max(1, round(SWEEP_S / self.tick_s))
            self._sweep()
        if ticked or self._touched:
            self._kick()

    def wake(self, rep: Replica) -> None:
        """Bring an idle replica back to ticking before it serves anything."""
        entry = self._unfile(rep)
        if rep.raw.quiesced:
            skipped = self.ticks - entry[1] if entry is not None else 0
            rep.raw.wake(skipped)
        rep.quiet_ticks = 0
        rep.idle_ticks = 0
        if self.replicas.get(rep.pid) is rep:
            self._awake[rep.pid] = rep
            self._touched[rep.pid] = rep
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
        if self._peers_due:
            # Recomputed when a replica comes or goes or a descriptor changes (and at each
            # sweep, should a change have gone unreported): not per tick.
            self._peers_due = False
            peers = {r.store_id for rep in self.replicas.values() for r in rep.descriptor.replicas}
            peers.discard(self.store_id)
            self._peers = sorted(peers)
        self.outbox.send_store_heartbeats(self._peers)
