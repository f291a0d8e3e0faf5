"""tools/bench_ab.py: what it refuses before starting anything.

The comparison itself runs two clusters for minutes (docs/benchmarks.md); this checks that a
checkout it cannot run is named at once, with the way out, and nothing is started.
"""

from __future__ import annotations

import glob
import os
import tempfile

import pytest

from tools.bench_ab import main


def test_a_checkout_without_generated_protos_is_refused_by_name(tmp_path) -> None:
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    after.mkdir()
    pattern = os.path.join(tempfile.gettempdir(), "tessera-ab-*")
    existing = set(glob.glob(pattern))
    with pytest.raises(SystemExit) as exc:
        main([str(before), str(after), "--rounds", "1"])
    assert str(before) in str(exc.value) and "make protos" in str(exc.value)
    assert set(glob.glob(pattern)) == existing  # no cluster directory was made
