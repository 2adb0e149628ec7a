"""Load generators, each a separate process on the load core: `wrk`, or a Python fallback.

Both print one line `BENCH_RESULT {json}` (requests, duration, errors, latency
percentiles), so the harness reads the same numbers whichever one ran. Either runs
for a fixed time (`run`), or until it is told to stop (`start`, then `stop`: SIGINT,
on which both report the window they ran).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self

from bench.processes import LOAD_CPU, REPO_ROOT, pinned

RESULT_MARK = "BENCH_RESULT "
PAGE_PLACEHOLDER = "{page}"
# What a browser's request carries (`browser_visitors`): an Origin makes the service take the
# User-Agent as the visitor's, and the visitor number at its end makes each one a visitor of
# its own (ids are per address and User-Agent, and every request comes from 127.0.0.1).
BROWSER_ORIGIN = "http://bench.example"
BROWSER_USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
OPEN_ENDED_S = 3600  # the duration a started load is given: `stop` ends it long before


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What every request looks like: `path` may hold `{page}`, then a random page per request."""

    method: str
    path: str
    pages: int = 0  # > 0: `{page}` is page-0 .. page-(pages-1), drawn uniformly per request
    body: str = ""  # a JSON body sent with every request (Content-Type: application/json)
    # > 0: every request carries `Origin` and the User-Agent of visitor k, k drawn uniformly in
    # 0 .. browser_visitors-1 per request (`browser_user_agent(k)`), as a browser's would
    browser_visitors: int = 0


def browser_user_agent(visitor: int) -> str:
    """The User-Agent visitor number `visitor` sends: a current Firefox's, numbered."""
    return f"{BROWSER_USER_AGENT} visitor/{visitor}"


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int  # completed requests, any status
    duration_s: float
    status_errors: int  # answers with status >= 400
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def accepted(self) -> int:
        return self.requests - self.status_errors


class RunningLoad:
    """A load generator started without a fixed end: `stop()` ends it and returns its result.

    It starts with SIGINT ignored (inherited through exec), until it installs its own
    handler: a SIGINT that comes before is lost, not fatal, and `stop()` sends another.
    """

    RESEND_S = 1.0  # how long `stop()` waits for the generator before it signals again

    def __init__(self, command: list[str], cpu: int) -> None:
        self._command = command
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self._process = subprocess.Popen(
                pinned(command, cpu),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        finally:
            signal.signal(signal.SIGINT, previous)

    def stop(self, timeout: float = 60.0) -> LoadResult:
        """SIGINT: the generator stops loading and prints what it measured until then."""
        process = self._process
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
            try:
                stdout, stderr = process.communicate(timeout=self.RESEND_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self._command[0]} did not stop within {timeout}s"
                    ) from None
        if process.returncode != 0:
            raise RuntimeError(
                f"{self._command[0]} exited {process.returncode}:\n{stdout}\n{stderr}"
            )
        return parse_result(stdout)

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.communicate()


class LoadGenerator(Protocol):
    name: str
    version: str
    cpu: int  # the core it is pinned to (where pinning is possible)

    def run(self, base_url: str, spec: LoadSpec, duration_s: int, connections: int) -> LoadResult:
        """Load `base_url` for `duration_s` seconds over `connections` keep-alive connections."""
        ...

    def start(self, base_url: str, spec: LoadSpec, connections: int) -> RunningLoad:
        """Load `base_url` as `run` does, until `stop()` is called on the answer."""
        ...

    def on_cpu(self, cpu: int) -> LoadGenerator:
        """The same generator, pinned to core `cpu`."""
        ...


def parse_result(output: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(RESULT_MARK):
            record = json.loads(line.removeprefix(RESULT_MARK))
            return LoadResult(
                requests=int(record["requests"]),
                duration_s=float(record["duration_us"]) / 1e6,
                status_errors=int(record["status_errors"]),
                socket_errors=int(record["socket_errors"]),
                p50_ms=float(record["p50_us"]) / 1000,
                p99_ms=float(record["p99_us"]) / 1000,
                mean_ms=float(record["mean_us"]) / 1000,
            )
    raise RuntimeError(f"load generator printed no result line:\n{output[-2000:]}")


def _run_load(command: list[str], duration_s: int, cpu: int) -> LoadResult:
    completed = subprocess.run(
        pinned(command, cpu),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{command[0]} exited {completed.returncode}:\n{completed.stdout}\n{completed.stderr}"
        )
    return parse_result(completed.stdout)


# wrk runs LuaJIT; `done` reports in the same shape as the Python generator.
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%.0f,"duration_us":%.0f,"status_errors":%.0f,' ..
    '"socket_errors":%.0f,"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def wrk_script(spec: LoadSpec) -> str:
    """A wrk Lua script for `spec`: fixed method and path, or a random page per request."""
    if spec.browser_visitors > 0:
        return _wrk_browser_script(spec)
    if spec.body:
        return (
            f'wrk.method = "{spec.method}"\nwrk.path = "{spec.path}"\n'
            f'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [==[{spec.body}]==]\n{_WRK_DONE}"
        )
    if spec.pages <= 0:
        return f'wrk.method = "{spec.method}"\nwrk.path = "{spec.path}"\n{_WRK_DONE}'
    prefix, _, suffix = spec.path.partition(PAGE_PLACEHOLDER)
    return f"""
local requests = {{}}
init = function(args)
  math.randomseed(tonumber(args[1]) or os.time())
  for i = 0, {spec.pages - 1} do
    requests[i] = wrk.format("{spec.method}", "{prefix}" .. i .. "{suffix}")
  end
end
request = function()
  return requests[math.random(0, {spec.pages - 1})]
end
{_WRK_DONE}"""


def _wrk_browser_script(spec: LoadSpec) -> str:
    """Requests formatted per call: the paths and User-Agents are made once, in `init`, and a
    request is one table store and `wrk.format` (a few string joins): wrk stays far ahead of
    the server. The requests of pages x visitors could not all be made in advance."""
    prefix, _, suffix = spec.path.partition(PAGE_PLACEHOLDER)
    pages = max(spec.pages, 1)
    path = f'"{prefix}" .. i .. "{suffix}"' if spec.pages > 0 else f'"{spec.path}"'
    body = "nil"
    content_type = ""
    if spec.body:
        body = f"[==[{spec.body}]==]"
        content_type = '  headers["Content-Type"] = "application/json"\n'
    return f"""
local paths, agents, headers = {{}}, {{}}, {{}}
local body = {body}
init = function(args)
  math.randomseed(tonumber(args[1]) or os.time())
  for i = 0, {pages - 1} do
    paths[i] = {path}
  end
  for k = 0, {spec.browser_visitors - 1} do
    agents[k] = "{BROWSER_USER_AGENT} visitor/" .. k
  end
  headers["Host"] = wrk.headers["Host"]
  headers["Origin"] = "{BROWSER_ORIGIN}"
{content_type}end
request = function()
  headers["User-Agent"] = agents[math.random(0, {spec.browser_visitors - 1})]
  return wrk.format("{spec.method}", paths[math.random(0, {pages - 1})], headers, body)
end
{_WRK_DONE}"""


class _CommandLoad:
    """A load generator that is one command line: run it for a while, or until stopped."""

    cpu: int

    def _command(
        self, base_url: str, spec: LoadSpec, duration_s: int, connections: int
    ) -> list[str]:
        raise NotImplementedError

    def run(self, base_url: str, spec: LoadSpec, duration_s: int, connections: int) -> LoadResult:
        command = self._command(base_url, spec, duration_s, connections)
        return _run_load(command, duration_s, self.cpu)

    def start(self, base_url: str, spec: LoadSpec, connections: int) -> RunningLoad:
        return RunningLoad(self._command(base_url, spec, OPEN_ENDED_S, connections), self.cpu)

    def on_cpu(self, cpu: int) -> Self:
        moved = copy.copy(self)
        moved.cpu = cpu
        return moved


class WrkLoad(_CommandLoad):
    """`wrk` with one thread (it has one core), `--latency`, Lua scripts written to `script_dir`."""

    name = "wrk"

    def __init__(self, binary: str, script_dir: Path, cpu: int = LOAD_CPU) -> None:
        self.binary = binary
        self.script_dir = script_dir
        self.cpu = cpu
        self.version = _first_line([binary, "-v"])

    def _command(
        self, base_url: str, spec: LoadSpec, duration_s: int, connections: int
    ) -> list[str]:
        self.script_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(repr(spec).encode()).hexdigest()[:12]
        script = self.script_dir / f"{spec.method.lower()}-{digest}.lua"
        script.write_text(wrk_script(spec))
        path = spec.path.replace(PAGE_PLACEHOLDER, "0")
        return [
            self.binary, "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s",
            "--latency", "-s", str(script), f"{base_url}{path}", "--", "20260101",
        ]  # fmt: skip


class PythonLoad(_CommandLoad):
    """The fallback: `python -m bench.pyload` (asyncio + httpx), far slower than wrk."""

    name = "python (asyncio + httpx)"

    def __init__(self, cpu: int = LOAD_CPU) -> None:
        import httpx

        self.cpu = cpu
        self.version = f"httpx {httpx.__version__}, Python {sys.version.split()[0]}"

    def _command(
        self, base_url: str, spec: LoadSpec, duration_s: int, connections: int
    ) -> list[str]:
        return [
            sys.executable, "-m", "bench.pyload", "--base-url", base_url,
            "--method", spec.method, "--path", spec.path, "--pages", str(spec.pages),
            "--duration", str(duration_s), "--connections", str(connections),
            "--body", spec.body, "--browser-visitors", str(spec.browser_visitors),
        ]  # fmt: skip


def choose_load_generator(wanted: str, script_dir: Path) -> LoadGenerator:
    """`wrk` when asked for or found on PATH; the Python generator otherwise."""
    binary = shutil.which("wrk")
    if wanted == "wrk" and binary is None:
        raise SystemExit("bench: --load wrk, but wrk is not on PATH (apt-get install -y wrk)")
    if binary is not None and wanted in ("auto", "wrk"):
        return WrkLoad(binary, script_dir)
    return PythonLoad()


def _first_line(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "unknown"
    output = (completed.stdout or completed.stderr).strip()
    return output.splitlines()[0] if output else "unknown"
