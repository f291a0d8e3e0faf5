"""Every place where the consensus core refuses something, for ``tessera simulate --coverage``.

Read off ``node/raft/`` by hand: each entry names the statement that runs only when the core
refuses a vote, an append (or snapshot), a read, a conf change, a commit, a transfer, a
proposal, or its own leadership.  A refusal is *taken* when that statement ran during the
measured seeds (its line is in the coverage data).  Statements are found by function and text,
not line number, so the table survives edits around them; a test checks every entry still
finds exactly one line, and that line is a refusal (a raise, a return or a rejecting send).

Two more lists say what the table leaves out on purpose:

* :data:`ASSERTIONS`: refusals that fire only when Raft's safety is already broken (a leader
  rewriting committed entries, a persisted commit beyond the log); a correct run never takes
  them, and the simulator's invariants report the broken property first;
* :data:`UNREACHABLE`: defensive branches that no input through :class:`~node.raft.RawNode`
  can reach while the core validates as it does, with the reason.

Statement coverage cannot tell *why* a multi-part condition failed (``_maybe_commit``'s
``return False`` runs whether the quorum index is old news or from an earlier term); where
that matters the entry says so.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "node" / "raft"


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # vote, append, commit, read, conf, transfer, proposal, lead
    file: str  # in node/raft
    function: str  # qualified name, e.g. "Raft.step"
    stmt: str  # the start of the refusing statement's first line, stripped
    what: str
    nth: int = 0  # which statement starting so in that function (0: the first)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.function}"


R = Refusal

REFUSALS: tuple[Refusal, ...] = (
    # -- votes and campaigns --
    R("vote", "raft.py", "Raft.step",
      "return  # a live leader", "vote request of a higher term ignored: a leader may still hold its lease"),
    R("vote", "raft.py", "Raft.step", "self._send(Message(MT.PRE_VOTE_RESP", "pre-vote of a lower term rejected"),
    R("vote", "raft.py", "Raft.step",
      "return", "message of a lower term (a stale vote request, answer, TimeoutNow) dropped", nth=1),
    R("vote", "raft.py", "Raft._handle_vote_request",
      "self._send(Message(resp, self.id, m.src, term=self.term, reject=True))",
      "vote or pre-vote rejected: voted for another, knows a leader, or the candidate's log is behind"),
    R("vote", "raft.py", "Raft._step_candidate",
      "self.become_follower(self.term, NONE)", "campaign lost: a majority rejected it"),
    R("vote", "raft.py", "Raft._hup",
      "return", "campaign refused: not a voter (learner, removed) or a snapshot not yet persisted"),
    R("vote", "raft.py", "Raft._hup", "return", "campaign refused: a committed conf change is not applied yet", nth=1),
    # -- appends and snapshots --
    R("append", "raft.py", "Raft.step",
      "self._send(Message(MT.APP_RESP", "append or heartbeat of a deposed leader answered with the newer term"),
    R("append", "raft.py", "Raft._handle_append",
      "self._send(Message(MT.APP_RESP", "append below the commit index: answered with the commit index"),
    R("append", "raft.py", "Raft._handle_append", "hint = self.log.find_conflict_by_term",
      "append whose previous entry does not match rejected, with a back-off hint"),
    R("append", "raft.py", "Raft._restore", "return False", "snapshot at or below the commit index refused"),
    R("append", "raft.py", "Raft._restore",
      "self.log.commit_to(meta.index)", "snapshot of entries already held: only the commit index moves"),
    R("append", "raft.py", "Raft._step_leader",
      "return", "message from a replica outside the configuration ignored", nth=1),
    R("append", "raft.py", "Raft._step_leader", "return", "append acknowledgement that is old news ignored", nth=3),
    R("append", "progress.py", "Progress.maybe_decr_to",
      "return False", "stale rejection ignored (replicating, already matched there)"),
    R("append", "progress.py", "Progress.maybe_decr_to",
      "return False", "stale rejection ignored (probing, not the probe in flight)", nth=1),
    R("append", "raft.py", "Raft._maybe_send_append",
      "return False", "no append to a paused peer (probe in flight, window full, snapshot in flight)"),
    R("append", "raft.py", "Raft._send_snapshot", "return False", "no snapshot to a peer not heard from lately"),
    R("append", "raft.py", "Raft._send_snapshot",
      "return False", "no snapshot while the storage cannot make one", nth=1),
    R("append", "raft.py", "Raft.report_snapshot", "return", "snapshot report for a peer not waiting on one ignored"),
    R("append", "log.py", "RaftLog.stable_to", "return", "persistence report for entries already stable ignored"),
    R("append", "log.py", "RaftLog.stable_to",
      "return", "persistence report for entries replaced since ignored", nth=1),
    # -- commits --
    R("commit", "raft.py", "Raft._maybe_commit", "return False",
      "commit refused: the quorum index is not past the commit index, or is an earlier term's entry"),
    # -- reads --
    R("read", "raft.py", "Raft.read_index",
      "raise NotLeaderError", "read on a candidate, or on a follower that knows no leader"),
    R("read", "raft.py", "Raft._handle_read",
      "self._deferred_reads.append", "read before the leader committed in its term: deferred"),
    R("read", "raft.py", "Raft._release_deferred_reads",
      "return", "deferred reads stay deferred until an entry of the term commits"),
    R("read", "raft.py", "Raft.lease_valid",
      "return False", "lease refused: not leading, a transfer under way, or forfeited by one"),
    R("read", "raft.py", "Raft.lease_valid",
      "return False", "lease refused: no quorum acknowledged a stamp yet", nth=1),
    R("read", "rawnode.py", "RawNode.lease_read_index",
      "return None", "lease fast path refused (no lease, or nothing committed in the term)"),
    R("read", "readonly.py", "ReadOnly.ack",
      "return None", "heartbeat answer for an unknown or already released read round ignored"),
    # -- conf changes --
    R("conf", "raft.py", "Raft.propose_conf_change", "raise ProposalDroppedError(\"a configuration change",
      "conf change while another is being applied"),
    R("conf", "raft.py", "Raft.propose_conf_change",
      "raise ProposalDroppedError(str(exc))", "conf change the configuration does not allow"),
    R("conf", "raft.py", "Raft.propose_conf_change",
      "raise ProposalDroppedError(", "voter added without joining as a learner first", nth=2),
    R("conf", "raft.py", "Raft.propose_conf_change",
      "raise ProposalDroppedError(", "learner promoted before it caught up", nth=3),
    R("conf", "confchange.py", "apply_conf_change",
      "raise ConfChangeError(\"configuration is joint", "change while joint"),
    R("conf", "confchange.py", "apply_conf_change",
      "raise ConfChangeError(\"removing every voter", "simple change removing every voter"),
    R("conf", "confchange.py", "apply_conf_change",
      "raise ConfChangeError(\"removing every voter", "joint change removing every voter", nth=1),
    R("conf", "confchange.py", "leave_joint", "raise ConfChangeError", "leave-joint outside a joint configuration"),
    R("conf", "confchange.py", "_apply_changes", "raise ConfChangeError(f\"invalid node id", "change naming node id 0"),
    # -- transfers --
    R("transfer", "raft.py", "Raft.transfer_leader", "raise NotLeaderError", "transfer asked of a non-leader"),
    R("transfer", "raft.py", "Raft.transfer_leader",
      "self._abort_transfer()", "transfer to itself: any transfer under way abandoned"),
    R("transfer", "raft.py", "Raft.transfer_leader",
      "raise ProposalDroppedError", "transfer to a learner or a non-member"),
    R("transfer", "raft.py", "Raft.transfer_leader",
      "return", "transfer to the target already being transferred to", nth=1),
    R("transfer", "raft.py", "Raft._tick_heartbeat",
      "self._abort_transfer()", "transfer abandoned after an election timeout"),
    R("transfer", "raft.py", "Raft._adopt_conf",
      "self._abort_transfer()", "transfer abandoned: the target stopped being a voter"),
    # -- proposals --
    R("proposal", "raft.py", "Raft._check_can_propose", "raise NotLeaderError", "proposal to a non-leader"),
    R("proposal", "raft.py", "Raft._check_can_propose",
      "raise ProposalDroppedError", "proposal during a leadership transfer"),
    R("proposal", "raft.py", "Raft.propose",
      "raise ProposalDroppedError", "proposal beyond the uncommitted-entries limit"),
    # -- leadership --
    R("lead", "raft.py", "Raft._tick_heartbeat",
      "self.become_follower(self.term, NONE)", "CheckQuorum: a leader no quorum answered steps down"),
    R("lead", "raft.py", "Raft._adopt_conf",
      "self.become_follower(self.term, NONE)", "a leader removed or demoted by a conf change steps down"),
)


# Refusals that fire only once safety is broken: a correct core never takes them.
ASSERTIONS: tuple[tuple[str, str, str], ...] = (
    ("log.py", "RaftLog.maybe_append", "an append conflicting with a committed entry"),
    ("log.py", "RaftLog.append", "an append that would rewrite committed entries"),
    ("log.py", "RaftLog.commit_to", "a commit index beyond the log"),
    ("raft.py", "Raft.__init__", "a persisted commit index outside the persisted log"),
)

# Defensive branches no input through RawNode reaches, and why.
UNREACHABLE: tuple[tuple[str, str, str], ...] = (
    ("raft.py", "Raft.conf_change_results",
     "a committed conf change the configuration rejects: the leader validates each change against the "
     "configuration it will apply to, and allows one pending change at a time, also across terms "
     "(a new leader counts everything in its log as pending)"),
    ("raft.py", "Raft._send_snapshot",
     "an empty snapshot: every replica that can lead holds one (bootstrap or install)"),
    ("readonly.py", "ReadOnly._request",
     "a read-round context of the wrong size: only the leader's own rounds come back"),
    ("readonly.py", "ReadOnly.release_through", "an unknown round: it is called only after ack() found the round"),
    ("raft.py", "Raft.propose",
     "an empty batch (ValueError): argument checking, unit-tested; not a refusal of the protocol"),
)


@cache
def _functions(file: str) -> dict[str, tuple[int, int]]:
    """Qualified function name -> (first line, last line) in ``node/raft/<file>``."""
    tree = ast.parse((CORE / file).read_text())
    out: dict[str, tuple[int, int]] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[f"{prefix}{child.name}"] = (child.lineno, child.end_lineno or child.lineno)

    walk(tree, "")
    return out


def locate(r: Refusal) -> int:
    """The line of ``r``'s statement; ValueError if the function or the statement is gone."""
    span = _functions(r.file).get(r.function)
    if span is None:
        raise ValueError(f"{r.where}: no such function")
    lines = (CORE / r.file).read_text().splitlines()
    hits = [n for n in range(span[0], span[1] + 1) if lines[n - 1].strip().startswith(r.stmt)]
    if len(hits) <= r.nth:
        raise ValueError(f"{r.where}: statement #{r.nth} starting {r.stmt!r} not found ({len(hits)} found)")
    return hits[r.nth]
