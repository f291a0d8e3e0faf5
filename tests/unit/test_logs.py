"""common/logs.py: one format, the level from --log-level, and a second setup replaces the first."""

from __future__ import annotations

import io
import logging
import re

import pytest

from common import logs


def test_setup_writes_the_level_and_above_in_one_format(root_logger) -> None:
    out = io.StringIO()
    logs.setup("warning", stream=out)
    log = logging.getLogger("tessera.test")
    log.debug("a debug record")
    log.info("an info record")
    log.warning("a warning record")
    log.error("an error record")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING tessera\.test: a warning record", lines[0])
    assert lines[1].endswith(" ERROR tessera.test: an error record")


def test_a_second_setup_replaces_the_first(root_logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.setup("error", stream=first)
    logs.setup("debug", stream=second)
    logging.getLogger("tessera.test").debug("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


def test_every_level_is_accepted_and_nothing_else(root_logger) -> None:
    for level in logs.LEVELS:
        logs.setup(level, stream=io.StringIO())
        assert logging.getLogger().level == getattr(logging, level.upper())
    assert logs.DEFAULT_LEVEL in logs.LEVELS
    with pytest.raises(ValueError):
        logs.setup("verbose")
