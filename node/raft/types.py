"""Plain data that flows in and out of the consensus core.

Everything here is a frozen, slotted dataclass or an enum: cheap to build on
the hot path, easy to compare in tests, free of any I/O, and immutable, so
whatever the core hands out (a message, an entry, a Ready) can be shared,
queued, duplicated and re-sent without copying, and nobody downstream can
change what the core decided.  Sequences are tuples for the same reason
(the codec decodes a message's entries into one: tens of nanoseconds).
Node ids are positive integers; ``0`` (:data:`NONE`) means "nobody" wherever
an id is expected.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0
"""The id that means "no node" (no leader known, no vote cast)."""


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry.  ``data`` is opaque to the core except for conf changes."""

    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL


class ConfChangeType(IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    type: ConfChangeType
    node_id: int


_CC_HEADER = struct.Struct("<I")
_CC_ITEM = struct.Struct("<BQ")


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change, applied when its entry is applied.

    Zero changes means "leave the joint configuration".  One voter change is
    applied directly (a single-server change is always safe); anything that
    touches more than one voter enters a joint configuration C(old,new) that
    the leader leaves automatically once the entry is applied.

    ``context`` is opaque to the core and travels with the entry (etcd's
    ConfChangeV2.Context): the node puts the new members' addresses there.
    """

    changes: tuple[ConfChangeSingle, ...] = ()
    context: bytes = b""

    def encode(self) -> bytes:
        parts = [_CC_HEADER.pack(len(self.changes))]
        parts.extend(_CC_ITEM.pack(c.type, c.node_id) for c in self.changes)
        parts.append(self.context)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        (n,) = _CC_HEADER.unpack_from(data, 0)
        off = _CC_HEADER.size
        changes = []
        for _ in range(n):
            t, node_id = _CC_ITEM.unpack_from(data, off)
            off += _CC_ITEM.size
            changes.append(ConfChangeSingle(ConfChangeType(t), node_id))
        return cls(tuple(changes), bytes(data[off:]))

    @property
    def is_leave_joint(self) -> bool:
        return not self.changes


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: who votes, who only learns.

    ``voters_outgoing`` is non-empty only in a joint configuration, where a
    decision needs a majority of ``voters`` *and* of ``voters_outgoing``.
    ``learners_next`` holds voters being demoted to learners: they keep
    voting in the outgoing half until the joint config is left.
    """

    voters: frozenset[int] = frozenset()
    voters_outgoing: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()
    learners_next: frozenset[int] = frozenset()
    auto_leave: bool = False

    @property
    def joint(self) -> bool:
        return bool(self.voters_outgoing)

    def all_nodes(self) -> frozenset[int]:
        return self.voters | self.voters_outgoing | self.learners | self.learners_next


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message produced with it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image at ``meta.index``; ``data`` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def empty(self) -> bool:
        return self.meta.index == 0


class MessageType(IntEnum):
    APP = 0
    APP_RESP = 1
    VOTE = 2
    VOTE_RESP = 3
    PRE_VOTE = 4
    PRE_VOTE_RESP = 5
    HEARTBEAT = 6
    HEARTBEAT_RESP = 7
    SNAP = 8
    TIMEOUT_NOW = 9
    READ_INDEX = 10
    READ_INDEX_RESP = 11


@dataclass(frozen=True, slots=True)
class Message:
    """A message between replicas of one group.

    ``stamp`` carries the leader's tick counter on appends and heartbeats and
    is echoed back in the responses: the leader's lease starts at the stamp a
    quorum has acknowledged (see :mod:`node.raft.raft`).  ``context`` carries
    the ReadIndex request context.  ``transfer`` marks a vote requested by a
    leadership transfer, which may pre-empt a live leader's lease.
    """

    type: MessageType
    src: int
    dst: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""
    stamp: int = 0
    transfer: bool = False
    quiesce: bool = False


class Role(IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth telling the application about when it changes."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read may be served once the state machine has applied ``index``."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class ConfChangeResult:
    """A committed conf change handed to the application, with what it does.

    ``conf_state`` is the membership once the entry at ``index`` is applied, or
    None when the change is invalid against the configuration in force: every
    replica then ignores the same entry the same way.  The core computes it
    once; the application stores it with the applied state instead of
    re-deriving it, and the core adopts exactly this in :meth:`RawNode.advance`.
    """

    index: int
    change: ConfChange
    conf_state: ConfState | None


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the application.

    The application must, in this order:

    1. send ``messages_before_persist`` whenever it likes, even before step 2
       starts (a leader's appends, heartbeats and read answers: Raft lets a
       leader replicate while its own write runs, because it counts its own
       log only once :meth:`RawNode.advance` reports it persisted);
    2. persist ``snapshot`` (if any), ``entries`` and ``hard_state`` (if not
       None) — durably when ``must_sync``; when only the commit index moved
       (``hard_state`` set, ``must_sync`` False) the write may be deferred, as
       the applied state re-establishes it after a crash;
    3. send ``messages_after_persist`` (votes and acknowledgements promise what
       is now on disk);
    4. install ``snapshot`` into the state machine, then apply
       ``committed_entries`` in order; ``conf_changes`` says what each conf
       change entry among them does to the membership;
    5. serve ``read_states`` once their index is applied;
    6. call :meth:`RawNode.advance` with this Ready.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    committed_entries: tuple[Entry, ...] = ()
    messages_before_persist: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    conf_changes: tuple[ConfChangeResult, ...] = ()
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class ProgressStatus:
    match: int
    next: int
    state: str
    recent_active: bool
    learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only view for operators and drivers (lag, leader, roles, pending work).

    ``progress`` is filled on a leader only.  ``conf_change_pending``: a conf
    change was proposed and is not applied yet, so no other may be proposed.
    """

    id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader: int
    role: Role
    conf_state: ConfState
    progress: dict[int, ProgressStatus]
    lead_transferee: int
    conf_change_pending: bool = False
