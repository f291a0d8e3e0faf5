"""Linearizable reads that reach a leader between two rounds share one ReadIndex
(node.replica.Replica.read_index): one heartbeat round trip for all of them, and a read
that arrives after a round took its Ready gets a ReadIndex of its own."""

from __future__ import annotations

import asyncio

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from node.raft import MessageType
from node.replica import Replica
from support.raft_net import Net


def _leader_replica(loop: asyncio.AbstractEventLoop) -> tuple[Net, Replica]:
    net = Net.fresh([1, 2, 3])
    net.elect(1)
    net.nodes[1].propose(b"x")  # an entry of its own term, so ReadIndex answers at once
    net.settle()
    desc = Descriptor(7, b"", b"", Epoch(1, 1), tuple(ReplicaDesc(s, s) for s in (1, 2, 3)))
    rep = Replica(7, 1, desc, net.nodes[1], None, loop, on_work=lambda: None)  # type: ignore[arg-type]
    return net, rep


def _contexts(rep: Replica) -> set[bytes]:
    rd = rep.raw.ready()
    ctxs = {m.context for m in rd.messages_before_persist if m.type == MessageType.HEARTBEAT and m.context}
    rep.raw.advance(rd)
    return ctxs


def test_reads_between_two_rounds_share_one_read_index_and_a_later_one_does_not() -> None:
    async def main() -> None:
        _net, rep = _leader_replica(asyncio.get_running_loop())
        first = rep.read_index(lease=False)
        assert all(rep.read_index(lease=False) is first for _ in range(20))
        assert len(_contexts(rep)) == 1  # one heartbeat broadcast for 21 reads
        rep.take_work()  # a round took the Ready: the next read starts its own ReadIndex
        later = rep.read_index(lease=False)
        assert later is not first
        assert len(_contexts(rep)) == 1

    asyncio.run(main())


def test_lease_reads_never_join_or_start_a_shared_read_index() -> None:
    async def main() -> None:
        _net, rep = _leader_replica(asyncio.get_running_loop())
        shared = rep.read_index(lease=False)
        lease = rep.read_index(lease=True)
        assert lease is not shared
        assert rep.read_index(lease=False) is shared

    asyncio.run(main())
