"""The fault schedule: a pure function of the seed, built up front.

Why up front: a real cluster's timing is not deterministic, so a failing run cannot be replayed
bit for bit the way a simulator seed can. What *can* be replayed is the plan: which faults, in
which order, against which targets, at which offsets. :func:`build` draws the whole plan from
``random.Random(seed)`` before anything starts, so the same seed (with the same duration, fault
list, cluster shape) always gives the same schedule; the runner prints it on failure.

Targets that only exist at run time are symbolic: ``leader:K`` is "the store leading partition
K when the step runs", ``node:N`` a fixed store. Stores and partitions are numbered from 1, as
the cluster numbers them (a new cluster's partitions are 1 to N in key order), so the schedule,
the run's log and its report name the same partition by the same number. The executor
(:mod:`tools.nemesis.faults`) resolves them and logs what it resolved to; the heal step of an
episode acts on whatever its inject step resolved. A ``member`` episode names the partition
(K) and picks among stores by position (which voter stays with the leader, which old replica
goes), since which stores host a partition is only known once a previous move has happened.

Shape: one *primary lane* of non-overlapping fault episodes (inject, hold, heal, then a gap so
recovery can be measured before the next), drawn in shuffled cycles so that every requested
kind (and every partition shape the cluster size allows) appears once before any appears
twice; plus, when ``transfer`` is requested, a *transfer lane* of leadership transfers at
random moments, overlapping whatever the primary lane is doing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from router.placement.config import PlacementConfig

# The fault kinds, by the names `tessera nemesis --faults` takes (tools/cli.py reads them here).
KINDS = ("kill", "pause", "partition", "transfer", "fsync", "slowdisk", "latency", "router", "member", "split")
PRIMARY = tuple(k for k in KINDS if k != "transfer")
PARTITION_SHAPES = ("majority", "leader", "asymmetric", "bridge", "halves")
# Shapes that need more than 3 nodes: ``halves`` (two stores vs the other two).
SHAPE_MIN_NODES = {"halves": 4}
# Replicas per partition: the router's default (the nemesis starts its router with no
# --replicas); ``member`` needs one more store than that.
REPLICAS = PlacementConfig().replicas
MEMBER_MIN_NODES = REPLICAS + 1
# The placement group's size when ``router`` is requested (one router otherwise): killing or
# pausing any one of three must lose nothing.
ROUTERS = 3


def default_routers(faults: list[str] | tuple[str, ...]) -> int:
    return ROUTERS if "router" in faults else 1


def partition_shapes(nodes: int) -> tuple[str, ...]:
    """The partition shapes a cluster of ``nodes`` stores can have."""
    return tuple(s for s in PARTITION_SHAPES if nodes >= SHAPE_MIN_NODES.get(s, 3))


def default_nodes(faults: list[str] | tuple[str, ...]) -> int:
    """3 nodes; 4 when ``member`` is requested (every partition then has a spare store)."""
    return MEMBER_MIN_NODES if "member" in faults else 3


def check_nodes(nodes: int, faults: list[str] | tuple[str, ...]) -> str | None:
    """Why ``nodes`` cannot run ``faults`` (a message naming --nodes), or None."""
    if nodes < 3:
        return f"the nemesis needs at least 3 nodes (--nodes {nodes})"
    if "member" in faults and nodes < MEMBER_MIN_NODES:
        return (f"the member fault moves a replica to a store that does not host the partition, so it "
                f"needs at least {MEMBER_MIN_NODES} nodes ({REPLICAS} replicas per partition + 1 spare); "
                f"got --nodes {nodes}")
    return None


# How long each kind of episode holds its fault (uniform in [lo, hi] seconds). Pauses are longer
# than the election timeout (0.5-1 s at 50 ms ticks) so the others elect a new leader and the
# paused one wakes up holding a lease it no longer has.
HOLD = {
    "kill": (1.0, 4.0),
    "pause": (1.5, 4.0),
    "partition": (3.0, 6.0),
    "fsync": (2.0, 4.0),
    "slowdisk": (3.0, 6.0),
    "latency": (3.0, 6.0),
    "router": (1.0, 3.0),
    # From submitting the AddReplica to the heal that finishes the move. The inject itself takes
    # 1-2 s when split (waiting for the learner to show up, then cutting the network).
    "member": (4.0, 7.0),
    # From submitting the split (with a node cut off, or not) to healing the network.
    "split": (2.0, 4.0),
}
GAP = (2.0, 3.5)  # after a heal, before the next inject: time to recover, measured
# A member episode's heal carries the move through (learner promoted, an old replica removed),
# which takes a few seconds of the cluster's own time: planned for, so the lane does not slip.
MEMBER_MOVE_S = 6.0
WARMUP = 2.0  # clean operation first, so the history starts from a working cluster
TAIL = 1.0  # the last heal at least this long before the end of the run
TRANSFER_EVERY = (1.5, 4.0)


# A step's parameter: an index or a count, a symbolic target (``node:N``, ``leader:K``) or
# another name, or a flag.
Param = int | str | bool


@dataclass(frozen=True, slots=True)
class Step:
    """One action at ``at`` seconds after the workload started.

    ``episode`` ties an inject to its heal; ``action`` is what the executor does (see
    :data:`ACTIONS`); ``params`` is a sorted tuple of (name, value) pairs.
    """

    at: float
    episode: int
    kind: str
    action: str
    params: tuple[tuple[str, Param], ...] = ()

    def param(self, name: str, default: Param | None = None) -> Param | None:
        return dict(self.params).get(name, default)

    def number(self, name: str, default: int | None = None) -> int:
        """An integer parameter: an index, a count, milliseconds."""
        value = self.param(name, default)
        if not isinstance(value, int):
            raise ValueError(f"step {self}: {name} is {value!r}, not an integer")
        return value

    def __str__(self) -> str:
        args = " ".join(f"{k}={v}" for k, v in self.params)
        return f"{self.at:7.2f}s  #{self.episode:<3d} {self.action}{(' ' + args) if args else ''}"


# inject action -> the heal action that ends it.
HEAL = {
    "kill": "restart",
    "pause": "resume",
    "partition": "heal-network",
    "fail-fsync": "restart-healthy",
    "slow-disk": "fast-disk",
    "latency": "heal-network",
    "kill-router": "restart-router",
    "add-replica": "finish-move",
    "split": "finish-split",
}
# Every action that starts something: its heal, or None for a one-shot action.
ACTIONS: dict[str, str | None] = {**HEAL, "transfer": None}
INJECT = {
    "kill": "kill",
    "pause": "pause",
    "partition": "partition",
    "fsync": "fail-fsync",
    "slowdisk": "slow-disk",
    "latency": "latency",
    "router": "kill-router",
    "member": "add-replica",
    "split": "split",
}


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int
    duration: float
    faults: tuple[str, ...]
    steps: tuple[Step, ...]
    nodes: int = 3

    def kinds(self) -> set[str]:
        """Fault kinds present (partition shapes as ``partition/SHAPE``)."""
        out = set()
        for s in self.steps:
            if s.action == "partition":
                out.add(f"partition/{s.param('shape')}")
                out.add("partition")
            elif s.action == "add-replica":
                out.add("member")
                if s.param("split"):
                    out.add("member/split")
            elif s.action in INJECT.values() or s.action == "transfer":
                out.add(s.kind)
        return out

    def missing(self) -> list[str]:
        """Requested kinds (and partition shapes) the duration left no room for."""
        have = self.kinds()
        want = list(self.faults)
        if "partition" in self.faults:
            want += [f"partition/{s}" for s in partition_shapes(self.nodes)]
        return [k for k in want if k not in have]

    def episodes(self) -> dict[int, list[Step]]:
        out: dict[int, list[Step]] = {}
        for s in self.steps:
            out.setdefault(s.episode, []).append(s)
        return out

    def describe(self) -> str:
        head = f"schedule (seed {self.seed}, {self.duration:g} s, faults {','.join(self.faults)}, {self.nodes} nodes):"
        if not self.steps:
            return head + "\n  (no faults)"
        return "\n".join([head, *(f"  {s}" for s in self.steps)])


def _node_target(rng: random.Random, nodes: int, partitions: int) -> str:
    """Half the time a fixed store, half the time whichever store leads some partition."""
    if rng.random() < 0.5:
        return f"node:{rng.randint(1, nodes)}"
    return f"leader:{rng.randint(1, partitions)}"


def _member_params(rng: random.Random, nodes: int, partitions: int, first: bool) -> dict[str, Param]:
    """Move one replica of partition K to a store that does not host it.

    ``split``: cut the network right after the new replica became a learner, into {leader, the
    ``keep``-th other voter} | {the remaining voter, the learner} (the first member episode of
    a schedule always splits). ``remove``: which old replica goes once the new one is a voter,
    ``leader`` (whoever leads then) or ``follower:I`` (the I-th other old voter). ``spare``
    (more than 4 nodes only): which of the stores not hosting K receives the replica.
    """
    params: dict[str, Param] = {"partition": rng.randint(1, partitions)}
    split = first or rng.random() < 0.5
    params["split"] = split
    if split:
        params["keep"] = rng.randrange(REPLICAS - 1)
    params["remove"] = "leader" if rng.random() < 0.5 else f"follower:{rng.randrange(REPLICAS - 1)}"
    if nodes > MEMBER_MIN_NODES:
        params["spare"] = rng.randrange(nodes - REPLICAS)
    return params


def _params(kind: str, rng: random.Random, nodes: int, partitions: int, shape: str = "") -> dict[str, Param]:
    if kind in ("kill", "pause", "fsync"):
        return {"target": _node_target(rng, nodes, partitions)}
    if kind == "slowdisk":
        return {"target": _node_target(rng, nodes, partitions), "delay_ms": rng.choice((20, 50, 100, 200))}
    if kind == "latency":
        return {"target": _node_target(rng, nodes, partitions), "delay_ms": rng.choice((10, 30, 80, 150))}
    if kind == "router":
        # Stop the placement leader (3 in 4) or a follower (by position), by SIGKILL or SIGSTOP;
        # half the time with an operation (a transfer of partition K) submitted just before.
        params: dict[str, Param] = {"mode": rng.choice(("kill", "pause")),
                                    "who": "leader" if rng.random() < 0.75 else "follower",
                                    "other": rng.randrange(ROUTERS - 1)}
        if rng.random() < 0.5:
            params.update(operation=True, partition=rng.randint(1, partitions), to=rng.randrange(REPLICAS - 1))
        return params
    if kind == "split":
        # Split partition K at its middle key under load; a third of the time with its leader
        # cut off from every other store, a third with one follower cut off (it catches up past
        # the split later), the rest on a whole network.
        return {"partition": rng.randint(1, partitions), "cut": rng.choice(("none", "leader", "follower")),
                "follower": rng.randrange(REPLICAS - 1)}
    if kind == "partition":
        if shape == "majority":  # one store alone vs the rest (3 nodes: the minority is one)
            return {"shape": shape, "minority": f"node:{rng.randint(1, nodes)}"}
        if shape == "leader":  # whoever leads partition K, cut off from everyone
            return {"shape": shape, "minority": f"leader:{rng.randint(1, partitions)}"}
        if shape == "asymmetric":  # FROM's messages to one other store dropped, the reverse flows
            return {"shape": shape, "from": _node_target(rng, nodes, partitions), "other": rng.randrange(nodes - 1)}
        if shape == "bridge":  # the others cannot talk to each other, BRIDGE talks to both
            return {"shape": shape, "bridge": _node_target(rng, nodes, partitions)}
        if shape == "halves":  # WITH and the MATE-th other store | the rest (4 nodes: 2 | 2)
            return {"shape": shape, "with": _node_target(rng, nodes, partitions), "mate": rng.randrange(nodes - 1)}
    raise ValueError(f"no parameters for fault {kind!r} {shape!r}")


def build(
    seed: int,
    duration: float,
    faults: list[str] | tuple[str, ...],
    *,
    nodes: int | None = None,
    partitions: int = 4,
) -> Schedule:
    """The schedule for ``seed``: identical for identical arguments, drawn from one RNG.

    ``nodes`` defaults to :func:`default_nodes` (3, or 4 with ``member``).
    """
    unknown = [f for f in faults if f not in KINDS]
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {', '.join(KINDS)}")
    if nodes is None:
        nodes = default_nodes(faults)
    why = check_nodes(nodes, faults)
    if why is not None:
        raise ValueError(why)
    rng = random.Random(seed)
    steps: list[Step] = []
    episode = 0
    primary = [k for k in PRIMARY if k in faults]
    end = duration - TAIL

    # The primary lane: shuffled cycles over the requested kinds, partition expanded to its
    # shapes so that every shape occurs in the first cycle.
    t = WARMUP
    cycle: list[tuple[str, str]] = []
    members = 0
    while primary:
        if not cycle:
            cycle = [(k, "") for k in primary if k != "partition"]
            if "partition" in primary:
                cycle += [("partition", s) for s in partition_shapes(nodes)]
            rng.shuffle(cycle)
        kind, shape = cycle.pop(0)
        lo, hi = HOLD[kind]
        hold = round(rng.uniform(lo, hi), 2)
        settle = MEMBER_MOVE_S if kind == "member" else 0.0
        if t + hold + settle > end:
            break
        episode += 1
        if kind == "member":
            drawn = _member_params(rng, nodes, partitions, first=members == 0)
            members += 1
        else:
            drawn = _params(kind, rng, nodes, partitions, shape)
        params = tuple(sorted(drawn.items()))
        inject = INJECT[kind]
        steps.append(Step(round(t, 2), episode, kind, inject, params))
        steps.append(Step(round(t + hold, 2), episode, kind, HEAL[inject], params))
        t += hold + settle + rng.uniform(*GAP)

    # The transfer lane, overlapping the primary one.
    if "transfer" in faults:
        t = WARMUP + rng.uniform(*TRANSFER_EVERY) / 2
        while t < end:
            episode += 1
            params = (("partition", rng.randint(1, partitions)), ("to", f"node:{rng.randint(1, nodes)}"))
            steps.append(Step(round(t, 2), episode, "transfer", "transfer", params))
            t += rng.uniform(*TRANSFER_EVERY)

    steps.sort(key=lambda s: (s.at, s.episode))
    return Schedule(seed, float(duration), tuple(faults), tuple(steps), nodes)
