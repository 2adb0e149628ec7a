"""Log setup for the service's own loggers (uvicorn configures its own)."""

from __future__ import annotations

import logging

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(debug: bool) -> None:
    """Send `app.*` records to stderr, once, at INFO (DEBUG when debugging)."""
    logger = logging.getLogger("app")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(_FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
