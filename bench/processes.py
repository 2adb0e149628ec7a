"""The processes a benchmark session runs: Redis-protocol nodes and uvicorn servers.

Placement: the server under test gets CPU 0 to itself; the load generator, the
nodes and this orchestrator share CPU 1 (the orchestrator pins itself there, so
the nodes it starts inherit that core). With fewer than two cores nothing is
pinned and the report says so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import redis

from visit_counter.core.embedded_nodes import RedisNodeProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVER_CPU = 0
LOAD_CPU = 1

# INFO commandstats entries that are not counting work: health checks, connection
# set-up, pub/sub subscriptions and this harness's own INFO calls; on a cluster, reading
# its slot map and state (CLUSTER SLOTS, SHARDS, INFO, NODES), READONLY, and what a
# replica sends its primary (PSYNC, REPLCONF ACK). WAIT and ASKING are not here: in
# cluster mode a flush sends them, and they count.
HOUSEKEEPING_COMMANDS = frozenset(
    {"ping", "info", "hello", "auth", "select", "subscribe", "unsubscribe", "psubscribe",
     "readonly", "psync", "sync", "replconf"}
)  # fmt: skip
HOUSEKEEPING_PREFIXES = ("client|", "command|", "config|", "cluster|")


def can_pin() -> bool:
    return (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")


def pinned(command: list[str], cpu: int) -> list[str]:
    """`command` run on one core through `taskset` when that is possible, else unchanged."""
    taskset = shutil.which("taskset")
    if taskset is None or not can_pin():
        return command
    return [taskset, "-c", str(cpu), *command]


def on_every_cpu(command: list[str]) -> list[str]:
    """`command` free to run on every core (this process, pinned to one, would pass that on)."""
    taskset = shutil.which("taskset")
    if taskset is None or not can_pin():
        return command
    return [taskset, "-c", f"0-{(os.cpu_count() or 1) - 1}", *command]


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """This environment with `env` over it, the repository importable, output unbuffered."""
    return {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
    }


def pin_self_to_load_cpu() -> bool:
    """Move this process (and every child it starts later) to the load generator's core."""
    if not can_pin():
        return False
    os.sched_setaffinity(0, {LOAD_CPU})
    return True


def is_housekeeping(command: str) -> bool:
    return command in HOUSEKEEPING_COMMANDS or command.startswith(HOUSEKEEPING_PREFIXES)


def counting_calls(calls: dict[str, int]) -> int:
    """Calls that are counting work: not health checks, INFO or connection set-up."""
    return sum(n for name, n in calls.items() if not is_housekeeping(name))


def command_calls_on(ports: list[int]) -> dict[str, int]:
    """Calls per command, summed over the nodes on `ports` (INFO commandstats)."""
    totals: dict[str, int] = {}
    for port in ports:
        with redis.Redis(port=port, socket_timeout=5) as client:
            stats = client.info("commandstats")
        for key, value in stats.items():
            name = str(key).removeprefix("cmdstat_")
            totals[name] = totals.get(name, 0) + int(value["calls"])
    return totals


class NodeSet:
    """Three (or `count`) nodes on free loopback ports, data under `root`."""

    def __init__(self, root: Path, count: int = 3) -> None:
        self.root = root
        self.count = count
        self.nodes: list[RedisNodeProcess] = []

    @property
    def urls(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for _ in range(self.count):
            port = free_port()
            node = RedisNodeProcess(port, self.root / f"node-{port}")
            self.nodes.append(node)
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # one stuck node must not keep the others running
                print(f"bench: stopping node {node.port} failed: {exc}", file=sys.stderr)

    def command_calls(self) -> dict[str, int]:
        """Calls per command, summed over the nodes (INFO commandstats)."""
        return command_calls_on([node.port for node in self.nodes])


class ServerProcess:
    """One single-process uvicorn server (uvloop, httptools, no access log) on CPU 0."""

    def __init__(
        self, name: str, target: str, env: Mapping[str, str], workdir: Path, *, factory: bool
    ) -> None:
        self.name = name
        self.target = target  # "module:attribute"
        self.factory = factory  # the attribute is a factory (`uvicorn --factory`)
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        # The server runs in its own directory: a developer's `.env` never leaks into it.
        self._env = child_env(env)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def command(self) -> list[str]:
        uvicorn = [
            sys.executable, "-m", "uvicorn", self.target, *(["--factory"] if self.factory else []),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
            "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip
        return pinned(uvicorn, SERVER_CPU)

    def launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the server answers HTTP at all (uvicorn listens only after the lifespan)."""
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"server {self.name} exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/status", timeout=1.0):
                    return
            except urllib.error.HTTPError:
                return  # an answer, even 404, means it is serving
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(
            f"server {self.name} did not answer within {timeout}s:\n{self.log_tail()}"
        )

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS from /proc), 0 where /proc is not available."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the service flushes and closes), then SIGKILL if it does not exit in time."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
