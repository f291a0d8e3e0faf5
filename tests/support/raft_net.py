"""Drive Raft cores by hand in unit tests: one replica at a time, or a tiny synchronous network.

Unlike the simulator there is no clock and no fault beyond explicit drops and isolation: tests
step and tick by hand and assert on exact outcomes. Everything here uses only the exports of
``node.raft`` (the boundary test checks that), so any tier may use it.

* :func:`storage_with` builds the stable state a replica starts from: its membership, a log from
  index 1 and a hard state. It is what etcd's tests call ``withPeers``/``loadState``, so the logs
  of the paper's figures can be written down as they are printed.
* :class:`Replica` is one :class:`RawNode` plus its storage, with the test playing the driver:
  :meth:`Replica.flush` persists, applies and advances every pending Ready and returns the
  messages the driver would have sent.
* :class:`Net` wires replicas together and delivers until quiet.
* :class:`FixedRand` takes the randomness out of election timeouts.
* :data:`PAPER` turns off what the paper's own algorithm does not have (``**PAPER``).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from node.raft import (
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    Rand,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

MT = MessageType
_VOTE_RESP = {MT.PRE_VOTE: MT.PRE_VOTE_RESP, MT.VOTE: MT.VOTE_RESP}


class Extensions(TypedDict):
    """The Config switches of what Raft has beyond the paper, as keywords for :class:`Replica` and :class:`Net`."""

    pre_vote: bool
    check_quorum: bool


PAPER: Extensions = {"pre_vote": False, "check_quorum": False}
"""The paper's own algorithm: no PreVote, no CheckQuorum (hence no leases)."""


class FixedRand:
    """A :class:`~node.raft.Rand` with no randomness: every election timeout is ``election_tick + offset``.

    ``offset`` must be below ``election_tick`` (the core draws from ``[0, election_tick)``).
    """

    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def randrange(self, start: int, stop: int) -> int:
        assert start + self.offset < stop, f"offset {self.offset} outside [{start}, {stop})"
        return start + self.offset


def ents(*terms: int, start: int = 1) -> list[Entry]:
    """Empty entries with these terms at consecutive indexes from ``start`` (etcd's ``index(i).terms(...)``)."""
    return [Entry(term=t, index=start + k) for k, t in enumerate(terms)]


class _ConfiguredStorage(MemoryStorage):
    """A MemoryStorage whose membership is known before any snapshot exists.

    A real group learns its first membership from a bootstrap snapshot; tests of the paper's
    figures want a log that starts at index 1 instead, so the membership is given here and
    answered until a snapshot (which carries its own) replaces it.
    """

    def __init__(self, conf_state: ConfState) -> None:
        super().__init__()
        self._boot_conf = conf_state

    def initial_state(self) -> tuple[HardState, ConfState]:
        hs, cs = super().initial_state()
        return hs, (self._boot_conf if self.snapshot().empty else cs)


def storage_with(
    voters: Iterable[int],
    *,
    learners: Iterable[int] = (),
    entries: Sequence[Entry] = (),
    hard_state: HardState | None = None,
) -> MemoryStorage:
    """Stable state for a replica of ``voters`` (+ ``learners``) with ``entries`` persisted from index 1.

    A non-empty ``hard_state`` makes the replica a restarted one, with what that implies (it
    refuses votes for its first ``election_tick`` ticks).
    """
    st = _ConfiguredStorage(ConfState(voters=frozenset(voters), learners=frozenset(learners)))
    st.append(entries)
    if hard_state is not None:
        st.set_hard_state(hard_state)
    return st


def bootstrap_storage(voters: Iterable[int], learners: Iterable[int] = ()) -> MemoryStorage:
    """Stable state of a freshly bootstrapped group: a snapshot at index 1, term 1 naming the members."""
    s = MemoryStorage()
    s.apply_snapshot(
        Snapshot(
            SnapshotMeta(index=1, term=1, conf_state=ConfState(voters=frozenset(voters), learners=frozenset(learners)))
        )
    )
    return s


def enum_id(v: Role | MessageType) -> str:
    """A pytest id for an enum parameter (an IntEnum would otherwise show as its number)."""
    return v.name.lower()


def persist(storage: MemoryStorage, rd: Ready) -> None:
    """Step 2 of the Ready protocol: write the snapshot, the entries and the hard state."""
    if rd.snapshot is not None:
        storage.apply_snapshot(rd.snapshot)
    storage.append(rd.entries)
    if rd.hard_state is not None:
        storage.set_hard_state(rd.hard_state)


def whole_log(node: RawNode) -> list[Entry]:
    """A replica's whole log as its core sees it (persisted or not), from its first index."""
    view = node.log_view()
    return view.entries(view.first_index(), view.last_index() + 1)


def grant(request: Message) -> Message:
    """The answer of a voter that grants ``request`` (a PRE_VOTE or a VOTE)."""
    return Message(_VOTE_RESP[request.type], request.dst, request.src, term=request.term)


def accept(append: Message) -> Message:
    """The answer of a follower whose log matched ``append`` and now holds all of it."""
    assert append.type == MT.APP, append
    return Message(
        MT.APP_RESP, append.dst, append.src, term=append.term,
        index=append.index + len(append.entries), stamp=append.stamp,
    )


class Replica:
    """One replica, driven by the test: the test steps and ticks it and sees what it would send.

    ``applied`` holds every committed entry handed to the application, in order;
    ``read_states`` every read the core released.
    """

    def __init__(
        self,
        node_id: int,
        storage: MemoryStorage,
        *,
        rand: Rand | None = None,
        mutation: str | None = None,
        **cfg: Any,
    ) -> None:
        self.storage = storage
        self.node = RawNode(
            Config(id=node_id, applied=storage.snapshot().meta.index, **cfg),
            storage,
            rand if rand is not None else FixedRand(0),
            mutation=mutation,
        )
        self.applied: list[Entry] = []
        self.read_states: list[ReadState] = []

    @classmethod
    def of(
        cls,
        node_id: int,
        voters: Iterable[int],
        *,
        learners: Iterable[int] = (),
        entries: Sequence[Entry] = (),
        hard_state: HardState | None = None,
        rand: Rand | None = None,
        mutation: str | None = None,
        **cfg: Any,
    ) -> Replica:
        """A replica started on :func:`storage_with` state (``rand`` defaults to ``FixedRand(0)``)."""
        st = storage_with(voters, learners=learners, entries=entries, hard_state=hard_state)
        return cls(node_id, st, rand=rand, mutation=mutation, **cfg)

    def flush(self) -> list[Message]:
        """Handle every pending Ready as a driver would; return the messages it would send, in order."""
        out: list[Message] = []
        while self.node.has_ready():
            rd = self.node.ready()
            persist(self.storage, rd)
            out.extend(rd.messages_before_persist)
            out.extend(rd.messages_after_persist)
            self.applied.extend(rd.committed_entries)
            self.read_states.extend(rd.read_states)
            self.node.advance(rd)
        return out

    def step(self, *msgs: Message) -> list[Message]:
        """Step each message, then :meth:`flush`."""
        for m in msgs:
            self.node.step(m)
        return self.flush()

    def tick(self, n: int = 1) -> list[Message]:
        """Tick ``n`` times, then :meth:`flush`."""
        for _ in range(n):
            self.node.tick()
        return self.flush()

    def log(self) -> list[Entry]:
        """The whole log as the core sees it (persisted or not), from its first index."""
        return whole_log(self.node)

    def campaign_granted(self) -> list[Message]:
        """Campaign and have every voter asked grant the request, until this replica leads.

        Returns what the new leader sends once elected (its first appends). Works with or
        without PreVote; the grants are forged, so the other voters need not exist.
        """
        self.node.campaign()
        out = self.flush()
        for _ in range(2):  # at most a pre-vote round, then a vote round
            if self.node.is_leader:
                return out
            requests = [m for m in out if m.type in _VOTE_RESP]
            assert requests, f"replica {self.node.id} ({self.node.role.name}) asked nobody for a vote"
            out = self.step(*(grant(m) for m in requests))
        assert self.node.is_leader, self.node.role
        return out

    # -- states reached through the public surface -------------------------------------------

    def follow(self, term: int, lead: int) -> None:
        """Become a follower of ``lead`` in ``term``: hear its heartbeat (the answer is dropped)."""
        self.step(Message(MT.HEARTBEAT, lead, self.node.id, term=term))
        assert (self.node.role, self.node.term, self.node.leader) == (Role.FOLLOWER, term, lead)

    def to_candidate(self) -> list[Message]:
        """Become a candidate of the next term (through a granted pre-vote round if PreVote is on).

        Returns the vote requests it sends.
        """
        self.node.campaign()
        out = self.flush()
        if self.node.role == Role.PRE_CANDIDATE:
            out = self.step(*(grant(m) for m in out if m.type == MT.PRE_VOTE))
        assert self.node.role == Role.CANDIDATE
        return out

    def put_in(self, role: Role) -> None:
        """Bring a fresh replica into ``role``; what it sends on the way is dropped.

        A follower hears of leader 2 in term 1; a pre-candidate campaigned and got no answer; a
        candidate and a leader are of the next term.
        """
        if role == Role.FOLLOWER:
            self.follow(1, 2)
        elif role == Role.PRE_CANDIDATE:
            self.node.campaign()
            self.flush()
            assert self.node.role == Role.PRE_CANDIDATE
        elif role == Role.CANDIDATE:
            self.to_candidate()
        else:
            self.campaign_granted()

    def ack_until_quiet(self, out: list[Message], acceptors: Iterable[int] | None = None) -> None:
        """As a leader, have the followers (only ``acceptors`` if given) accept every append in
        ``out`` and in what follows, until the leader sends no more."""
        to = None if acceptors is None else set(acceptors)
        while True:
            apps = [m for m in out if m.type == MT.APP and (to is None or m.dst in to)]
            if not apps:
                return
            out = self.step(*(accept(m) for m in apps))


class Net:
    """Replicas over an in-memory network that delivers everything, in order, until quiet.

    ``storages`` replaces the bootstrap state of the named replicas (see :func:`storage_with`),
    ``rand`` the election jitter of every replica (seeded per replica from ``seed`` by default).
    """

    def __init__(
        self,
        ids: Iterable[int],
        *,
        learners: Iterable[int] = (),
        seed: int = 1,
        storages: Mapping[int, MemoryStorage] | None = None,
        rand: Rand | None = None,
        **cfg: Any,
    ) -> None:
        ids, learners = list(ids), list(learners)
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.fixed_rand = rand
        self.storages: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.reads: dict[int, list[ReadState]] = {}
        self.dropped: set[tuple[int, int]] = set()
        self.ignored: set[MessageType] = set()
        self.holding: set[MessageType] = set()
        self.held: list[Message] = []
        self.in_flight: list[Message] = []
        for i in ids + learners:
            given = (storages or {}).get(i)
            self.storages[i] = given if given is not None else bootstrap_storage(ids, learners)
            self.start(i)

    @classmethod
    def fresh(cls, ids: Iterable[int], *, learners: Iterable[int] = (), **kw: Any) -> Net:
        """A network of replicas that start on :func:`storage_with` state: term 0, an empty log
        from index 1 (etcd's ``newNetwork``), rather than a bootstrap snapshot."""
        ids, learners = list(ids), list(learners)
        storages = {i: storage_with(ids, learners=learners) for i in ids + learners}
        return cls(ids, learners=learners, storages=storages, **kw)

    def start(self, i: int, storage: MemoryStorage | None = None) -> RawNode:
        if storage is not None:
            self.storages[i] = storage
        st = self.storages[i]
        rand = self.fixed_rand if self.fixed_rand is not None else random.Random(self.rng.random())
        self.nodes[i] = RawNode(Config(id=i, applied=st.snapshot().meta.index, **self.cfg), st, rand)
        self.applied.setdefault(i, [])
        self.reads.setdefault(i, [])
        return self.nodes[i]

    def crash(self, i: int) -> None:
        del self.nodes[i]

    def cut(self, i: int, j: int) -> None:
        """Drop everything between ``i`` and ``j``, both ways."""
        self.dropped.add((i, j))
        self.dropped.add((j, i))

    def isolate(self, i: int) -> None:
        for j in self.storages:
            if j != i:
                self.cut(i, j)

    def ignore(self, t: MessageType) -> None:
        """Drop every message of type ``t`` until :meth:`heal`."""
        self.ignored.add(t)

    def hold(self, t: MessageType) -> None:
        """Set every message of type ``t`` aside in :attr:`held` until :meth:`heal` (to deliver later)."""
        self.holding.add(t)

    def heal(self) -> None:
        """Deliver everything again (what was :attr:`held` stays held)."""
        self.dropped.clear()
        self.ignored.clear()
        self.holding.clear()

    def _delivers(self, m: Message) -> bool:
        if m.type in self.holding:
            self.held.append(m)
            return False
        return (m.src, m.dst) not in self.dropped and m.type not in self.ignored

    def handle_ready(self, i: int) -> bool:
        n = self.nodes.get(i)
        if n is None or not n.has_ready():
            return False
        rd = n.ready()
        persist(self.storages[i], rd)
        snapshot_failures = []
        for m in rd.messages_before_persist + rd.messages_after_persist:
            if self._delivers(m):
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

    def deliver(self, msgs: Iterable[Message]) -> None:
        """Step each message into its destination (if that replica is up), ignoring the drop rules."""
        for m in msgs:
            if m.dst in self.nodes:
                self.nodes[m.dst].step(m)

    def settle(self, limit: int = 10000) -> None:
        """Deliver everything until quiet."""
        for _ in range(limit):
            busy = False
            for i in sorted(self.nodes):
                busy |= self.handle_ready(i)
            if self.in_flight:
                busy = True
                msgs, self.in_flight = self.in_flight, []
                self.deliver(msgs)
            if not busy:
                return
        raise AssertionError("network did not settle")

    def send(self, *msgs: Message) -> None:
        """Inject messages (subject to the drop rules), then :meth:`settle`."""
        self.in_flight.extend(m for m in msgs if self._delivers(m))
        self.settle()

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for i in sorted(self.nodes):
                self.nodes[i].tick()
            self.settle()

    def tell_commit(self, i: int) -> None:
        """Tick leader ``i`` alone once and settle: a commit index its followers were not sent
        with an append reaches them then (docs/decisions.md D30)."""
        self.nodes[i].tick()
        self.settle()

    def compact(self, i: int, data: bytes = b"") -> int:
        """Snapshot replica ``i``'s state machine at its applied index and compact its log there.

        Returns that index. ``data`` stands for the state machine image.
        """
        node = self.nodes[i]
        index = node.applied
        self.storages[i].create_snapshot(index, node.conf_state, data)
        self.storages[i].compact(index)
        return index

    def tick_alone(self, i: int, n: int = 1) -> None:
        """Tick replica ``i`` alone ``n`` times, as if cut off: what it sends meanwhile is lost."""
        node = self.nodes[i]
        for _ in range(n):
            node.tick()
            if node.has_ready():
                rd = node.ready()
                persist(self.storages[i], rd)
                node.advance(rd)

    def campaign(self, i: int) -> None:
        """Replica ``i`` starts an election now; the network settles (etcd's MsgHup)."""
        self.nodes[i].campaign()
        self.settle()

    def roles(self) -> dict[int, Role]:
        return {i: n.role for i, n in sorted(self.nodes.items())}

    def terms(self) -> dict[int, int]:
        return {i: n.term for i, n in sorted(self.nodes.items())}

    def log(self, i: int) -> list[Entry]:
        """Replica ``i``'s whole log (persisted or not), from its first index."""
        return whole_log(self.nodes[i])

    def leader(self) -> int | None:
        leaders = [i for i, n in self.nodes.items() if n.is_leader]
        if not leaders:
            return None
        return max(leaders, key=lambda i: self.nodes[i].term)

    def elect(self, i: int) -> None:
        self.campaign(i)
        assert self.nodes[i].is_leader, self.nodes[i].role

    def wait_leader(self, max_ticks: int = 200) -> int:
        for _ in range(max_ticks):
            lead = self.leader()
            if lead is not None:
                return lead
            self.tick()
        raise AssertionError("no leader elected")
