"""visit-counter: exact visit counts at dict-increment speed, on Redis nodes or Redis Cluster.

    from visit_counter import VisitCounterMiddleware, PostgresSink, LogSink

The library's public names are imported on first use, so `uvicorn app.main:app` (which
imports this package first) loads neither the middleware nor psycopg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "2.0.0"

if TYPE_CHECKING:
    from visit_counter.asgi.middleware import VisitCounterMiddleware
    from visit_counter.core.config import Settings
    from visit_counter.sinks.base import Delivery, Sink
    from visit_counter.sinks.log import LogSink
    from visit_counter.sinks.postgres import PostgresSink

_PUBLIC = {
    "VisitCounterMiddleware": "visit_counter.asgi.middleware",
    "Settings": "visit_counter.core.config",
    "Delivery": "visit_counter.sinks.base",
    "Sink": "visit_counter.sinks.base",
    "LogSink": "visit_counter.sinks.log",
    "PostgresSink": "visit_counter.sinks.postgres",  # needs the postgres extra (psycopg)
}

__all__ = ["Delivery", "LogSink", "PostgresSink", "Settings", "Sink", "VisitCounterMiddleware"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'visit_counter' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
