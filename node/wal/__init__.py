"""Tessera's write-ahead log: one log per node, shared by every partition on it.

See :mod:`node.wal.wal` for writes, failure and segments, :mod:`node.wal.record`
for the file format and :mod:`node.wal.replay` for the recovery rules.

See docs/decisions.md D2.
"""

from .batch import WalBatch
from .errors import (
    WalClosedError,
    WalCorruptionError,
    WalDiskFullError,
    WalError,
    WalLockedError,
    WalSyncError,
)
from .state import PartitionState
from .storage import WalLogStorage
from .wal import DEFAULT_SEGMENT_BYTES, WalFaults, WriteAheadLog

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "PartitionState",
    "WalBatch",
    "WalClosedError",
    "WalCorruptionError",
    "WalDiskFullError",
    "WalError",
    "WalFaults",
    "WalLockedError",
    "WalLogStorage",
    "WalSyncError",
    "WriteAheadLog",
]
