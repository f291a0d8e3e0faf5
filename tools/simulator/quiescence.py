"""Idle groups go quiet, as the node's ticker (``node/ticker.py``) makes them.

* A leader the core calls idle (``can_quiesce``: everything replicated, committed, applied,
  no read or change pending) for an election timeout of ticks calls ``quiesce()``: its
  followers get a quiesce heartbeat and go idle too.  (The node also waits for its queue of
  requests not yet proposed; here every request is proposed as it arrives.)
* A quiesced replica is not ticked; it counts the ticks it skips (``quiet_ticks``).
* A quiesced follower wakes (``wake(quiet_ticks)``: its clock jumps, its election timer
  restarts) once its leader's *store* has been silent for an election timeout, or has
  restarted since the follower went quiet.  The node learns the first from the stores' own
  heartbeats; here a store is heard while its replica is up and the link from it is not cut.
  The second the node does not do (yet): a leader whose store crashes and restarts within an
  election timeout leaves its quiet followers asleep for good, ignoring the restarted
  replica's (pre-)votes in their frozen lease, and the group never elects again (this model
  with the silence rule alone fails liveness that way, e.g. seed 28 when it was written).
  The simulator models stores whose heartbeats carry their incarnation.
* A request reaching a quiesced leader wakes it first (:func:`ensure_awake`), a read
  a follower forwards to it included (the node has no follower reads; the simulator's
  follower reads count as requests to the leader); activity from the leader wakes a
  follower's core by itself.  Requests reaching a follower wake nothing: the node answers
  them "not the leader" without touching the group.

A quiesced leader's clock stands still, so its lease is judged once it is woken (the clock
jump expires a lease taken before it went quiet), as a paused one is after its missed ticks.
The ``stability`` check does not judge a leader that was quiet within its window: its premise
is a leader whose heartbeats keep followers from campaigning, and a quiet one sends none (a
follower whose core woke while its leader sleeps campaigns, which the node's ordered streams
and store heartbeats make rare, but not a fault).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .simnode import SimNode


def quiet_tick(node: SimNode) -> None:
    """A tick for a quiesced replica: skipped, counted, and a follower checks on its leader."""
    node.quiet_ticks += 1
    raw = node.raw
    if raw.is_leader:
        return
    sim = node.sim
    lead = raw.leader
    if lead and sim.store_heard(lead, node.id):
        if sim.nodes[lead].incarnation != node.leader_incarnation:
            sim.stats["woken_by_restart"] += 1
            ensure_awake(node)
            return
        node.leader_heard = sim.now
    elif sim.now - node.leader_heard > sim.election_timeout(node):
        sim.stats["woken_by_silence"] += 1
        ensure_awake(node)


def after_tick(node: SimNode) -> None:
    """After a normal tick: a leader idle for an election timeout goes quiet."""
    raw = node.raw
    if not raw.is_leader or not raw.can_quiesce():
        node.idle_ticks = 0
        return
    node.idle_ticks += 1
    sim = node.sim
    if node.idle_ticks >= sim.election_ticks and raw.quiesce():
        node.quiet_ticks = 0
        sim.stats["quiesced"] += 1
        # The stability check's premise is a leader that heartbeats; a quiet one does not.
        sim.ledger.begin(("quiet", node.id), (node.id,), sim.now)


def ensure_awake(node: SimNode) -> None:
    """Before a request: wake a quiesced replica, handing it the ticks it skipped."""
    node.idle_ticks = 0
    if node.up and node.raw.quiesced:
        node.raw.wake(node.quiet_ticks)
        node.quiet_ticks = 0
        node.sim.ledger.end(("quiet", node.id), node.sim.now)
        node.sim.observe(node)


def went_quiet(node: SimNode) -> None:
    """A follower's core just went quiet (a quiesce heartbeat): its leader was heard now."""
    node.quiet_ticks = 0
    node.leader_heard = node.sim.now
    leader = node.sim.nodes.get(node.raw.leader)
    node.leader_incarnation = leader.incarnation if leader is not None else 0
