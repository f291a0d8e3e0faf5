"""``tessera nemesis``: one run = cluster + proxies + workload + fault schedule + checks.

Sequence: build the schedule from the seed (printed first, so even a run that hangs has told
you what it was going to do); start the proxy mesh, then a :class:`~tools.cluster.Cluster` in a
temporary directory whose nodes dial each other through the proxies and poll a fault file
each; set the workload up; run its workers and the schedule for ``duration`` seconds; stop the
workers; heal everything; wait for the cluster to be healthy (bounded); make the workload's
final reads; check. Exit 0 only when every check holds.

Recovery is measured per fault episode by probes (a write then a linearizable read in every
partition, see :func:`~tools.nemesis.checks.probe_writable`): "during" = from the inject to the
first moment every partition took a write with the fault still in force (availability under
the fault: failover time when a leader was hit), "after" = from the heal to every partition
taking writes again. For pauses and for partitions that cut one node off, the paused /
cut-off node is also asked directly (lease and linearizable reads, bypassing the client's
routing) for the probe's keys, the moment another leader acknowledged them and again at the
heal: it may refuse, but must never answer without them (:func:`~tools.nemesis.checks.stale_reads`).

Processes, proxies and the temporary directory are always cleaned up, also on Ctrl-C and
SIGTERM (``TESSERA_NEMESIS_KEEP=1`` keeps the directory, with every process's log, for
debugging).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TypeGuard, TypeVar

from common.logs import DEFAULT_LEVEL
from router.client.errors import RpcFailure
from tools.cluster import Cluster
from tools.nemesis import checks, histories, history_checks, schedule, workloads
from tools.nemesis.faults import Nemesis, write_fault_file
from tools.nemesis.proxy import ProxyNet

RECOVERY_BOUND_S = 30.0  # after the final heal: healthy within this, or the run fails
EPISODE_BOUND_S = 30.0  # after an episode's heal: writable again within this
KEEP_ENV = "TESSERA_NEMESIS_KEEP"
READY_TIMEOUT_S = 60.0
T = TypeVar("T")


@dataclass
class EpisodeReport:
    episode: int
    kind: str
    what: str = ""
    injected: float | None = None  # monotonic
    healed: float | None = None
    during: float | None = None  # seconds from inject until every partition took a write
    after: float | None = None  # seconds from heal until every partition took a write
    during_probe: asyncio.Task[checks.Probe] | None = None
    after_probe: asyncio.Task[checks.Probe] | None = None
    slow: dict[str, dict[int, float | None]] = field(default_factory=dict)  # probe -> partition -> s
    during_partial: checks.Probe | None = None  # the during probe's progress (read at the heal)
    stale: checks.StaleCheck | None = None
    stale_node: int = 0
    stale_tasks: list[asyncio.Task[checks.StaleCheck]] = field(default_factory=list)
    targets_reads: bool = False  # paused / cut-off node: read from it directly (stale-read check)
    moved: str = ""  # member: what the heal did (promotion, removal) and how long each phase took

    def line(self) -> str:
        held = "" if self.injected is None or self.healed is None else f", held {self.healed - self.injected:.2f} s"
        during = "no (not before the heal)" if self.during is None else f"{self.during:.2f} s after inject"
        after = "not measured" if self.healed is None else (
            f"NOT within {EPISODE_BOUND_S:g} s" if self.after is None else f"{self.after:.2f} s after heal"
        )
        line = (f"#{self.episode:<3d} {self.kind:<9s} {self.what}{held}\n"
                f"       writable under the fault: {during}; recovered: {after}")
        if self.moved:
            line += f"\n       move: {self.moved}"
        if self.stale is not None:
            line += (f"\n       stale-read check on node {self.stale_node}: {self.stale.asked} direct reads "
                     f"(lease and linearizable, of data written elsewhere meanwhile), {self.stale.answered} served, "
                     f"{len(self.stale.violations)} stale")
        for which, seconds in self.slow.items():
            shown = ", ".join(f"{pid}: {'-' if s is None else f'{s:.2f} s'}" for pid, s in sorted(seconds.items()))
            line += f"\n       per partition ({which}): {shown}"
        return line


@dataclass
class Outcome:
    verdicts: list[history_checks.Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures outside the history checks

    @property
    def ok(self) -> bool:
        return not self.problems and all(v.ok for v in self.verdicts)


def usage_problem(
    workload: str,
    faults: list[str] | tuple[str, ...],
    *,
    nodes: int,
    raft_mutation: str | None = None,
    client_mutation: str | None = None,
    history_path: str | None = None,
) -> str | None:
    """Why these arguments cannot make a run, in one sentence, or None.

    Checked before anything starts, so that a bad argument costs no cluster: the workload,
    the fault kinds, the cluster size, the mutations, and that ``history_path`` can be
    written (it is opened for appending, and removed again if that created it).
    """
    if workload not in workloads.WORKLOADS:
        return f"unknown workload {workload!r}; choose from {', '.join(workloads.WORKLOADS)}"
    unknown = [f for f in faults if f not in schedule.KINDS]
    if unknown:
        return f"unknown fault kinds {unknown}; choose from {', '.join(schedule.KINDS)}"
    why = schedule.check_nodes(nodes, faults)
    if why is not None:
        return why
    if raft_mutation is not None:
        from node.raft import known_mutations  # test-only table, loaded only when asked for

        if raft_mutation not in known_mutations():
            return f"unknown mutation {raft_mutation!r}; known: {', '.join(known_mutations())}"
    if client_mutation is not None:
        from tools.nemesis.client_mutations import workload_class  # test-only code

        try:
            workload_class(client_mutation, workload)
        except ValueError as exc:
            return str(exc)
    if history_path is not None:
        existed = os.path.lexists(history_path)
        try:
            with open(history_path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            return f"cannot write the history to {history_path}: {exc.strerror or exc}"
        if not existed:
            os.remove(history_path)
    return None


def run(
    duration: float,
    faults: list[str] | tuple[str, ...],
    workload: str,
    seed: int | None = None,
    history_path: str | None = None,
    *,
    nodes: int | None = None,
    partitions: int = 4,
    workers: int = 10,
    checker_time_limit_s: float = histories.CHECK_TIME_LIMIT_S,
    raft_mutation: str | None = None,
    client_mutation: str | None = None,
    log_level: str = DEFAULT_LEVEL,
) -> int:
    """Run the nemesis; 0 when every check holds, 1 otherwise (130 when interrupted).

    ``nodes`` defaults to 3, or 4 when ``member`` is among the faults. ``raft_mutation``
    (testing) is passed to every node as ``--raft-mutation``, and ``client_mutation``
    (testing) runs the workload's deliberately broken client
    (:mod:`tools.nemesis.client_mutations`): a run against a known bug, which must then fail.
    ``log_level`` is every node's and the router's ``--log-level``. Arguments that cannot
    make a run (:func:`usage_problem`) are a ValueError, raised before anything starts.
    The verdict is printed before the history is written to ``history_path``.
    """
    if nodes is None:
        nodes = schedule.default_nodes(faults)
    problem = usage_problem(workload, faults, nodes=nodes, raft_mutation=raft_mutation,
                            client_mutation=client_mutation, history_path=history_path)
    if problem is not None:
        raise ValueError(problem)
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    sched = schedule.build(seed, duration, list(faults), nodes=nodes, partitions=partitions)
    mutated = f", nodes with Raft mutation {raft_mutation!r}" if raft_mutation else ""
    mutated += f", client mutation {client_mutation!r}" if client_mutation else ""
    routers = schedule.default_routers(faults)
    print(f"nemesis: seed {seed}, workload {workload}, {duration:g} s, {nodes} nodes, {partitions} partitions, "
          f"{routers} router{'s' if routers > 1 else ''}{mutated}", flush=True)
    print(sched.describe(), flush=True)
    missing = sched.missing()
    if missing:
        print(f"nemesis: warning: {duration:g} s leaves no room for: {', '.join(missing)}", flush=True)
    r = _Run(sched, workload, history_path, nodes, partitions, workers, checker_time_limit_s, raft_mutation,
             client_mutation, log_level)
    try:
        return asyncio.run(r.main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        signame = r.stopped_by or "SIGINT"
        print(f"nemesis: stopped by {signame} (seed {seed}); processes, proxies and files cleaned up",
              file=sys.stderr, flush=True)
        return 143 if signame == "SIGTERM" else 130


def _finished(task: asyncio.Task[T] | None) -> TypeGuard[asyncio.Task[T]]:
    """Done with a result (not cancelled, not failed)."""
    return task is not None and task.done() and not task.cancelled() and task.exception() is None


class _Run:
    def __init__(self, sched: schedule.Schedule, workload: str, history_path: str | None,
                 nodes: int, partitions: int, workers: int, checker_time_limit_s: float,
                 raft_mutation: str | None = None, client_mutation: str | None = None,
                 log_level: str = DEFAULT_LEVEL) -> None:
        self.sched = sched
        self.workload_name = workload
        self.history_path = history_path
        self.nodes = nodes
        self.partitions = partitions
        self.workers = workers
        self.checker_time_limit_s = checker_time_limit_s
        self.raft_mutation = raft_mutation
        self.client_mutation = client_mutation
        self.log_level = log_level
        self.root = ""
        self.cluster: Cluster | None = None
        self.net: ProxyNet | None = None
        self.episodes: dict[int, EpisodeReport] = {}
        self.step_errors: list[str] = []
        self.probe_keys: dict[int, bytes] = {}
        self.parts: list[workloads.PartitionRange] = []
        self.fault_files: dict[int, str] = {}
        self.prober: checks.Prober | None = None
        self.stopped_by = ""
        self._starting: asyncio.Future | None = None

    # -- the run ---------------------------------------------------------------------------

    async def main(self) -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None

        def stop(signame: str) -> None:
            self.stopped_by = signame
            task.cancel()  # every finally below runs: workers, proxies, processes, files

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
        self.root = tempfile.mkdtemp(prefix="tessera-nemesis-")
        pending: list[asyncio.Task] = []
        try:
            return await self._main(pending)
        except Exception as exc:
            print(f"nemesis: FAILED, seed {self.sched.seed}: the run itself broke: {exc!r}", flush=True)
            print(self.sched.describe(), flush=True)
            self._log_excerpts()
            return 1
        finally:
            if self.prober is not None:
                with contextlib.suppress(Exception):
                    await self.prober.close()
            if self._starting is not None:
                # Interrupted while the processes were being spawned: let that finish, so
                # that stopping below sees every process.
                with contextlib.suppress(BaseException):
                    await self._starting
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(BaseException):
                    await t
            self._cleanup()

    def _cleanup(self) -> None:
        if self.cluster is not None:
            # A paused process ignores SIGTERM until continued.
            for p in [*self.cluster.node_procs.values(), *self.cluster.router_procs.values()]:
                if (popen := p.running) is not None:
                    with contextlib.suppress(OSError):
                        popen.send_signal(signal.SIGCONT)
            self.cluster.stop(grace=5.0)
        if self.net is not None:
            self.net.close()
        if os.environ.get(KEEP_ENV):
            print(f"nemesis: kept {self.root} ({KEEP_ENV} is set)", flush=True)
        elif self.root:
            shutil.rmtree(self.root, ignore_errors=True)

    async def _main(self, pending: list[asyncio.Task]) -> int:
        sched = self.sched
        outcome = Outcome()
        await self._start_cluster()
        assert self.cluster is not None and self.cluster.router is not None and self.net is not None
        router = self.cluster.router_addresses  # every router: clients find the leader
        rec = workloads.Recorder()
        ctx = workloads.Context(router, self.parts, rec, sched.seed)
        wl = workloads.make(self.workload_name, ctx, workers=self.workers, mutation=self.client_mutation)
        await wl.setup()
        assert self.prober is not None
        nem = Nemesis(self.cluster, self.net, self.fault_files, [p.id for p in self.parts], log=self._log)

        stop = asyncio.Event()
        t0 = ctx.t0 = time.monotonic()
        worker_tasks = [asyncio.ensure_future(wl.worker(w, stop)) for w in range(self.workers)]
        pending.extend(worker_tasks)
        executor = asyncio.ensure_future(self._execute(nem, t0))
        pending.append(executor)
        await asyncio.sleep(max(0.0, t0 + sched.duration - time.monotonic()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(executor), 30)
        if not executor.done():
            outcome.problems.append("the fault schedule did not finish in time")
            executor.cancel()
        elif executor.exception() is not None:
            outcome.problems.append(f"the fault executor crashed: {executor.exception()!r}")
        stop.set()
        done, late = await asyncio.wait(worker_tasks, timeout=ctx.op_timeout * 3 + 5)
        for t in late:
            t.cancel()
        for t in done:
            if t.exception() is not None:
                outcome.problems.append(f"a workload worker crashed: {t.exception()!r}")
        workload_end = time.monotonic()

        # Anything that died without being killed is a crash.
        for n, p in sorted(self.cluster.node_procs.items()):
            if n not in nem.killed and p.popen is not None and p.popen.poll() is not None:
                outcome.problems.append(f"node {n} exited by itself with status {p.popen.returncode}")
                nem.killed.add(n)
        for i, p in sorted(self.cluster.router_procs.items()):
            if i not in nem.routers_killed and p.popen is not None and p.popen.poll() is not None:
                outcome.problems.append(f"router {i} exited by itself with status {p.popen.returncode}")
                nem.routers_killed.add(i)
                nem.routers_paused.discard(i)

        # Heal, then the cluster must come back whole within the bound.
        healed = await nem.heal_all()
        await nem.close()
        heal_time = time.monotonic()

        async def settle_episode_probes() -> None:
            for rep in self.episodes.values():
                if rep.after_probe is not None and not rep.after_probe.done():
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(rep.after_probe), EPISODE_BOUND_S)
                if rep.during_probe is not None and not rep.during_probe.done():
                    rep.during_probe.cancel()

        # The last episodes' probes and the final one wait for the same recovery: at once, so a
        # partition that never recovers costs one bound, not two.
        _, probe = await asyncio.gather(
            settle_episode_probes(),
            checks.probe_writable(self.prober, self._probe_keys("final"), RECOVERY_BOUND_S, "final"),
        )
        health = await checks.wait_healthy(router, max(1.0, RECOVERY_BOUND_S - (time.monotonic() - heal_time)))
        recovered = time.monotonic() - heal_time
        if probe.worst is None:
            stuck = [pid for pid, s in probe.seconds.items() if s is None]
            outcome.problems.append(f"partitions {stuck} took no write within {RECOVERY_BOUND_S:g} s of the final heal")
        outcome.problems += [f"probe: {v}" for v in probe.violations]
        if not health.ok:
            outcome.problems.append(f"not healthy {RECOVERY_BOUND_S:g} s after the final heal: {health.detail}")
        for rep in self.episodes.values():
            if _finished(rep.after_probe):
                res = rep.after_probe.result()
                outcome.problems += [f"probe after #{rep.episode}: {v}" for v in res.violations]
                if res.worst is None:
                    outcome.problems.append(
                        f"#{rep.episode} {rep.kind}: not writable within {EPISODE_BOUND_S:g} s of its heal")
            if _finished(rep.during_probe):
                during = rep.during_probe.result()
                outcome.problems += [f"probe during #{rep.episode}: {v}" for v in during.violations]
        for rep in self.episodes.values():
            if rep.stale_tasks:
                await asyncio.gather(*rep.stale_tasks, return_exceptions=True)
            if rep.stale is not None:
                outcome.problems += [f"#{rep.episode} {rep.kind}: STALE READ: {v}" for v in rep.stale.violations]
        outcome.problems += self.step_errors
        outcome.problems += nem.problems

        # The workload's final reads, then the checks.
        try:
            await wl.final()
        except Exception as exc:
            outcome.problems.append(f"final read failed: {exc!r}")
        check_t0 = time.monotonic()
        outcome.verdicts = await asyncio.to_thread(
            history_checks.check_workload, self.workload_name, rec.ops, self.checker_time_limit_s
        )
        check_s = time.monotonic() - check_t0
        self._summary(outcome, wl, rec, healed, health, probe, recovered, workload_end - t0, check_s)
        if self.history_path:
            # After the verdict: a run's outcome is never lost to a history that failed to write.
            try:
                rec.write(self.history_path)
            except OSError as exc:
                print(f"nemesis: could not write the history to {self.history_path}: {exc}", flush=True)
                return 1
            print(f"nemesis: history written to {self.history_path} ({len(rec.ops)} events)", flush=True)
        return 0 if outcome.ok else 1

    async def _start_cluster(self) -> None:
        root = self.root
        stores = list(range(1, self.nodes + 1))
        self.net = ProxyNet(stores, self._node_address, self._node_peer_address)
        self.net.start()
        os.makedirs(os.path.join(root, "nemesis"), exist_ok=True)
        peer_files: dict[int, str] = {}
        for n in stores:
            peer_files[n] = os.path.join(root, "nemesis", f"peers{n}.json")
            with open(peer_files[n], "w") as f:
                json.dump(self.net.peer_map(n), f)
            self.fault_files[n] = os.path.join(root, "nemesis", f"faults{n}.json")
            write_fault_file(self.fault_files[n], {})
        self.cluster = Cluster(
            root,
            nodes=self.nodes,
            partitions=self.partitions,
            routers=schedule.default_routers(self.sched.faults),
            **schedule.router_liveness(self.sched.faults),
            log_level=self.log_level,
            node_args=lambda i: [
                "--peer-addresses", peer_files[i], "--fault-file", self.fault_files[i],
                *(["--raft-mutation", self.raft_mutation] if self.raft_mutation else []),
            ],
        )
        self._starting = asyncio.ensure_future(asyncio.to_thread(self.cluster.start))
        await asyncio.shield(self._starting)
        router = self.cluster.router_addresses
        # Cluster.wait_ready would do, but it blocks a thread for up to its timeout, and
        # asyncio.run waits for that thread at exit: Ctrl-C during start-up would hang.
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer from the router"
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ready after {READY_TIMEOUT_S:g} s: {last}")
            try:
                descriptors, _, _ = await checks.cluster_status(router)
            except RpcFailure as exc:
                last = f"router: {exc.code.name}"
                await asyncio.sleep(0.1)
                continue
            if len(descriptors) >= self.partitions and all(p.leader_store_id for p in descriptors):
                break
            led = sum(1 for p in descriptors if p.leader_store_id)
            last = f"{len(descriptors)} partitions, {led} with a leader"
            await asyncio.sleep(0.1)
        self.parts = sorted(
            (workloads.PartitionRange(p.id, p.start, p.end) for p in descriptors), key=lambda p: p.start
        )
        self.prober = checks.Prober(router)
        probe = await checks.probe_writable(
            self.prober, self._probe_keys("ready"), deadline - time.monotonic(), "ready"
        )
        if probe.worst is None:
            raise RuntimeError(f"cluster not ready after {READY_TIMEOUT_S:g} s: a partition took no write")
        # Placement's own start-up moves (replicas onto a fourth store) done before the first
        # fault: a schedule that began mid-move found a partition on four stores and nothing
        # to move, and how far the moves had got depended on the machine's speed that day.
        settled = await checks.wait_healthy(router, max(1.0, deadline - time.monotonic()), balanced=True)
        if not settled.ok:
            raise RuntimeError(f"cluster not settled after {READY_TIMEOUT_S:g} s: {settled.detail}")

    def _node_address(self, store: int) -> str | None:
        cluster = self.cluster
        if cluster is None or store not in cluster.node_procs:
            return None
        return cluster.node_procs[store].address or None

    def _node_peer_address(self, store: int) -> str | None:
        cluster = self.cluster
        if cluster is None or store not in cluster.node_procs:
            return None
        return cluster.node_procs[store].peer_address or None

    def _probe_keys(self, tag: str) -> dict[int, bytes]:
        return {p.id: p.prefix + b"nemesis/probe/" + tag.encode() for p in self.parts}

    def _log(self, line: str) -> None:
        print(line, flush=True)

    # -- the schedule --------------------------------------------------------------------

    async def _execute(self, nem: Nemesis, t0: float) -> None:
        assert self.prober is not None
        for step in self.sched.steps:
            await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
            rep = self.episodes.get(step.episode)
            if rep is not None and rep.targets_reads and step.action in ("heal-network", "finish-move", "finish-split"):
                await self._stale_reads(rep, nem)  # the cut-off node, before it rejoins
            try:
                applied = await nem.apply(step)
            except Exception as exc:
                self.step_errors.append(f"step {step} failed: {exc!r}")
                self._log(f"nemesis: {step.at:7.2f}s #{step.episode} {step.action} FAILED: {exc!r}")
                continue
            if step.action == "transfer":
                continue
            rep = self.episodes.setdefault(step.episode, EpisodeReport(step.episode, step.kind))
            if schedule.ACTIONS.get(step.action) is not None:  # an inject
                rep.what = applied.detail
                rep.injected = applied.finished
                rep.targets_reads = bool(applied.nodes) and (
                    step.action == "pause" or step.param("shape") in ("majority", "leader")
                    # the voter cut off with the learner
                    or (step.action == "add-replica" and bool(step.param("split")))
                    # the split partition's leader, cut off from everyone
                    or (step.action == "split" and step.param("cut") == "leader")
                )
                if rep.targets_reads:
                    rep.stale_node = applied.nodes[0]
                    rep.stale = checks.StaleCheck()
                rep.during_probe = asyncio.ensure_future(self._timed(rep, "during", f"e{step.episode}d"))
            else:
                rep.healed = applied.finished
                if step.action == "finish-move":
                    rep.moved = applied.detail
                if rep.during_probe is not None and not rep.during_probe.done():
                    rep.during_probe.cancel()
                rep.after_probe = asyncio.ensure_future(self._timed(rep, "after", f"e{step.episode}a"))
                if step.action == "resume":
                    await self._stale_reads(rep, nem)  # the paused node, just woken

    async def _stale_reads(self, rep: EpisodeReport, nem: Nemesis) -> None:
        """Read straight from the node the episode paused or cut off, the keys the during
        probe wrote (and had acknowledged) meanwhile; see :func:`checks.stale_reads`. Done
        at the heal (a paused node just continued; a cut-off one still cut off)."""
        partial = rep.during_partial
        if rep.stale is None or partial is None or self.cluster is None:
            return
        keys = self._probe_keys(f"e{rep.episode}d")
        written = {pid: keys[pid] for pid, s in partial.seconds.items() if s is not None}
        if written:
            await checks.stale_reads(self.cluster.node_address(rep.stale_node), written, f"e{rep.episode}d/",
                                     out=rep.stale)

    def _early_stale_read(self, rep: EpisodeReport, pid: int) -> None:
        """The moment another leader acknowledged a write in partition ``pid``, ask the
        paused / cut-off node for it: the window where an old leader's lease must be over.
        (A paused node answers, if at all, once continued: hence the long timeout.)"""
        if rep.stale is None or self.cluster is None:
            return
        key = self._probe_keys(f"e{rep.episode}d")[pid]
        rep.stale_tasks.append(asyncio.ensure_future(checks.stale_reads(
            self.cluster.node_address(rep.stale_node), {pid: key}, f"e{rep.episode}d/",
            timeout=schedule.HOLD["pause"][1] + 2, out=rep.stale,
        )))

    async def _timed(self, rep: EpisodeReport, which: str, tag: str) -> checks.Probe:
        assert self.prober is not None
        partial = checks.Probe({})
        if which == "during":
            rep.during_partial = partial
        try:
            early = (lambda pid: self._early_stale_read(rep, pid)) if which == "during" and rep.targets_reads else None
            res = await checks.probe_writable(self.prober, self._probe_keys(tag), EPISODE_BOUND_S, tag, partial, early)
        except asyncio.CancelledError:
            # Cancelled at the heal: keep what the partitions that did take a write showed.
            rep.slow[which] = dict(partial.seconds)
            raise
        setattr(rep, which, res.worst)
        if res.worst is None or res.worst > 1.0:
            rep.slow[which] = dict(res.seconds)
        return res

    # -- checks and the report ----------------------------------------------------------

    def _summary(self, outcome: Outcome, wl: workloads.Workload, rec: workloads.Recorder, healed: list[str],
                 health: checks.Health, probe: checks.Probe, recovered: float, ran_s: float, check_s: float) -> None:
        sched = self.sched
        p = lambda s="": print(s, flush=True)  # noqa: E731
        p()
        p(f"nemesis: {self.workload_name} workload ran {ran_s:.1f} s, {self.workers} workers")
        counts = rec.counts()
        p("  operations: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        if wl.errors:
            p("  client errors: " + ", ".join(f"{k} {v}" for k, v in wl.errors.most_common()))
            for kind, samples in wl.error_samples.items():
                if kind not in ("DeadlineExceeded",):
                    for sample in samples:
                        p(f"    {kind}: {sample}")
        p("fault episodes (recovery = every partition took a write):")
        for rep in sorted(self.episodes.values(), key=lambda r: r.episode):
            p("  " + rep.line())
        transfers = sum(1 for s in sched.steps if s.action == "transfer")
        if transfers:
            p(f"  plus {transfers} leadership transfer(s) during the run")
        p(f"final heal: {'; '.join(healed) or 'nothing to heal'}")
        worst = probe.worst
        p(f"  every partition writable {'NOT within bound' if worst is None else f'{worst:.2f} s'} after the heal; "
          f"healthy (leader, {schedule.REPLICAS} caught-up voters, stores up): {'yes' if health.ok else 'NO'} "
          f"{recovered:.2f} s after the heal (bound {RECOVERY_BOUND_S:g} s)")
        p(f"checks ({check_s:.1f} s):")
        for v in outcome.verdicts:
            p("  " + v.report().replace("\n", "\n  "))
        for problem in outcome.problems:
            p(f"  PROBLEM: {problem}")
        if outcome.ok:
            p(f"nemesis: OK (seed {sched.seed})")
            return
        p()
        p(f"nemesis: FAILED, seed {sched.seed}")
        p(sched.describe())
        extra = "" if sched.nodes == schedule.default_nodes(sched.faults) else f" --nodes {sched.nodes}"
        if self.raft_mutation:
            extra += f" --raft-mutation {self.raft_mutation}"
        if self.client_mutation:
            extra += f" --client-mutation {self.client_mutation}"
        p(f"reproduce the schedule: tessera nemesis --workload {self.workload_name} --duration {sched.duration:g} "
          f"--faults {','.join(sched.faults)} --seed {sched.seed}{extra}")
        self._log_excerpts()

    def _log_excerpts(self) -> None:
        """Errors from the processes' logs (the directory is removed afterwards)."""
        logs = os.path.join(self.root, "logs")
        if not os.path.isdir(logs):
            return
        for name in sorted(os.listdir(logs)):
            with open(os.path.join(logs, name), errors="replace") as f:
                lines = [line.rstrip() for line in f if "ERROR" in line or "Traceback" in line or "Error" in line]
            if lines:
                print(f"--- {name}: {len(lines)} error line(s), last ones:", flush=True)
                for line in lines[-10:]:
                    print(f"  {line[:300]}", flush=True)
