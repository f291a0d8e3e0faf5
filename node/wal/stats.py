"""What the WAL counts for the node's metrics (node/metrics.py): cheap enough for every write.

Updated by whichever thread writes the WAL (the event loop or the node's disk thread, one at
a time under the WAL's I/O lock) and read, without a lock, by a scrape: a scrape may see an
fsync counted in the histogram a moment before its bytes, which no dashboard can tell.
"""

from __future__ import annotations

from common.metrics import DISK_BUCKETS_S, Buckets


class WalStats:
    __slots__ = ("bytes_written", "fsync", "writes")

    def __init__(self) -> None:
        self.fsync = Buckets(DISK_BUCKETS_S)  # seconds per fsync (an injected delay included)
        self.bytes_written = 0
        self.writes = 0
