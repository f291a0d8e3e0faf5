"""Tessera's consensus core: a deterministic, sans-I/O Raft state machine.

Nothing in this package imports asyncio, grpc, socket, time, threading or
random.  Time arrives as :meth:`RawNode.tick`, randomness as an injected
generator, and all I/O is the caller's, driven by :class:`Ready` batches.
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
from .storage import LogStorage, MemoryStorage
from .types import (
    NONE,
    ConfChange,
    ConfChangeSingle,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    Status,
)

__all__ = [
    "NONE",
    "CompactedError",
    "Config",
    "ConfChange",
    "ConfChangeSingle",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "LogStorage",
    "MemoryStorage",
    "Message",
    "MessageType",
    "NotLeaderError",
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
]
