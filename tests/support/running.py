"""A local cluster for a test's fixture: started and ready, then stopped and its directory
removed, whatever the test did (``TESSERA_KEEP=1`` keeps the directory, logs included, to read
after a failure)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tools.cluster import Cluster


@contextmanager
def running_cluster(prefix: str, make: Callable[[str], Cluster], ready_s: float = 60) -> Iterator[Cluster]:
    """``make(root)`` builds the cluster in a new temporary directory named ``prefix...``."""
    root = tempfile.mkdtemp(prefix=prefix)
    c = make(root)
    try:
        c.start()
        c.wait_ready(ready_s)
        yield c
    finally:
        c.stop()
        if not os.environ.get("TESSERA_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
