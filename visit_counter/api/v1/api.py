"""The v1 API router: one included router per resource."""

from fastapi import APIRouter

from visit_counter.api.deps import admin_only
from visit_counter.api.v1.endpoints import admin, analytics, counter, embed, ingest
from visit_counter.core.config import Settings


def build_api_router(settings: Settings) -> APIRouter:
    api_router = APIRouter()
    api_router.include_router(counter.router)
    api_router.include_router(embed.router)
    api_router.include_router(counter.reset_router, **admin_only(settings))
    api_router.include_router(ingest.router, **admin_only(settings))
    api_router.include_router(analytics.analytics_router(settings), **admin_only(settings))
    api_router.include_router(admin.router, **admin_only(settings))
    if settings.enable_metrics:
        api_router.include_router(counter.metrics_router, **admin_only(settings))
    return api_router
