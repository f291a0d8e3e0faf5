"""How many proposals per second the consensus core alone commits.

An in-process 3-replica group on :class:`MemoryStorage`, messages handed
over directly, no disk and no network: what is left is the cost of the
core itself (building entries and messages, the log, progress tracking,
quorum arithmetic, the Ready/advance cycle).  Each round the leader
proposes ``--batch`` commands as one batch, then every replica handles its
Ready until the round is committed and applied everywhere.

    python -m tools.bench_raft_core [--seconds 5] [--batch 1 16 256] [--value-size 128]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from node.raft import Config, ConfState, MemoryStorage, Message, RawNode, Snapshot, SnapshotMeta


def _group(n: int) -> tuple[dict[int, RawNode], dict[int, MemoryStorage]]:
    voters = frozenset(range(1, n + 1))
    nodes, storages = {}, {}
    for i in voters:
        st = MemoryStorage()
        st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=voters))))
        storages[i] = st
        nodes[i] = RawNode(Config(id=i, applied=1), st, random.Random(i))
    return nodes, storages


def _pump(nodes: dict[int, RawNode], storages: dict[int, MemoryStorage]) -> int:
    """Run Ready cycles until quiet; returns how many normal entries the leader applied."""
    applied = 0
    while True:
        inbox: list[Message] = []
        busy = False
        for i, node in nodes.items():
            if not node.has_ready():
                continue
            busy = True
            rd = node.ready()
            st = storages[i]
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            inbox.extend(rd.messages_before_persist)
            inbox.extend(rd.messages_after_persist)
            if node.is_leader:
                applied += sum(1 for e in rd.committed_entries if e.data)
            node.advance(rd)
        for m in inbox:
            nodes[m.dst].step(m)
        if not busy and not inbox:
            return applied


def run(seconds: float, batch: int, value_size: int, replicas: int = 3) -> dict[str, float]:
    nodes, storages = _group(replicas)
    nodes[1].campaign()
    _pump(nodes, storages)
    leader = nodes[1]
    assert leader.is_leader
    payload = [bytes(value_size)] * batch
    committed = 0
    rounds = 0
    # Compact now and then so memory stays flat on long runs.
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        leader.propose_batch(payload)
        committed += _pump(nodes, storages)
        rounds += 1
        if rounds % 200 == 0:
            for i, node in nodes.items():
                applied = node.applied
                st = storages[i]
                if applied - st.first_index() > 10_000:
                    st.create_snapshot(applied, node.conf_state, b"")
                    st.compact(applied - 1000)
    elapsed = time.perf_counter() - start
    return {
        "batch": batch,
        "replicas": replicas,
        "value_size": value_size,
        "seconds": round(elapsed, 3),
        "proposals": committed,
        "proposals_per_s": round(committed / elapsed, 1),
        "rounds_per_s": round(rounds / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 256], help="proposals per round")
    p.add_argument("--value-size", type=int, default=128, help="bytes per proposal")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = p.parse_args(argv)
    for b in args.batch:
        if b <= 0:
            p.error("--batch values must be positive")
        r = run(args.seconds, b, args.value_size, args.replicas)
        if args.json:
            print(json.dumps(r))
        else:
            print(
                f"batch {b:5d}: {r['proposals_per_s']:>10,.0f} proposals/s committed "
                f"({r['rounds_per_s']:,.0f} rounds/s, {r['replicas']} replicas, {args.value_size} B values)"
            )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
