"""`uvicorn app.main:app`: the service of `visit_counter.main`, under the seed's name."""

from typing import Any

from visit_counter import main as _service
from visit_counter.main import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """`app.main:app` is built from the environment on first access, as in `visit_counter.main`."""
    return getattr(_service, name)
