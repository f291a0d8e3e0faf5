"""Known client bugs, each a one-method override of a workload: testing only.

They exist to prove that the nemesis's history checks can fail with a healthy cluster:
``tessera nemesis --client-mutation NAME`` runs the workload with the broken client, and
the run must fail (tests/nemesis/test_nemesis.py does, and anyone can reproduce it by hand).
:data:`MUTATIONS` is the one table of their names; the workloads load this module only when
a mutation is asked for. (The Raft core's own bugs are ``--raft-mutation``,
``node/raft/mutations.py``.)
"""

from __future__ import annotations

import contextlib

from router.client import AsyncClient, CasResult
from tools.nemesis.workloads import SetWorkload, Workload


class DoubleAppend(SetWorkload):
    """Every 10th list append that succeeds is written a second time, unrecorded and without
    the version check: what a retry that escaped deduplication would do."""

    appended: int = 0

    async def _append(self, client: AsyncClient, key: bytes, version: int, new: str) -> CasResult:
        res = await super()._append(client, key, version, new)
        if res.succeeded:
            self.appended += 1
            if self.appended % 10 == 0:
                elem = new.rsplit(",", 1)[-1]
                # Whether this lands or not, the history never hears of it (the bug).
                with contextlib.suppress(Exception):
                    await client.put(key, f"{new},{elem}".encode())
        return res


# name -> (the broken workload, the workload it breaks)
MUTATIONS: dict[str, tuple[type[Workload], str]] = {
    "double-append": (DoubleAppend, "set"),
}


def describe() -> dict[str, str]:
    """Name -> one line: what the broken client does (``--client-mutation``'s listing)."""
    return {name: f"({workload}) {' '.join((cls.__doc__ or '').split())}"
            for name, (cls, workload) in MUTATIONS.items()}


def workload_class(name: str, workload: str) -> type[Workload]:
    """The broken client ``name`` of ``workload``; ValueError if there is none."""
    if name not in MUTATIONS:
        raise ValueError(f"unknown client mutation {name!r}; known: {', '.join(MUTATIONS)}")
    cls, breaks = MUTATIONS[name]
    if breaks != workload:
        raise ValueError(f"client mutation {name!r} breaks the {breaks} workload, not {workload} "
                         f"(use --workload {breaks})")
    return cls
