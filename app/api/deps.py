"""Typed dependencies: everything an endpoint needs comes from the lifespan state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from app.core.config import Settings
from app.core.middleware import RequestStats
from app.core.redis_manager import RedisManager
from app.services.visit_counter import VisitCounter


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the lifespan built, handed to every request through `request.state`."""

    settings: Settings
    manager: RedisManager
    counter: VisitCounter
    request_stats: RequestStats
    started_at: datetime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


def get_counter(request: Request) -> VisitCounter:
    counter: VisitCounter = request.state.runtime.counter
    return counter


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CounterDep = Annotated[VisitCounter, Depends(get_counter)]
