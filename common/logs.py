"""One logging setup for every Tessera process: one format, the level from ``--log-level``.

Library code only ever asks for ``logging.getLogger("tessera.<part>")``; the process decides
where records go and which ones. That decision is made once, by :func:`setup`, which
``tools/cli.py`` calls for every command that runs a long-lived process (node, router,
cluster up, nemesis, bench) with the command's ``--log-level``. Records go to stderr, which
the launchers (tools/cluster.py) collect into ``ROOT/logs/NAME.log``.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LEVEL = "info"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str = DEFAULT_LEVEL, *, stream: TextIO | None = None) -> None:
    """Write records of ``level`` (one of :data:`LEVELS`) and above to ``stream`` (default:
    stderr) in :data:`FORMAT`.

    Replaces the root logger's handlers, so calling it again changes the setup instead of
    writing every record twice. Raises ValueError for a level not in :data:`LEVELS`.
    """
    if level not in LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    logging.basicConfig(level=level.upper(), format=FORMAT, stream=stream or sys.stderr, force=True)
