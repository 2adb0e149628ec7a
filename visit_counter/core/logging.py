"""Log setup for the service's own loggers, plain text or one JSON object per line.

Messages never carry secrets: node URLs are logged through `redact_url`, and the
formatters add only time, level, logger name, message, pid (and a traceback).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
_HANDLER_NAME = "visit-counter"
# uvicorn configures these itself; in JSON mode they get the same formatter, so a log
# shipper sees one format per worker (the supervisor's own few lines stay uvicorn's).
_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

LogFormat = Literal["plain", "json"]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, pid.

    A traceback goes into `exception` as one string, so a record stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(_FORMAT)


def configure_logging(debug: bool, log_format: LogFormat = "plain") -> None:
    """Send `app.*` records to stderr at INFO (DEBUG when debugging), in `log_format`.

    Safe to call again (the CLI does, then the app in the same process): the one
    handler is kept and only its level and format change.
    """
    logger = logging.getLogger("visit_counter")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    handler = next((h for h in logger.handlers if h.get_name() == _HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.set_name(_HANDLER_NAME)
        logger.addHandler(handler)
        logger.propagate = False
    handler.setFormatter(formatter_for(log_format))
    if log_format == "json":
        for name in _UVICORN_LOGGERS:
            for uvicorn_handler in logging.getLogger(name).handlers:
                uvicorn_handler.setFormatter(JsonFormatter())
