"""A leader answers the writes its followers acknowledged before its round's own WAL write
blocks the loop (node.round_executor, docs/decisions.md D31): their entries were on disk
before the round, so their apply need not wait for the fsync of the entries the round
appends. A follower keeps the old order (its acknowledgements are what others wait for).

Three real RaftStores (real WAL and LMDB files) in one event loop, joined by the in-memory
transport (tools/memory_transport.py). Writes are proposed every few loop turns whatever is in
flight, so that many of the leader's rounds apply some writes and append others; an answer is
written as the KV wire writes one (``RaftStore.answers``: later in the loop turn, or when a
round is about to block). Each leader WAL write and each answer written is logged with the
leader's round number.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from common.descriptor import Descriptor, Epoch, ReplicaDesc
from conftest import eventually_async
from node import round_executor
from node.raftstore import RaftStore
from node.settings import RaftSettings
from node.state.commands import put
from node.state.store import OpResult, StateStore
from node.wal import WriteAheadLog
from node.wal.batch import WalBatch
from support.lone_replica import lone_leader
from tools.memory_transport import MemoryTransport

DESC = Descriptor(1, b"", b"", Epoch(1, 1), tuple(ReplicaDesc(store_id=s, replica_id=s) for s in (1, 2, 3)))
WRITES = 300


def test_a_leader_answers_what_was_on_disk_before_its_round_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)  # trips on the loop, whatever this disk does

    async def main() -> list[tuple[str, int]]:
        stores: dict[int, RaftStore] = {}
        closers = []
        for sid in (1, 2, 3):
            wal = WriteAheadLog.open(str(tmp_path / f"wal{sid}"))
            state = StateStore(str(tmp_path / f"state{sid}"))
            transport = MemoryTransport(sid, stores)
            # Elections after 0.5-1 s of ticks: three stores share this loop (see test_answer_first).
            rs = RaftStore(sid, wal, state, transport, RaftSettings(tick_s=0.001, election_tick=500))
            stores[sid] = rs
            closers.append((rs, wal, state))
        events: list[tuple[str, int]] = []
        try:
            for rs in stores.values():
                await rs.start()
            for sid, rs in stores.items():
                await rs.create_replica(DESC, sid, bootstrap=True)
            await eventually_async(lambda: any(rs.replicas[1].is_leader() for rs in stores.values()), 10, "a leader")
            lead = next(rs for rs in stores.values() if rs.replicas[1].is_leader())
            leader = lead.replicas[1]
            wal = lead.executor.wal
            write = wal.write

            def logged_write(batch: WalBatch, *, sync: bool = True) -> None:
                events.append(("wal", lead.rounds))
                write(batch, sync=sync)

            monkeypatch.setattr(wal, "write", logged_write)
            loop = asyncio.get_running_loop()

            answered: list[asyncio.Future[None]] = []
            for n in range(WRITES):  # a write every few loop turns, whatever is in flight
                done: asyncio.Future[None] = loop.create_future()
                answered.append(done)

                def settled(results: list[OpResult] | None, exc: BaseException | None,
                            done: asyncio.Future[None] = done) -> None:
                    assert exc is None and results, exc

                    def answer() -> None:  # as the KV wire writes one
                        events.append(("answer", lead.rounds))
                        done.set_result(None)

                    lead.answers.ask(answer)

                p = leader.propose_call(put(b"k%d" % n, b"v"))
                p.on_settled = settled
                for _ in range(n % 7):  # a few loop turns, a different number each time
                    await asyncio.sleep(0)
            await asyncio.wait_for(asyncio.gather(*answered), 10)
            assert all(rs.failed is None for rs in stores.values())
        finally:
            for rs, wal_, state in closers:
                await rs.stop()
                wal_.close()
                state.close()
        return events

    events = asyncio.run(main())
    # The rounds that both answered writes and wrote the WAL: every answer before the write.
    both = {r for kind, r in events if kind == "answer"} & {r for kind, r in events if kind == "wal"}
    assert len(both) >= 10, f"only {len(both)} leader rounds both answered and wrote: the test shows nothing"
    late = sorted(r for r in both
                  if max(i for i, e in enumerate(events) if e == ("answer", r))
                  > min(i for i, e in enumerate(events) if e == ("wal", r)))
    assert not late, f"{len(late)} of {len(both)} rounds answered after their WAL write (rounds {late[:10]})"


def test_a_wal_that_refuses_the_round_after_its_early_applies_has_it_offered_again_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A round answers the applies of entries already on disk, then its own WAL write finds
    the disk full: nothing of the round is written, so it is offered again whole, its early
    applies too. They must go with the open transaction (aborted, the rounds it held handed
    back), not stay in it to be applied a second time and noted for a round that is not there."""
    monkeypatch.setattr(round_executor, "SLOW_TRIP_S", 60.0)  # trips on the loop
    monkeypatch.setattr(round_executor, "COMMIT_AFTER_S", 60.0)  # applies held open until asked

    async def main() -> None:
        async with lone_leader(tmp_path / "wal", tmp_path / "state") as (rs, rep, wal, state):
            for n in range(5):
                assert await rep.propose(put(b"k%d" % n, b"v")) is not None
            write = wal.write
            second: list[asyncio.Future[list[OpResult] | None]] = []

            def then_full(batch: WalBatch, *, sync: bool = True) -> None:
                write(batch, sync=sync)
                if not second:  # the first write: the next round applies it and appends this one
                    second.append(rep.propose(put(b"second", b"2")))
                    wal.faults.append_enospc = True

            monkeypatch.setattr(wal, "write", then_full)
            first = await asyncio.wait_for(rep.propose(put(b"first", b"1")), 5)  # answered early
            assert first is not None
            await eventually_async(lambda: rs.disk.full, 5, "the full disk to be noticed")
            wal.faults.append_enospc = False
            got = await asyncio.wait_for(second[0], 10)  # the retry writes it
            assert got is not None
            await asyncio.wait_for(rep.wait_applied(rep.raw.status().commit), 5)  # committed to LMDB
            assert state.get(b"first") == (b"1", first[0].version)
            assert state.get(b"second") == (b"2", got[0].version)
            assert rs.failed is None, rs.failed
            assert rs.executor.entries_applied == rs.executor.entries_committed - 1  # all but the retry's second go

    asyncio.run(main())
    failed = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "failed" in r.getMessage()]
    assert not failed, failed  # (the full disk itself is logged, and the held rounds handed back)
