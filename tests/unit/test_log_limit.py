"""common/log_limit.py: a flood of one kind of record costs a burst, then about one line per
refill, plus one "suppressed" line; other kinds are not affected; the kinds are bounded."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from common.log_limit import OVERFLOW_KIND, LogLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    logger = logging.getLogger("tessera.test.log_limit")
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)
    logger.propagate = True


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_a_flood_logs_the_burst_then_one_line_per_refill_with_the_count_suppressed(logged) -> None:
    logger, out = logged
    clock = Clock()
    lim = LogLimiter(logger, burst=3, interval_s=30.0, clock=clock)  # one token per 10 s
    written = [lim.warning("bad", "bad request %d", i) for i in range(1000)]
    assert written[:3] == [True] * 3 and not any(written[3:])
    assert lines(out) == [f"WARNING bad request {i}" for i in range(3)]
    assert lim.suppressed_total == 997 and lim.pending() == {"bad": 997}
    clock.now += 9.9
    assert not lim.warning("bad", "still too soon")
    clock.now += 0.2  # one token back
    assert lim.warning("bad", "bad request again")
    assert lines(out)[3:] == ["WARNING suppressed 998 similar 'bad' log lines in the last 10 s",
                              "WARNING bad request again"]
    assert lim.pending() == {}
    clock.now += 3600  # the bucket refills to the burst, never beyond
    assert [lim.warning("bad", "x") for _ in range(4)] == [True, True, True, False]


def test_kinds_have_their_own_buckets(logged) -> None:
    logger, out = logged
    clock = Clock()
    lim = LogLimiter(logger, burst=1, interval_s=60.0, clock=clock)
    assert lim.warning("malformed", "one")
    assert not lim.warning("malformed", "two")
    assert lim.error("unexpected", "three")
    assert lines(out) == ["WARNING one", "ERROR three"]


def test_kinds_beyond_the_bound_share_one_bucket(logged) -> None:
    logger, _ = logged
    lim = LogLimiter(logger, burst=1, interval_s=60.0, max_kinds=2, clock=Clock())
    assert lim.warning("a", "a") and lim.warning("b", "b")
    assert lim.warning("c", "c")  # the overflow bucket's one token
    assert not lim.warning("d", "d")
    assert set(lim.pending()) == {OVERFLOW_KIND}
    assert len(lim._buckets) == 3


def test_a_record_below_the_level_costs_no_token(logged) -> None:
    logger, out = logged
    logger.setLevel(logging.ERROR)
    lim = LogLimiter(logger, burst=1, interval_s=60.0, clock=Clock())
    assert not lim.warning("k", "filtered")
    assert lim.error("k", "kept")
    assert lines(out) == ["ERROR kept"]


def test_exc_info_writes_the_traceback_once(logged) -> None:
    logger, out = logged
    lim = LogLimiter(logger, burst=1, interval_s=60.0, clock=Clock())
    for _ in range(3):
        try:
            raise ValueError("boom")
        except ValueError:
            lim.error("crash", "handler failed", exc_info=True)
    assert out.getvalue().count("Traceback") == 1


@pytest.mark.parametrize(("burst", "interval"), [(0, 1.0), (1, 0.0)])
def test_nonsense_settings_are_refused(burst: int, interval: float) -> None:
    with pytest.raises(ValueError):
        LogLimiter(logging.getLogger("x"), burst=burst, interval_s=interval)
