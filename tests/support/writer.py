"""A steady client write load for process tests: distinct keys, what was acknowledged kept."""

from __future__ import annotations

import threading
import time

from router.client import Client, TesseraError


class Writer:
    """Writes distinct keys through the client on a thread until the ``with`` block ends;
    ``acked`` holds every write the cluster acknowledged (a failed one's outcome is unknown,
    so it is not counted)."""

    def __init__(self, routers: str, deadline_s: float = 15.0, value_bytes: int = 0) -> None:
        self.routers = routers
        self.deadline_s = deadline_s
        self.value_bytes = value_bytes  # pad each value to this size (0: short values)
        self.acked: dict[bytes, bytes] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        """Starts writing, and returns once writes flow (20 acknowledged; 30 s at most)."""
        self._thread.start()
        deadline = time.monotonic() + 30
        while len(self.acked) <= 20 and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.05)
        assert len(self.acked) > 20, f"writes did not flow: {self.errors[-3:]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with Client(self.routers, deadline_s=self.deadline_s) as client:
            i = 0
            while not self._stop.is_set():
                key, value = bytes([(i * 97) % 256]) + b"w%06d" % i, b"v%d" % i
                if self.value_bytes:
                    value = (value + b":").ljust(self.value_bytes, b".")
                try:
                    client.put(key, value)
                    self.acked[key] = value
                except TesseraError as exc:
                    self.errors.append(str(exc))
                i += 1

    def check(self, at_least: int = 100) -> None:
        """Writes kept flowing, and every acknowledged one reads back (linearizably)."""
        assert len(self.acked) > at_least, f"only {len(self.acked)} writes acknowledged ({self.errors[-3:]})"
        with Client(self.routers, deadline_s=15) as client:
            wrong = {}
            for key, value in self.acked.items():
                got = client.get(key, "linearizable")
                if got is None or got.value != value:
                    wrong[key] = (value, got)
            assert not wrong, f"{len(wrong)} of {len(self.acked)} acknowledged writes read back wrong: " + str(
                sorted(wrong.items())[:5])
