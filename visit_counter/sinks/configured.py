"""The sinks the service's settings ask for (`SINKS`), built for its lifespan."""

from __future__ import annotations

from visit_counter.core.config import Settings, SettingsError
from visit_counter.sinks.base import Sink
from visit_counter.sinks.log import LogSink


def sinks_for(settings: Settings) -> list[Sink]:
    """`SINKS=postgres,log` -> a PostgresSink (POSTGRES_* settings) and a LogSink."""
    sinks: list[Sink] = []
    for name in settings.sink_names:
        if name == "log":
            sinks.append(LogSink())
        elif name == "postgres":
            try:
                from visit_counter.sinks.postgres import PostgresSink  # the postgres extra
            except ImportError as exc:
                raise SettingsError(
                    f"SINKS=postgres needs psycopg: pip install 'visit-counter[postgres]' ({exc})"
                ) from None
            sinks.append(
                PostgresSink(
                    settings.postgres_dsn.get_secret_value(),
                    settings.postgres_table,
                    settings.postgres_key_column,
                    settings.postgres_hits_column,
                    upsert=settings.postgres_upsert,
                )
            )
    return sinks
