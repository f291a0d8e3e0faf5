"""One logging setup for every Tessera process: one format, the level from ``--log-level``.

Library code only ever asks for ``logging.getLogger("tessera.<part>")``; the process decides
where records go and which ones. That decision is made once, by :func:`setup`, which
``tools/cli.py`` calls for every command that runs a long-lived process (node, router,
cluster up, nemesis, bench) with the command's ``--log-level`` and ``--log-format``. Records go
to stderr, which the launchers (tools/cluster.py) collect into ``ROOT/logs/NAME.log``.

``--log-format json`` writes one JSON object per line: ``ts`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``msg``, and the record's *fields* when known:

- ``store`` / ``router``: the process's own id, set once with :func:`set_fields`;
- ``partition``: the partition a record is about, given by the caller as
  ``log.info("...", pid, extra={"partition": pid})``, or for everything a task logs by
  :func:`partition_context`;
- ``exc``: the traceback of ``log.exception``.

The text format is unchanged by the fields (they are in the message already).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
FORMATS = ("text", "json")
DEFAULT_FORMAT = "text"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Record attributes (from ``extra=``) a JSON line carries as fields of its own.
FIELDS = ("partition", "store", "router")

_process_fields: dict[str, object] = {}
_partition: contextvars.ContextVar[int | None] = contextvars.ContextVar("tessera_log_partition", default=None)


def set_fields(**fields: object) -> None:
    """Fields every JSON line of this process carries (``store=3`` on a node, ``router=1``)."""
    _process_fields.update(fields)


@contextlib.contextmanager
def partition_context(pid: int) -> Iterator[None]:
    """Records logged inside (by this task and what it awaits) are about partition ``pid``."""
    token = _partition.set(pid)
    try:
        yield
    finally:
        _partition.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_process_fields)
        pid = _partition.get()
        if pid is not None:
            out["partition"] = pid
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["exc"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def setup(level: str = DEFAULT_LEVEL, *, stream: TextIO | None = None, fmt: str = DEFAULT_FORMAT) -> None:
    """Write records of ``level`` (one of :data:`LEVELS`) and above to ``stream`` (default:
    stderr), as text in :data:`FORMAT` or as JSON lines (``fmt``, one of :data:`FORMATS`).

    Replaces the root logger's handlers, so calling it again changes the setup instead of
    writing every record twice. Raises ValueError for a level or format not in the lists.
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
