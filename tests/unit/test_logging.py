"""LOG_FORMAT: plain lines by default, one JSON object per line with the setting."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from visit_counter.core.config import Settings
from visit_counter.core.logging import JsonFormatter, configure_logging


def record(message: str, *args: object, exc_info: bool = False) -> logging.LogRecord:
    info = None
    if exc_info:
        try:
            raise ValueError("boom")
        except ValueError:
            info = sys.exc_info()
    return logging.LogRecord(
        "visit_counter.test", logging.WARNING, __file__, 1, message, args, info
    )


def test_a_json_line_has_time_level_logger_message_and_pid() -> None:
    line = JsonFormatter().format(record("node %s down", "redis://h:1"))
    entry = json.loads(line)
    assert set(entry) == {"time", "level", "logger", "message", "pid"}
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "visit_counter.test"
    assert entry["message"] == "node redis://h:1 down"
    assert isinstance(entry["pid"], int)
    assert entry["time"].endswith("Z")


def test_a_traceback_and_newlines_stay_on_one_line() -> None:
    line = JsonFormatter().format(record("two\nlines", exc_info=True))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "two\nlines"
    assert "ValueError: boom" in entry["exception"]


@pytest.fixture
def app_logger() -> Iterator[logging.Logger]:
    """Restore the `app` logger after a test configures it."""
    logger = logging.getLogger("visit_counter")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    logger.handlers = []
    yield logger
    logger.setLevel(saved[0])
    logger.handlers = saved[1]
    logger.propagate = saved[2]


def test_configure_logging_switches_the_one_handler_to_json(app_logger: logging.Logger) -> None:
    configure_logging(debug=False)
    configure_logging(debug=False, log_format="json")  # the CLI, then the app
    assert len(app_logger.handlers) == 1
    handler = app_logger.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    logging.getLogger("visit_counter.core.redis_manager").info(
        "redis node up: %s", "redis://:***@h:1"
    )
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "redis node up: redis://:***@h:1"


def test_plain_is_the_default() -> None:
    assert Settings(_env_file=None).log_format == "plain"


@pytest.mark.parametrize(
    ("given", "parsed"), [("json", "json"), ("JSON", "json"), (" Plain ", "plain")]
)
def test_log_format_is_case_insensitive(given: str, parsed: str) -> None:
    assert Settings(_env_file=None, log_format=given).log_format == parsed


def test_an_unknown_log_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(_env_file=None, log_format="xml")
