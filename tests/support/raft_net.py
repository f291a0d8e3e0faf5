"""A tiny synchronous in-memory network for unit tests of the Raft core.

Unlike the simulator it has no clock or faults beyond explicit drops and
isolation: tests step it by hand and assert on exact outcomes.
"""

from __future__ import annotations

import random

from node.raft import (
    Config,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
)


def bootstrap_storage(voters: set[int], learners: set[int] = frozenset()) -> MemoryStorage:
    s = MemoryStorage()
    s.apply_snapshot(
        Snapshot(SnapshotMeta(index=1, term=1, conf_state=ConfState(voters=frozenset(voters), learners=frozenset(learners))))
    )
    return s


class Net:
    def __init__(self, ids, *, learners=(), seed: int = 1, **cfg) -> None:
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.storages: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.reads: dict[int, list[ReadState]] = {}
        self.dropped: set[tuple[int, int]] = set()
        self.in_flight: list[Message] = []
        for i in list(ids) + list(learners):
            self.storages[i] = bootstrap_storage(set(ids), set(learners))
            self.start(i)

    def start(self, i: int, storage: MemoryStorage | None = None) -> RawNode:
        if storage is not None:
            self.storages[i] = storage
        st = self.storages[i]
        self.nodes[i] = RawNode(
            Config(id=i, applied=st.snapshot().meta.index, **self.cfg), st, random.Random(self.rng.random())
        )
        self.applied.setdefault(i, [])
        self.reads.setdefault(i, [])
        return self.nodes[i]

    def crash(self, i: int) -> None:
        del self.nodes[i]

    def isolate(self, i: int) -> None:
        for j in self.storages:
            if j != i:
                self.dropped.add((i, j))
                self.dropped.add((j, i))

    def heal(self) -> None:
        self.dropped.clear()

    def handle_ready(self, i: int) -> bool:
        n = self.nodes.get(i)
        if n is None or not n.has_ready():
            return False
        rd = n.ready()
        st = self.storages[i]
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
        snapshot_failures = []
        for m in rd.messages_before_persist + rd.messages_after_persist:
            if (m.src, m.dst) not in self.dropped:
                self.in_flight.append(m)
            elif m.type == MessageType.SNAP:
                snapshot_failures.append(m.dst)  # a real transport knows its stream failed
        for e in rd.committed_entries:
            if e.type == EntryType.NORMAL and e.data:
                self.applied[i].append(e.data)
        self.reads[i].extend(rd.read_states)
        n.advance(rd)
        for dst in snapshot_failures:
            n.report_snapshot(dst, False)
        return True

    def settle(self, limit: int = 10000) -> None:
        """Deliver everything until quiet."""
        for _ in range(limit):
            busy = False
            for i in sorted(self.nodes):
                busy |= self.handle_ready(i)
            if self.in_flight:
                busy = True
                msgs, self.in_flight = self.in_flight, []
                for m in msgs:
                    if m.dst in self.nodes:
                        self.nodes[m.dst].step(m)
            if not busy:
                return
        raise AssertionError("network did not settle")

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for i in sorted(self.nodes):
                self.nodes[i].tick()
            self.settle()

    def leader(self) -> int | None:
        leaders = [i for i, n in self.nodes.items() if n.is_leader]
        if not leaders:
            return None
        return max(leaders, key=lambda i: self.nodes[i].term)

    def elect(self, i: int) -> None:
        self.nodes[i].campaign()
        self.settle()
        assert self.nodes[i].is_leader, self.nodes[i].role

    def wait_leader(self, max_ticks: int = 200) -> int:
        for _ in range(max_ticks):
            lead = self.leader()
            if lead is not None:
                return lead
            self.tick()
        raise AssertionError("no leader elected")
