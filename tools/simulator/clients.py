"""Simulated clients and the Jepsen-shaped history they record.

Each client has one outstanding operation at a time on a few hot keys and
sends it to the replica it believes leads (following not-leader hints; any
replica at random when there is no hint).  Gets are served by a leader lease
read, a ReadIndex read, through the log, or by a random follower doing a
ReadIndex through its leader.  Requests and responses travel
through the simulated network (delayed, never dropped).  Outcomes:

* ``ok``   the proposing replica applied the client's own entry (writes, log
  reads) or served the read once its applied index reached the read index;
* ``fail`` not-leader / proposal dropped at propose time, another entry took
  the proposal's index, or a cas whose compare did not match — the write
  definitely did not take effect; reads that time out are also ``fail`` (a
  read has no effect);
* ``info`` a write that timed out (the replica crashed, the reply was lost):
  the outcome is unknown and the client continues as a new process, as in
  Jepsen.

A read the client gave up on may still be answered later (a paused or cut-off
replica that believes it leads).  Such an answer is not dropped: it joins the
history as a read of its own process, invoked when the client invoked it and
completed when the answer came, so every value any replica served is checked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tools.checker.history import Op

if TYPE_CHECKING:  # pragma: no cover
    from .cluster import Simulation

KEYS = ("x", "y", "z")
CLIENT_TIMEOUT = 500  # time units (5 election timeouts)


@dataclass(slots=True)
class Request:
    client: int
    op_id: int
    f: str  # "get" | "put" | "cas"
    key: str
    value: object  # as the history records it: put: str; cas: [expected, new]; get: None
    mode: str  # get: "lease" | "read-index" | "log" | "follower"; writes: "log"

    @property
    def cas(self) -> tuple[object, object]:
        """A cas's ``(expected, new)``."""
        assert isinstance(self.value, list), f"not a cas: {self}"  # Client.invoke builds it
        expected, new = self.value
        return expected, new

    def command(self) -> dict[str, object]:
        if self.f == "put":
            return {"id": self.op_id, "f": "put", "k": self.key, "v": self.value}
        if self.f == "cas":
            expected, new = self.cas
            return {"id": self.op_id, "f": "cas", "k": self.key, "e": expected, "n": new}
        return {"id": self.op_id, "f": "get", "k": self.key}


class Client:
    def __init__(self, sim: Simulation, idx: int, n_clients: int, rng: random.Random) -> None:
        self.sim = sim
        self.idx = idx
        self.n_clients = n_clients
        self.rng = rng
        self.process = idx
        self.target = 0
        self.cur: Request | None = None
        self.invoked_at = 0
        self.counter = 0
        self.seen: dict[str, object] = {}  # key -> the value this client last saw there
        self.ok_after_heal = 0
        self.stopped = False
        self.abandoned: dict[int, tuple[str, int]] = {}  # op id -> (key, invoke time) of gets timed out

    @property
    def idle(self) -> bool:
        return self.cur is None

    def pick_target(self, hint: int = 0) -> None:
        members = self.sim.client_targets()
        if hint and hint in members:
            self.target = hint
        else:
            self.target = members[self.rng.randrange(len(members))]

    def schedule_next(self) -> None:
        if not self.stopped:
            # During a lull (the nemesis's ``lull``) nobody sends anything: groups go idle.
            at = max(self.sim.now + self.rng.randint(0, 30), self.sim.lull_until)
            self.sim.queue.push(at, "cnext", self.idx)

    def invoke(self) -> None:
        if self.stopped or self.cur is not None:
            return
        sim, rng = self.sim, self.rng
        if not self.target or rng.random() < sim.profile.wander:
            self.pick_target()  # a client (re)connecting somewhere: not everyone agrees on the leader
        key = KEYS[rng.randrange(sim.profile.keys)]
        roll = rng.random()
        self.counter += 1
        fresh = f"{self.idx}-{self.counter}"
        value: object
        if roll < sim.profile.read_ratio:
            f, value = "get", None
            m = rng.random()
            mode = "lease" if m < 0.35 else "read-index" if m < 0.7 else "log" if m < 0.85 else "follower"
        elif roll < sim.profile.read_ratio + (1 - sim.profile.read_ratio) * 0.6:
            f, value, mode = "put", fresh, "log"
        else:
            expected = self.seen.get(key) if rng.random() < 0.7 else None
            f, value, mode = "cas", [expected, fresh], "log"
        req = Request(self.idx, sim.next_op_id(), f, key, value, mode)
        self.cur = req
        self.invoked_at = sim.now
        sim.history.append(Op(self.process, "invoke", f, key, value, sim.now))
        if mode == "follower":
            members = sim.client_targets()
            sim.client_request(members[rng.randrange(len(members))], req)
        else:
            sim.client_request(self.target, req)
        sim.queue.push(sim.now + CLIENT_TIMEOUT, "ctimeout", self.idx, req.op_id)

    def on_response(self, op_id: int, outcome: str, value: object, hint: int) -> None:
        req = self.cur
        sim = self.sim
        if req is None or req.op_id != op_id:
            late = self.abandoned.pop(op_id, None)
            if late is not None and outcome == "ok":
                # A read answered after the client gave up on it: still part of the history.
                key, invoked_at = late
                process = sim.ghost_process()
                sim.history.append(Op(process, "invoke", "get", key, None, invoked_at))
                sim.history.append(Op(process, "ok", "get", key, value, sim.now))
                sim.stats["late_reads"] += 1
            return
        if outcome == "ok":
            sim.history.append(Op(self.process, "ok", req.f, req.key, value, sim.now))
            if req.f == "get":
                self.seen[req.key] = value
            elif req.f == "put":
                self.seen[req.key] = req.value
            else:
                self.seen[req.key] = req.cas[1]
            if sim.healed:
                self.ok_after_heal += 1
        else:
            sim.history.append(Op(self.process, "fail", req.f, req.key, req.value, sim.now))
        if req.mode == "follower":
            pass  # a follower read says nothing about who leads
        elif hint:
            self.pick_target(hint)
        elif outcome != "ok":
            self.pick_target()
        self.cur = None
        sim.stats["ops"] += 1
        self.schedule_next()

    def on_timeout(self, op_id: int) -> None:
        req = self.cur
        if req is None or req.op_id != op_id:
            return
        sim = self.sim
        if req.f == "get":
            sim.history.append(Op(self.process, "fail", req.f, req.key, None, sim.now))
            self.abandoned[req.op_id] = (req.key, self.invoked_at)
        else:
            sim.history.append(Op(self.process, "info", req.f, req.key, req.value, sim.now))
            self.process += self.n_clients  # Jepsen: an indeterminate op retires the process
        sim.stats["timeouts"] += 1
        self.cur = None
        self.pick_target()
        self.schedule_next()
