"""tools/bench_rounds.py: three real RaftStores in one loop, counted per write.

At one partition and one write per wave the writes do not overlap, so the counts are exact
facts of the protocol: each write is sent to both followers in an append of its own and each
follower acknowledges it; a new commit index rides on the next write's append instead of an
empty append of its own (docs/decisions.md D30), so there are not two appends more per write.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tools import bench_rounds


def test_one_write_at_a_time_costs_two_appends_and_two_acknowledgements(tmp_path: Path) -> None:
    r = asyncio.run(bench_rounds.run(str(tmp_path), partitions=1, batch=1, waves=60, warmup=5))
    assert r.writes == 60
    per = r.messages_per_write
    assert 2.0 <= per["APP"] < 2.5 and per["APP_RESP"] >= 2.0, r
    # Empty appends: at a tick (50 ms), to each follower no write's append told the last commit
    # index, so at most two per tick the waves took; an empty append per follower per write
    # (etcd's rule) would be two per write.
    ticks = r.seconds / 0.05 + 1
    assert per.get("APP (empty)", 0) * r.writes <= 2 * ticks, r
    assert 2 * ticks < r.writes, f"the waves took {r.seconds:.2f} s: too slow to tell the rules apart"
    assert r.rounds_per_write >= 3.0, r  # the leader proposes and applies, each follower persists
    assert r.cpu_us_per_write > 0 and r.wall_us_per_wave > 0


def test_the_command_prints_and_writes_its_result(tmp_path: Path, capsys: object) -> None:
    out = tmp_path / "r.json"
    assert bench_rounds.main(["--partitions", "2", "--batch", "3", "--waves", "5", "--warmup", "1",
                              "--json", str(out)]) == 0
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "2 partitions x 3 writes per wave, 5 waves (30 writes)" in printed
    assert "Raft messages per write: APP" in printed
    data = json.loads(out.read_text())
    assert data["writes"] == 30 and data["messages_per_write"]["APP"] > 0
