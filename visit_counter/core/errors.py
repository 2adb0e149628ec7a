"""The service's one error family, and the one JSON body every error answer carries.

A handler in `main.py` maps each error to its answer; the pure-ASGI visit route and
the bounded HTTP protocol, which answer outside FastAPI, use `error_body` too.
"""

from __future__ import annotations

import json


def error_body(code: str, message: str) -> bytes:
    """`{"status": "error", "error": <code>, "message": <message>}` (schema: `ErrorBody`)."""
    return json.dumps(
        {"status": "error", "error": code, "message": message}, separators=(",", ":")
    ).encode()


class CounterError(Exception):
    """Base of every error the service answers with; carries its HTTP status and code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (e.g. `Retry-After`)."""
        return {}


class InvalidPageIdError(CounterError):
    """The page id is empty, too long, or holds control characters or '.'/'..' segments."""

    status_code = 422
    code = "invalid_page_id"


class InvalidParameterError(CounterError):
    """A query parameter has a value the route cannot use."""

    status_code = 422
    code = "invalid_parameter"


class NodeUnavailableError(CounterError):
    """The owner node cannot answer and nothing usable is known locally."""

    status_code = 503
    code = "node_unavailable"


class VisitNotKeptError(CounterError):
    """The service cannot keep another visit now (node down, cap reached, journal failing)."""

    status_code = 503
    code = "visit_not_kept"


class NotReadyError(CounterError):
    """No node is reachable and the journal cannot be written: no visit could be kept."""

    status_code = 503
    code = "not_ready"


class NotStartedError(CounterError):
    """The app's lifespan never ran (e.g. mounted in another app that does not enter it)."""

    status_code = 503
    code = "not_started"


class UnauthorizedError(CounterError):
    """An admin route was called without `Authorization: Bearer <ADMIN_TOKEN>`."""

    status_code = 401
    code = "unauthorized"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class RateLimitedError(CounterError):
    """This client sent more visits than RATE_LIMIT_PER_SECOND allows; the visit is not counted."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many visits from this client; retry in {retry_after} s")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class MetricsUnavailableError(CounterError):
    """This worker's Prometheus files could not be allocated (full disk): its metrics are off."""

    status_code = 503
    code = "metrics_unavailable"


class InvalidBodyError(CounterError):
    """A request body that is not what the route takes (batch ingest: a JSON object)."""

    status_code = 422
    code = "invalid_body"


class PayloadTooLargeError(CounterError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(CounterError):
    status_code = 415
    code = "unsupported_media_type"


class RequestTimeoutError(CounterError):
    """The request body did not arrive in time."""

    status_code = 408
    code = "request_timeout"
