"""RaftLog's answers in the states a simulator run seldom holds long enough to look at.

A snapshot from the leader sits in ``unstable_snapshot`` only until the application persists
it, and a correct core never asks the log to rewrite a committed entry; in 200 simulator seeds
neither was exercised often enough to notice a mutant (``python -m tools.mutate``), so the
log's contract for them is pinned here.
"""

from __future__ import annotations

import pytest

from node.raft import CompactedError, ConfState, Entry, MemoryStorage, RaftError, Snapshot, SnapshotMeta
from node.raft.log import RaftLog


def _log(last: int, term: int = 1) -> RaftLog:
    st = MemoryStorage()
    st.append([Entry(term, i) for i in range(1, last + 1)])
    return RaftLog(st)


def test_a_pending_snapshot_answers_for_its_index_and_hides_the_older_log():
    # Storage still holds the old entries 1..5 (term 1) while the snapshot at 8 (term 3) waits
    # to be persisted: the log must answer from the snapshot, not from storage.
    log = _log(5)
    log.restore(Snapshot(SnapshotMeta(8, 3, ConfState(voters=frozenset({1, 2, 3}))), b"s8"))
    assert log.last_index() == 8
    assert log.term(8) == 3
    # A vote request is judged by the last term: 0 here would grant votes to candidates whose
    # logs lack the snapshot's committed entries.
    assert log.last_term() == 3
    with pytest.raises(CompactedError):
        log.term(4)  # storage would still say term 1
    assert not log.match_term(4, 1)


def test_an_append_below_the_commit_index_is_refused():
    log = _log(5)
    log.commit_to(4)
    with pytest.raises(RaftError):
        log.append([Entry(2, 3)])  # would replace committed entries 3 and 4
    assert log.last_index() == 5 and log.term(3) == 1
    # Appending right after the commit index, replacing only uncommitted entries, is allowed.
    assert log.append([Entry(2, 5)]) == 5
    assert log.term(5) == 2


def test_a_commit_index_beyond_the_log_is_refused():
    log = _log(3)
    with pytest.raises(RaftError):
        log.commit_to(4)
    assert log.committed == 0


def test_an_append_conflicting_with_the_committed_entry_is_refused():
    # The leader's entries agree up to 2 and conflict at 3, the follower's commit index: a
    # committed entry can never be replaced, so this is an error, not a truncation.
    log = _log(4)
    log.commit_to(3)
    with pytest.raises(RaftError):
        log.maybe_append(2, 1, 3, [Entry(2, 3), Entry(2, 4)])
    assert log.term(3) == 1
    # A conflict just past the commit index is an ordinary truncation.
    assert log.maybe_append(3, 1, 3, [Entry(2, 4)]) == 4
    assert log.term(4) == 2
