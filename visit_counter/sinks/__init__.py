"""Sinks: where stored counts are mirrored, each batch exactly once (see `base.py`)."""

from visit_counter.sinks.base import Delivery, Sink
from visit_counter.sinks.log import LogSink

__all__ = ["Delivery", "LogSink", "Sink"]
