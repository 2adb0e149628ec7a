"""Load generators, each a separate process on the load core: `wrk`, or a Python fallback.

Both print one line `BENCH_RESULT {json}` (requests, duration, errors, latency
percentiles), so the harness reads the same numbers whichever one ran.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.processes import LOAD_CPU, REPO_ROOT, pinned

RESULT_MARK = "BENCH_RESULT "
PAGE_PLACEHOLDER = "{page}"


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What every request looks like: `path` may hold `{page}`, then a random page per request."""

    method: str
    path: str
    pages: int = 0  # > 0: `{page}` is page-0 .. page-(pages-1), drawn uniformly per request


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


class LoadGenerator(Protocol):
    name: str
    version: str

    def run(self, base_url: str, spec: LoadSpec, duration_s: int, connections: int) -> LoadResult:
        """Load `base_url` for `duration_s` seconds over `connections` keep-alive connections."""
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


def _run_load(command: list[str], duration_s: int) -> LoadResult:
    completed = subprocess.run(
        pinned(command, LOAD_CPU),
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


class WrkLoad:
    """`wrk` with one thread (it has one core), `--latency`, Lua scripts written to `script_dir`."""

    name = "wrk"

    def __init__(self, binary: str, script_dir: Path) -> None:
        self.binary = binary
        self.script_dir = script_dir
        self.version = _first_line([binary, "-v"])

    def run(self, base_url: str, spec: LoadSpec, duration_s: int, connections: int) -> LoadResult:
        self.script_dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1(repr(spec).encode()).hexdigest()[:12]
        script = self.script_dir / f"{spec.method.lower()}-{digest}.lua"
        script.write_text(wrk_script(spec))
        path = spec.path.replace(PAGE_PLACEHOLDER, "0")
        command = [
            self.binary, "-t1", f"-c{connections}", f"-d{duration_s}s", "--timeout", "10s",
            "--latency", "-s", str(script), f"{base_url}{path}", "--", "20260101",
        ]  # fmt: skip
        return _run_load(command, duration_s)


class PythonLoad:
    """The fallback: `python -m bench.pyload` (asyncio + httpx), far slower than wrk."""

    name = "python (asyncio + httpx)"

    def __init__(self) -> None:
        import httpx

        self.version = f"httpx {httpx.__version__}, Python {sys.version.split()[0]}"

    def run(self, base_url: str, spec: LoadSpec, duration_s: int, connections: int) -> LoadResult:
        command = [
            sys.executable, "-m", "bench.pyload", "--base-url", base_url,
            "--method", spec.method, "--path", spec.path, "--pages", str(spec.pages),
            "--duration", str(duration_s), "--connections", str(connections),
        ]  # fmt: skip
        return _run_load(command, duration_s)


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
