"""A node's RaftStore hosting one one-replica group, for tests of a whole node without peers:
the transport that never sends, and the partition such a test bootstraps."""

from __future__ import annotations

from common.descriptor import Descriptor, Epoch, ReplicaDesc

DESC = Descriptor(1, b"", b"", Epoch(1, 1), (ReplicaDesc(store_id=1, replica_id=1),))


class NoPeers:
    """The transport of a one-replica group: nothing is ever sent."""

    def flush(self) -> None:
        pass  # nothing is ever queued

    def send(self, to_store: int, msgs: object) -> None:
        raise AssertionError(f"a one-replica group sent to store {to_store}")

    async def send_snapshot(self, *args: object, **kwargs: object) -> tuple[bool, str]:
        raise AssertionError("a one-replica group sent a snapshot")
