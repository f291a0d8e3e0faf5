"""``tessera simulate --coverage``: the core's branch coverage and the table of its refusals."""

from __future__ import annotations

import re

import pytest

from tools.simulator import refusals
from tools.simulator.runner import main

# What a refusing statement looks like in the core: it raises, returns early, answers with a
# rejection or the newer term, steps down or abandons a transfer, defers a read, or only moves
# the commit index instead of installing a snapshot.
REFUSING = (
    "raise ", "return", "self._send(", "self.become_follower(", "self._abort_transfer()",
    "self._deferred_reads.append(", "hint = ", "self.log.commit_to(",
)


def test_every_refusal_names_one_refusing_statement_of_the_core():
    lines: dict[tuple[str, int], refusals.Refusal] = {}
    for r in refusals.REFUSALS:
        line = refusals.locate(r)  # ValueError when the function or statement is gone
        text = (refusals.CORE / r.file).read_text().splitlines()[line - 1].strip()
        assert text.startswith(REFUSING), f"{r.where}:{line} is not a refusal: {text}"
        assert (r.file, line) not in lines, f"{r.what!r} and {lines[(r.file, line)].what!r} name one line"
        lines[(r.file, line)] = r


def test_left_out_branches_name_functions_that_exist():
    for file, function, _why in refusals.ASSERTIONS + refusals.UNREACHABLE:
        assert function in refusals._functions(file), f"{file}:{function}"


def test_locate_rejects_a_statement_that_is_gone():
    gone = refusals.Refusal("vote", "raft.py", "Raft.step", "raise NoSuchError", "nothing")
    with pytest.raises(ValueError):
        refusals.locate(gone)
    with pytest.raises(ValueError):
        refusals.locate(refusals.Refusal("vote", "raft.py", "Raft.no_such_method", "return", "nothing"))


@pytest.mark.timeout(600)
def test_coverage_over_a_few_seeds_with_two_workers(capsys):
    assert main(3, start=0, workers=2, coverage=True) == 0
    out = capsys.readouterr().out
    m = re.search(r"coverage of node/raft \(branches\): (\d+)/(\d+) = ([\d.]+)%", out)
    assert m, out
    covered, total = int(m[1]), int(m[2])
    assert 0.5 * total < covered < total  # both workers' data, and not everything in 3 seeds
    taken = re.search(r"refusals taken: (\d+) of (\d+)", out)
    assert taken and int(taken[2]) == len(refusals.REFUSALS)
    # Three seeds do not take every refusal, and the report names the ones they missed.
    missed = int(taken[2]) - int(taken[1])
    assert missed > 0 and out.count("NOT TAKEN") == missed
