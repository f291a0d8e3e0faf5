"""Run a real router process for tests and tools: on a free port, in a given data dir, with
its "router listening on ADDR" line awaited (never sleep-and-hope)."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

LISTENING = "router listening on "


class RouterProcess:
    """``tessera router`` (``python -m tools.cli router``) as a child process. ``address`` is
    known once started."""

    def __init__(self, data_dir: str | Path, *, listen: str = "127.0.0.1:0", extra_args: tuple[str, ...] = (),
                 log_path: str | Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.listen = listen
        self.extra_args = tuple(extra_args)
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / f"{self.data_dir.name}.router.log"
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, timeout: float = 15.0) -> RouterProcess:
        cmd = [sys.executable, "-m", "tools.cli", "router", "--listen", self.listen, "--data-dir", str(self.data_dir),
               *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, cwd=_repo_root())
        self.address = self._await_listening(timeout)
        return self

    def _await_listening(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith(LISTENING):
                        return line[len(LISTENING):].strip()
        finally:
            sel.close()
        self.kill()
        raise RuntimeError(f"router did not start within {timeout}s; output {buf!r}; log:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> int | None:
        """SIGKILL (a crash) and reap."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        rc = self.proc.wait(timeout=10)
        self._close_pipes()
        return rc

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful stop) and wait for the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._close_pipes()
        return rc

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> RouterProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def _repo_root() -> str:
    return str(Path(__file__).resolve().parent.parent)
