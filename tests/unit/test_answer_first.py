"""A round that persists nothing answers first (node.round_executor, docs/decisions.md D24):
the writes it applies are settled from inside the round, so an answer queued there (as the
KV wire queues one: written later in the same loop turn) reaches its client before the
round's own Raft traffic (the commit index the followers learn) reaches the wire. A round
that persists something still puts its appends on the wire before its disk trip (D6).

Three real RaftStores (real WAL and LMDB files) in one event loop, joined by a transport that
keeps the real one's rule (tools/memory_transport.py): what ``send`` queues is written at the next ``flush``, or by the
transport itself a moment later in the same loop turn. Heartbeats every 2 ms put a tick's
traffic in the transport's queue just before many an applying round: its flush, scheduled
before the round's answers, must not carry the round's own traffic with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node import round_executor
from node.raft import MessageType
from node.raftstore import RaftStore
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import OpResult, StateStore
from node.wal import WriteAheadLog
from tesserapb import raft_pb2
from tools.memory_transport import MemoryTransport

DESC = Descriptor(1, b"", b"", Epoch(1, 1), tuple(ReplicaDesc(store_id=s, replica_id=s) for s in (1, 2, 3)))


class Wire:
    """What was written where, in order: ("raft", from store, messages) and ("answer", store)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int, list[raft_pb2.RaftMessage]]] = []
        self.stores: dict[int, RaftStore] = {}

    def wrote(self, from_store: int, to_store: int, msgs: list[raft_pb2.RaftMessage]) -> None:
        self.log.append(("raft", from_store, msgs))


def test_a_round_that_persists_nothing_writes_its_answers_before_its_raft_traffic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Trips on the loop whatever this machine's disk does meanwhile (a slow one sends them to the
    # disk thread, where a round answers as it always did).
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)

    async def main() -> None:
        wire = Wire()
        stores, closers = {}, []
        for sid in (1, 2, 3):
            wal = WriteAheadLog.open(str(tmp_path / f"wal{sid}"))
            state = StateStore(str(tmp_path / f"state{sid}"))
            # Elections time out after 0.5-1 s of ticks: three stores share this loop, and one
            # slow fsync on a busy machine must not elect another leader mid-test (a CI run).
            transport = MemoryTransport(sid, wire.stores, observe=wire.wrote)
            rs = RaftStore(sid, wal, state, transport, RaftSettings(tick_s=0.001, election_tick=500))
            stores[sid] = rs
            closers.append((rs, wal, state))
        wire.stores.update(stores)
        try:
            for rs in stores.values():
                await rs.start()
            for sid, rs in stores.items():
                await rs.create_replica(DESC, sid, bootstrap=True)
            reps = {sid: rs.replicas[1] for sid, rs in stores.items()}
            await eventually_async(lambda: any(r.is_leader() for r in reps.values()), 10, "a leader")
            lead_sid = next(sid for sid, r in reps.items() if r.is_leader())
            leader = reps[lead_sid]
            for n in range(50):
                done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

                def settled(
                    results: list[OpResult] | None, exc: BaseException | None, done: asyncio.Future[int] = done
                ) -> None:
                    assert exc is None and results, exc
                    # An answer queued as the KV wire queues one: written later in this loop turn.
                    asyncio.get_running_loop().call_soon(wire.log.append, ("answer", lead_sid, []))
                    done.set_result(results[0].version)  # a put's version is its entry's index

                p = leader.propose_call(put(b"k%d" % n, b"v"))
                p.on_settled = settled
                index = await asyncio.wait_for(done, 10)
                await asyncio.sleep(0.01)  # the round's own traffic leaves meanwhile
                answer = max(i for i, e in enumerate(wire.log) if e[0] == "answer")
                # The leader tells its followers the new commit index in the round that applied
                # the write; that round persisted nothing, so its messages come after the answer.
                told = [i for i, (kind, sid, msgs) in enumerate(wire.log)
                        if kind == "raft" and sid == lead_sid
                        and any(m.type == MessageType.APP and m.commit >= index for m in msgs)]
                assert told, f"the commit index {index} never left the leader"
                assert told[0] > answer, (
                    f"write {n}: the leader's commit index {index} was on the wire (log entry {told[0]}) "
                    f"before the answer (log entry {answer})")
            # The appends themselves still leave before the leader's disk trip: the followers'
            # acknowledgements arrive, and every write above committed on a quorum.
            assert all(rs.failed is None for rs in stores.values())
        finally:
            for rs, wal, state in closers:
                await rs.stop()
                wal.close()
                state.close()

    asyncio.run(main())
