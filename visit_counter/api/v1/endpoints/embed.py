"""What a web page embeds: the pixel (`<img>`, e-mails) and the badge (README files, sites).

Both take the page id as the rest of the path with the file suffix (`.gif`,
`.svg`) after it. The pixel counts; the badge only reads, unless `?count=true`.
Both count only what a known crawler did not send (`Runtime.count_visit`), and
neither may be cached: every load must reach the service.
"""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from visit_counter.api.deps import RuntimeDep, page_id_of
from visit_counter.api.fast_visit import client_host
from visit_counter.core.errors import (
    InvalidPageIdError,
    InvalidParameterError,
    NodeUnavailableError,
)
from visit_counter.core.page_id import PAGE_ID_RULES, page_id_schema
from visit_counter.services import badge

router = APIRouter(prefix="/counter", tags=["embed"])

GifPageId = Annotated[
    str,
    Path(
        description=f"The page id ({PAGE_ID_RULES}), then `.gif`",
        examples=["home.gif", "blog/2026/hello.gif"],
        json_schema_extra=page_id_schema(".gif"),
    ),
]
SvgPageId = Annotated[
    str,
    Path(
        description=f"The page id ({PAGE_ID_RULES}), then `.svg`",
        examples=["home.svg"],
        json_schema_extra=page_id_schema(".svg"),
    ),
]

# A 1x1 transparent GIF (42 bytes).
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PIXEL_HEADERS = {"Cache-Control": "no-store"}
BADGE_HEADERS = {"Cache-Control": "no-cache, no-store, must-revalidate"}


def _page_with_suffix(request: Request, route: str, suffix: str) -> str:
    raw: str = request.scope["path"]
    if not raw.endswith(suffix):
        raise InvalidPageIdError(f"the {route} of a page is <page id>{suffix}")
    request.scope["path"] = raw.removesuffix(suffix)
    try:
        return page_id_of(request, route)
    finally:
        request.scope["path"] = raw


@router.get(
    "/pixel/{page_id:path}",
    response_class=Response,
    responses={200: {"content": {"image/gif": {}}, "description": "A 1x1 transparent GIF"}},
)
async def pixel(page_id: GifPageId, request: Request, runtime: RuntimeDep) -> Response:
    """Count one visit of `<page id>` and answer a 1x1 transparent GIF (`…/pixel/home.gif`)."""
    page = _page_with_suffix(request, "pixel", ".gif")
    runtime.count_visit(
        page, request.headers.get("user-agent", ""), client_host=client_host(request.scope)
    )
    return Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)


@router.get(
    "/badge/{page_id:path}",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}, "description": "An SVG badge"}},
)
async def count_badge(
    page_id: SvgPageId,
    request: Request,
    runtime: RuntimeDep,
    label: Annotated[str, Query(max_length=badge.MAX_LABEL)] = "visits",
    color: Annotated[
        str, Query(description="a named colour or hex rgb", pattern=badge.COLOUR_PATTERN)
    ] = "blue",
    label_color: Annotated[str, Query(pattern=badge.COLOUR_PATTERN)] = "grey",
    count: Annotated[bool, Query(description="count this load too")] = False,
) -> Response:
    """A badge showing `<page id>`'s count (`…/badge/home.svg?label=views&color=green`)."""
    page = _page_with_suffix(request, "badge", ".svg")
    value_colour, label_colour = badge.colour(color), badge.colour(label_color)
    if value_colour is None or label_colour is None:
        raise InvalidParameterError("color and label_color: a named colour or hex rgb")
    if count:
        runtime.count_visit(
            page, request.headers.get("user-agent", ""), client_host=client_host(request.scope)
        )
    try:
        value = f"{(await runtime.counter.get_visits(page)).visits:,}"
    except NodeUnavailableError:
        value = "?"
    svg = badge.render(label, value, value_colour, label_colour)
    return Response(svg, media_type="image/svg+xml", headers=BADGE_HEADERS)
