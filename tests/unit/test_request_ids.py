"""router.client.request_ids: unique, 16 bytes, increasing within a process, new in a fork."""

from __future__ import annotations

import os
import threading

from router.client.request_ids import new_request_id


def test_ids_are_16_bytes_share_a_prefix_and_increase() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert all(len(i) == 16 for i in ids)
    assert len({i[:8] for i in ids}) == 1
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_stay_unique_across_threads() -> None:
    got: list[list[bytes]] = [[] for _ in range(8)]

    def issue(out: list[bytes]) -> None:
        out.extend(new_request_id() for _ in range(2000))

    threads = [threading.Thread(target=issue, args=(out,)) for out in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in got for i in out]
    assert len(set(every)) == len(every) == 16000


def test_a_forked_child_draws_its_own_prefix() -> None:
    parent = new_request_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.close(r)
        os.write(w, new_request_id())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        child = f.read()
    os.waitpid(pid, 0)
    assert len(child) == 16 and child[:8] != parent[:8]
    assert new_request_id()[:8] == parent[:8]  # the parent's own sequence goes on
