"""Each newer fault profile produces the situation it exists for, on some early seed of its own.

A profile that silently stopped producing its situation (a renamed action, a trap that never
fires) would leave its class of bugs unexamined while every seed still "holds"; these tests
make that visible.  Each looks at the first few seeds that pick the profile and requires the
situation's counter (``SeedResult.stats``) to be positive on at least one of them.
"""

from __future__ import annotations

import itertools

import pytest

from tools.simulator import cluster, runner
from tools.simulator.profiles import PROFILE_NAMES, choose_profile
from tools.simulator.runner import run_seed

TRIES = 4  # seeds of the profile to look at


def seeds_of(profile: str):
    """The seeds (ascending) whose run picks ``profile``: the choice is the setup stream's first draw."""
    return (s for s in itertools.count() if choose_profile(cluster.sub_rng(s, 1)).name == profile)


# profile -> (counter, what it counts)
SITUATIONS = {
    "even": ("joint_cuts", "a partition cutting a four-replica group the moment a joint configuration applies"),
    "resize": ("joint_resizes", "a joint configuration between groups of different sizes"),
    "deposed": ("deposed_reads", "a read reaching a leader after a newer leader was elected"),
    "stale": ("stale_snapshots", "a snapshot message reaching a replica whose log is longer"),
    "confstorm": ("conf_refused", "a membership change the core refused"),
    "rejoin": ("laggard_transfers", "a transfer asked of a voter that is behind the leader"),
    "grow": ("grown_from_one", "a one-voter group growing into a bigger one"),
}


@pytest.mark.parametrize("profile", sorted(SITUATIONS))
def test_profile_produces_its_situation(profile):
    counter, what = SITUATIONS[profile]
    looked = []
    for seed in itertools.islice(seeds_of(profile), TRIES):
        r = run_seed(seed)
        assert r.ok, runner.format_failure(r)
        assert r.profile == profile
        if r.stats.get(counter, 0) > 0:
            return
        looked.append(seed)
    pytest.fail(f"{profile}: no {what} ({counter}) on seeds {looked}")


def test_every_profile_is_drawn():
    drawn = {choose_profile(cluster.sub_rng(s, 1)).name for s in range(200)}
    assert drawn == set(PROFILE_NAMES)


def test_small_uncommitted_limit_refuses_a_cut_off_leaders_burst():
    """``stale`` seeds with the small limit: a leader cut off with a minority is refused proposals."""
    for seed in itertools.islice(seeds_of("stale"), 12):
        sim = cluster.Simulation(seed)
        if sim.max_uncommitted > 100:
            continue
        r = run_seed(seed)
        assert r.ok, runner.format_failure(r)
        if r.stats.get("burst_refused", 0):
            return
    pytest.fail("no stale seed hit the uncommitted-entries limit")


def test_idle_groups_quiesce_and_quiet_followers_wake_when_the_leader_store_falls_silent():
    """Client lulls make groups idle: leaders quiesce, and their followers wake once the
    leader's store is silent (crashed, paused, cut off) or restarted."""
    for seed in itertools.islice(seeds_of("balanced"), TRIES):
        r = run_seed(seed)
        assert r.ok, runner.format_failure(r)
        if r.stats.get("quiesced", 0) and r.stats.get("woken_by_silence", 0):
            return
    pytest.fail("no balanced seed quiesced a group and woke a quiet follower")
