"""The v1 API router: one included router per resource."""

from fastapi import APIRouter

from app.api.v1.endpoints import counter
from app.core.config import Settings


def build_api_router(settings: Settings) -> APIRouter:
    api_router = APIRouter()
    api_router.include_router(counter.router)
    if settings.enable_metrics:
        api_router.include_router(counter.metrics_router)
    return api_router
