"""What the visit routes do and answer, in one place for both ways they are served.

`POST <prefix>/counter/visit/{page_id}` and `GET <prefix>/counter/visits/{page_id}`
are answered by the pure-ASGI fast path (`fast_visit.py`) and, for the OpenAPI
document and whatever the fast path passes on, by their FastAPI twins
(`endpoints/counter.py`). Both validate with the same functions
(`normalize_page_id`, `idempotency_key`) and call these, so their answers are
the same bytes; a test holds them to it.
"""

from __future__ import annotations

import contextlib
import json
import re

from visit_counter.api.deps import Runtime
from visit_counter.core.errors import NodeUnavailableError

_PLAIN_JSON = re.compile(r"[A-Za-z0-9._~:/-]+")  # ids JSON holds as they are


async def record_visit(
    runtime: Runtime,
    page_id: str,
    browser_user_agent: bytes | str | None,
    key: str | None,
    client_host: str,
    *,
    return_count: bool,
) -> bytes:
    """Count the visit (see `Runtime.count_visit`); the 200 body, with the count if asked.

    The count is left out when it cannot be read now: the visit is counted all the same.
    """
    runtime.count_visit(page_id, browser_user_agent, key, client_host)
    visits = None
    if return_count:
        with contextlib.suppress(NodeUnavailableError):
            visits = (await runtime.counter.get_visits(page_id)).visits
    return recorded_body(page_id, visits, runtime.clock.now())


async def read_visits(runtime: Runtime, page_id: str) -> bytes:
    """The page's count as `VisitCount` JSON (NodeUnavailableError when it cannot be read)."""
    count = await runtime.counter.get_visits(page_id)
    stale = "true" if count.stale else "false"
    return f'{{"visits":{count.visits},"served_via":"{count.served_via}","stale":{stale}}}'.encode()


def recorded_body(page_id: str, visits: int | None, timestamp: str) -> bytes:
    """`VisitRecorded` as JSON; formatted by hand when the id needs no escaping."""
    if _PLAIN_JSON.fullmatch(page_id):
        count = "" if visits is None else f',"visits":{visits}'
        return (
            f'{{"status":"success","message":"Visit recorded for page {page_id}",'
            f'"page_id":"{page_id}","timestamp":"{timestamp}"{count}}}'
        ).encode()
    body: dict[str, object] = {
        "status": "success",
        "message": f"Visit recorded for page {page_id}",
        "page_id": page_id,
        "timestamp": timestamp,
    }
    if visits is not None:
        body["visits"] = visits
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
