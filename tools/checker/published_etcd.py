"""Check the published Jepsen etcd register histories against their known verdicts.

On demand, never in ``make test`` (the files are not ours and are not in the repository)::

    python -m tools.checker.published_etcd DIR     # DIR holds etcd_000.log ... etcd_102.log

The histories are Jepsen's etcd test logs as Knossos published them and Porcupine reuses them
as test data (``test_data/jepsen/etcd_NNN.log`` in github.com/anishathalye/porcupine). Their
verdicts are Porcupine's (``porcupine_test.go``): the ones in :data:`LINEARIZABLE` are
linearizable, every other one is not, except ``etcd_095.log``, which has none (that test's
cluster failed to start). Prints one line per file (verdict, expected, search steps, and
whether the pre-pass decided it); exit 0 when every verdict matches, 1 otherwise, 2 when DIR
holds none of the files.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from tools.checker.jepsen_etcd import read_jepsen_etcd
from tools.checker.linearizability import check_history

LINEARIZABLE = frozenset({2, 5, 7, 18, 25, 31, 38, 45, 48, 49, 51, 53, 56, 67, 75, 76, 80, 87, 92, 98, 100, 101, 102})
NO_VERDICT = frozenset({95})
NAME = re.compile(r"etcd_(\d{3})\.log$")


def expected(number: int) -> bool | None:
    """Porcupine's verdict on ``etcd_NNN.log`` (None: it has none)."""
    return None if number in NO_VERDICT else number in LINEARIZABLE


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    files = sorted(p for p in Path(argv[0]).glob("etcd_*.log") if NAME.search(p.name))
    if not files:
        print(f"no etcd_NNN.log files in {argv[0]}", file=sys.stderr)
        return 2
    wrong = 0
    for path in files:
        number = int(NAME.search(path.name).group(1))  # type: ignore[union-attr]  # matched above
        want = expected(number)
        started = time.perf_counter()
        result = check_history(read_jepsen_etcd(path))
        seconds = time.perf_counter() - started
        steps = sum(s.steps for s in result.stats.values())
        how = "pre-pass" if any(f.reason for f in result.failures) else f"{steps} steps"
        mark = "" if want is None or result.ok is want else "  MISMATCH"
        wrong += bool(mark)
        print(f"{path.name}: linearizable {result.ok}, Porcupine {want}, {how}, {seconds:.3f} s{mark}")
    print(f"{len(files)} histories, {wrong} verdicts differ from Porcupine's")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
