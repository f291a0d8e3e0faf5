"""``python3 -m tools.simulator --seeds N [--start S] [--mutation NAME] [--workers W] [-v] [--coverage]``."""

from __future__ import annotations

import argparse
import sys

from .runner import main


def cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tools.simulator")
    ap.add_argument("--seeds", type=int, required=True)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--mutation", default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--coverage", action="store_true", help="branch coverage of node/raft over the run")
    a = ap.parse_args(argv)
    return main(a.seeds, a.start, a.mutation, a.workers, a.verbose, a.coverage)


if __name__ == "__main__":
    sys.exit(cli())
