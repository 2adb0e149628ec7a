"""A real uvicorn process running the service, for end-to-end and fault tests."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from visit_counter.core.embedded_nodes import free_port
from visit_counter.core.http_limits import PROTOCOL_PATH

REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`uvicorn app.main:app` on a free loopback port, configured through its environment."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        workers: int = 1,
        open_files: tuple[int, int] | None = None,
        app_dir: Path | None = None,
        target: str = "app.main:app",
        ready_path: str = "/status",
    ) -> None:
        """`open_files`: the (soft, hard) RLIMIT_NOFILE the server starts with; `app_dir`:
        the directory holding the `app` package to run (default: this checkout's), e.g.
        an older release's unpacked for an upgrade test, or another project's app
        (`target`, answering 200 at `ready_path` once up) with this checkout's
        `visit_counter` on its PYTHONPATH."""
        self.port = free_port()
        self.app_dir = app_dir or REPO_ROOT
        self.target = target
        self.ready_path = ready_path
        self.workers = workers
        self.open_files = open_files
        self.log_path = log_path
        self._env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        if self.app_dir != REPO_ROOT:  # this checkout's visit_counter (and HTTP protocol)
            self._env["PYTHONPATH"] = str(REPO_ROOT)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The server process (the supervisor when there are several workers)."""
        assert self._process is not None
        return self._process.pid

    def _limit_open_files(self) -> None:  # runs in the child, before exec
        if self.open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def start(self, timeout: float = 30.0) -> None:
        command = [
            sys.executable, "-m", "uvicorn", self.target,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
            # The server the Dockerfile and `python -m app serve` run: httptools with head limits.
            "--loop", "uvloop", "--http", PROTOCOL_PATH, "--no-access-log",
            "--timeout-graceful-shutdown", "10",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self.app_dir,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_open_files if self.open_files else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"service exited at start:\n{self.log()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"service did not answer within {timeout}s:\n{self.log()}")

    @property
    def exit_code(self) -> int | None:
        """None while the server runs; else how it ended (negative: killed by that signal)."""
        assert self._process is not None
        return self._process.poll()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, as an orchestrator stops it; return the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            return self._process.wait(timeout)
        finally:
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server and its workers (a crash)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            for pid in [*self._worker_pids(), self._process.pid]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    def _worker_pids(self) -> list[int]:
        assert self._process is not None
        children = Path(f"/proc/{self._process.pid}/task/{self._process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
