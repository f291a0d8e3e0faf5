"""The backoff policy shared by the client's retries and the node's reconnects: the node's
schedule (the client's is checked in test_client_retry.py) and the policy's own limits."""

from __future__ import annotations

import pytest

from common.backoff import BackoffPolicy
from node.transport import RECONNECT_BACKOFF


def test_reconnects_wait_20ms_doubling_to_1s_jittered_down_by_at_most_half():
    steps = [0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]
    assert [RECONNECT_BACKOFF.delay(n, 0.0) for n in range(8)] == pytest.approx(steps)
    for n, step in enumerate(steps):
        for rand in (0.25, 0.5, 0.999):
            assert step * 0.5 <= RECONNECT_BACKOFF.delay(n, rand) <= step


def test_the_exponent_stops_growing_long_before_it_overflows():
    assert BackoffPolicy(initial_s=1.0, max_s=1e300, multiplier=10.0).delay(10**6, 0.0) == pytest.approx(1e64)


@pytest.mark.parametrize(
    "bad",
    [
        {"initial_s": 0},
        {"initial_s": 1.0, "max_s": 0.5},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_a_policy_that_cannot_be_meant_is_refused(bad):
    with pytest.raises(ValueError):
        BackoffPolicy(**bad)
