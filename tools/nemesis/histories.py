"""The contract of the nemesis's histories, shared by whoever records, judges or names them.

The workloads (:mod:`tools.nemesis.workloads`) record histories, the history checks
(:mod:`tools.nemesis.history_checks`) judge them online and ``tessera check`` offline, and the
command line names the workloads: these are the facts they must agree on. Nothing is imported
here, so the command line's parser can read them for free.
"""

from __future__ import annotations

WORKLOADS = ("register", "set", "bank")  # what `tessera nemesis --workload` runs and `tessera check --model` reads
FINAL_READER = 1_000_000  # process id of a workload's reads after the final heal
SETUP_PROCESS = 999_999  # process id of the bank's initial deposit
CHECK_TIME_LIMIT_S = 120.0  # the linearizability search's bound, online and offline
