"""Tessera's consensus core: a deterministic, sans-I/O Raft state machine.

Nothing in this package imports asyncio, grpc, socket, time, threading or
random.  Time arrives as :meth:`RawNode.tick`, randomness as an injected
generator, and all I/O is the caller's, driven by :class:`Ready` batches.

What is exported here is the whole public surface: :class:`RawNode`, the
plain data that flows in and out of it, the storage interface, the errors,
and the read-only views.  The modules behind it (``raft``, ``log``,
``tracker``...) are private to the package.

Why it is built this way: docs/decisions.md D1; the Ready protocol: docs/architecture.md.
"""

from .config import Config, Rand
from .errors import (
    CompactedError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    SnapshotOutOfDateError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from .rawnode import RawNode
from .storage import LogStorage, MemoryStorage, limit_size
from .types import (
    NONE,
    ConfChange,
    ConfChangeResult,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProgressStatus,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    Status,
)
from .views import LogView


def known_mutations() -> dict[str, str]:
    """The known Raft bugs ``RawNode(..., mutation=NAME)`` can inject, name -> one line.

    Testing only (the simulator and the nemesis prove they catch each); the table is
    loaded on demand so that production never imports it.
    """
    from .mutations import describe

    return describe()


__all__ = [
    "NONE",
    "CompactedError",
    "ConfChange",
    "ConfChangeResult",
    "ConfChangeSingle",
    "ConfChangeType",
    "ConfState",
    "Config",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "LogView",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeaderError",
    "ProgressStatus",
    "ProposalDroppedError",
    "RaftError",
    "Rand",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotOutOfDateError",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "Status",
    "UnavailableError",
    "known_mutations",
    "limit_size",
]
