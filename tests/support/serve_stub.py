"""`python -m app serve ...` in-process, up to the `uvicorn.run` call, which is recorded.

What `serve` decides (its workers, host, port, HTTP protocol, access log, the start-up
notices it logs) without a server: no node is started or checked, no socket is bound,
no signal handler installed, the open-file limit and the log configuration untouched.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from visit_counter.cli import commands
from visit_counter.core.config import Settings


def run_serve(monkeypatch: pytest.MonkeyPatch, *argv: str) -> dict[str, Any]:
    """Run `main(["serve", *argv])`: uvicorn.run's arguments (`target`: the app), and
    `embedded_started`: whether serve started the embedded nodes."""
    calls: dict[str, Any] = {"embedded_started": False}

    def start_embedded_nodes(settings: Settings, stack: object) -> None:
        calls["embedded_started"] = True

    async def check_nodes(settings: Settings) -> None:
        return None

    def run(target: str, **kwargs: Any) -> None:
        calls.update(kwargs, target=target)

    monkeypatch.setattr(commands, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(commands, "check_open_files", lambda settings: None)
    monkeypatch.setattr(commands, "_start_embedded_nodes", start_embedded_nodes)
    monkeypatch.setattr(commands, "_check_nodes", check_nodes)
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(commands.uvicorn, "run", run)
    assert commands.main(["serve", *argv]) == 0
    return calls
