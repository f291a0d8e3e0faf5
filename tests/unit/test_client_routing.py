"""The client's routing cache and replica choice, as pure data structures."""

from __future__ import annotations

import random
from collections.abc import Iterable

from common.keyspace import even_ranges
from router.client.routes import Route, RouteCache, pick_store
from tesserapb import meta_pb2


def desc(
    pid: int,
    start: bytes,
    end: bytes,
    conf_ver: int = 1,
    version: int = 1,
    stores: Iterable[int] = (1, 2, 3),
    leader: int = 0,
    term: int = 0,
    learners: Iterable[int] = (),
) -> meta_pb2.PartitionDescriptor:
    replicas = [meta_pb2.Replica(store_id=s, replica_id=pid * 10 + s) for s in stores]
    replicas += [meta_pb2.Replica(store_id=s, replica_id=pid * 10 + s, role=meta_pb2.LEARNER) for s in learners]
    return meta_pb2.PartitionDescriptor(id=pid, start=start, end=end,
                                        epoch=meta_pb2.Epoch(conf_ver=conf_ver, version=version),
                                        replicas=replicas, leader_store_id=leader, term=term)


def pid_at(cache: RouteCache, key: bytes) -> int | None:
    """The partition the cache routes ``key`` to (None: no route)."""
    r = cache.lookup(key)
    return None if r is None else r.id


def route(cache: RouteCache, partition_id: int) -> Route:
    """The cache's route of a partition it must know."""
    r = cache.get(partition_id)
    assert r is not None, f"no route for partition {partition_id}"
    return r


def eight() -> RouteCache:
    cache = RouteCache()
    cache.merge_all(desc(i + 1, s, e) for i, (s, e) in enumerate(even_ranges(8)))
    return cache


def test_lookup_by_key_across_partition_boundaries():
    cache = eight()
    expect = {b"": 1, b"\x00": 1, b"\x1f\xff\xff": 1, b"\x20": 2, b"\x20\x00": 2, b"\x3f": 2, b"\x40": 3,
              b"hello": 4, b"\x7f\xff": 4, b"\x80": 5, b"\xdf": 7, b"\xe0": 8, b"\xff" * 64: 8}
    assert {k: pid_at(cache, k) for k in expect} == expect


def test_lookup_misses_in_a_gap_and_before_anything_is_known():
    assert RouteCache().lookup(b"k") is None
    cache = RouteCache()
    cache.merge(desc(1, b"", b"m"))
    cache.merge(desc(2, b"t", b""))
    assert pid_at(cache, b"a") == 1 and pid_at(cache, b"z") == 2
    assert pid_at(cache, b"m") is None and pid_at(cache, b"s\xff") is None


def test_newer_epoch_replaces_older_is_ignored():
    cache = eight()
    assert cache.merge(desc(3, b"\x40", b"\x60", conf_ver=2, stores=(1, 2, 4)))
    assert route(cache, 3).voter_stores() == [1, 2, 4]
    assert not cache.merge(desc(3, b"\x40", b"\x60", conf_ver=1))
    assert route(cache, 3).descriptor.epoch.conf_ver == 2


def test_split_descriptors_replace_the_stale_parent():
    cache = eight()
    # Partition 4 [0x60, 0x80) split at 0x70: the node's EpochNotMatch brings both halves.
    assert cache.merge(desc(4, b"\x60", b"\x70", version=2))
    assert cache.merge(desc(9, b"\x70", b"\x80", version=2))
    assert pid_at(cache, b"\x65") == 4 and pid_at(cache, b"\x75") == 9
    # A late copy of the pre-split parent from a lagging router cannot undo the split.
    assert not cache.merge(desc(4, b"\x60", b"\x80", version=1))
    assert pid_at(cache, b"\x75") == 9
    # The child reported first also evicts an overlapping stale parent.
    cache2 = eight()
    assert cache2.merge(desc(9, b"\x70", b"\x80", version=2))
    assert cache2.get(4) is None and pid_at(cache2, b"\x75") == 9
    assert pid_at(cache2, b"\x65") is None  # a gap until the parent's new range is known


def test_leader_hints_keep_the_higher_term():
    cache = RouteCache()
    cache.merge(desc(1, b"", b"", leader=1, term=3))
    cache.merge(desc(1, b"", b"", leader=2, term=2))  # older term from a lagging router
    assert route(cache, 1).leader_store_id == 1
    cache.merge(desc(1, b"", b"", leader=3, term=4))
    assert (route(cache, 1).leader_store_id, route(cache, 1).term) == (3, 4)
    cache.set_leader(1, 2)  # a NotLeader hint: freshest word, term unknown
    assert route(cache, 1).leader_store_id == 2
    cache.clear_leader(1, store_id=3)  # not the leader: no effect
    assert route(cache, 1).leader_store_id == 2
    cache.clear_leader(1)
    assert route(cache, 1).leader_store_id == 0
    cache.merge(desc(1, b"", b"", leader=3, term=4))  # same term, leader unknown: take it
    assert route(cache, 1).leader_store_id == 3


def test_drop_and_addresses():
    cache = eight()
    cache.drop(2)
    assert pid_at(cache, b"\x30") is None and pid_at(cache, b"\x40") == 3
    cache.set_stores([meta_pb2.Store(id=1, address="a:1"), meta_pb2.Store(id=2, address="b:2")])
    cache.set_address(2, "b:3")
    cache.set_address(3, "")  # ignored
    assert (cache.address(1), cache.address(2), cache.address(3)) == ("a:1", "b:3", None)


def test_pick_store_prefers_leader_then_untried_voters():
    route = Route.from_pb(desc(1, b"", b"", leader=2, learners=(4,)))
    assert pick_store(route, stale=False, failed=set()) == 2
    assert pick_store(route, stale=False, failed={2}) == 1
    assert pick_store(route, stale=False, failed={2}, suspect={1}) == 3
    assert pick_store(route, stale=False, failed={1, 2, 3}) == 2  # all failed: start over
    no_leader = Route.from_pb(desc(1, b"", b""))
    assert pick_store(no_leader, stale=False, failed=set()) == 1
    # Learners never serve: only voters are candidates.
    assert 4 not in {pick_store(route, stale=True, failed=set(), rng=random.Random(s)) for s in range(50)}


def test_stale_reads_spread_over_replicas():
    route = Route.from_pb(desc(1, b"", b"", leader=1))
    rng = random.Random(7)
    chosen = {pick_store(route, stale=True, failed=set(), rng=rng) for _ in range(60)}
    assert chosen == {1, 2, 3}
