"""The service's one error family. A single handler in `main.py` maps each to JSON."""

from __future__ import annotations


class CounterError(Exception):
    """Base of every error the service answers with; carries its HTTP status and code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPageIdError(CounterError):
    """The page id is empty, too long or holds characters outside the safe set."""

    status_code = 422
    code = "invalid_page_id"


class NodeUnavailableError(CounterError):
    """The owner node cannot answer and nothing usable is known locally."""

    status_code = 503
    code = "node_unavailable"


class VisitNotKeptError(CounterError):
    """The service cannot keep another visit now (node down, cap reached, journal failing)."""

    status_code = 503
    code = "visit_not_kept"
