"""`GET /count.js`: the snippet a site adds with one tag (the file is static/count.js).

Served from the root, beside `/status`, so its URL is the service's own; the API
prefix is written into it once, at start. An hour of caching: browsers keep it
across page loads, and a new release reaches them within the hour.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

SNIPPET_PATH = Path(__file__).resolve().parents[1] / "static" / "count.js"
CACHE_CONTROL = "public, max-age=3600"


def snippet_router(api_prefix: str) -> APIRouter:
    """The route, with the script read and its API prefix filled in now (not at import)."""
    script = SNIPPET_PATH.read_text().replace("__API_PREFIX__", api_prefix).encode()
    router = APIRouter(tags=["embed"])

    @router.get(
        "/count.js",
        response_class=Response,
        responses={200: {"content": {"text/javascript": {}}, "description": "The snippet"}},
    )
    async def count_js() -> Response:
        """The counting snippet: `<script async src="https://<this service>/count.js">`."""
        return Response(
            script,
            media_type="text/javascript",
            headers={"Cache-Control": CACHE_CONTROL},
        )

    return router
