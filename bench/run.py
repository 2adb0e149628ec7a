"""Run the side-by-side benchmark and write `docs/benchmarks.md` and its PNG chart.

    python -m bench.run [--duration S] [--runs N] [--connections C] [--out docs/benchmarks.md]
                        [--warmup S] [--load auto|wrk|python] [--smoke]

Starts three nodes and four single-worker uvicorn servers (the service, the same
with its read cache off, the same with the per-visit log on, the raw ASGI app)
on loopback, pinned to CPU 0;
loads them from `wrk` (or the Python fallback) pinned to CPU 1; goes through
every scenario once per run, runs interleaved so machine drift cancels out.
Every child process is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.flush import measure_flush_ms
from bench.load import LoadGenerator, choose_load_generator
from bench.processes import (
    REPO_ROOT,
    NodeSet,
    ServerProcess,
    counting_calls,
    pin_self_to_load_cpu,
)
from bench.report import write_outputs
from bench.results import BenchConfig, Measurement
from bench.scenarios import API, JOURNAL, MAIN, NO_CACHE, RAW, SCENARIOS, Scenario

DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"
SETTLE_STEP_S = 0.2
SETTLE_TIMEOUT_S = 5.0


def service_env(nodes: NodeSet, data_dir: Path, batch_interval_s: float) -> dict[str, str]:
    """Every setting the numbers depend on, explicit (a developer's `.env` is never read)."""
    return {
        "JOURNAL_VISITS": "false",
        "REDIS_NODES": nodes.urls,
        "DATA_DIR": str(data_dir),
        # In the temporary root, removed afterwards; the default (/dev/shm) would outlive it.
        "PROMETHEUS_DIR": str(data_dir / "prometheus"),
        "API_PREFIX": API,
        "BATCH_INTERVAL_SECONDS": str(batch_interval_s),
        "BATCH_SIZE_LIMIT": "1000",
        "CACHE_TTL_SECONDS": "5",
        "CACHE_CAPACITY": "1000",
        "HEALTH_CHECK_INTERVAL_SECONDS": "5",
        "ENABLE_METRICS": "true",
        "DEBUG": "false",
    }


def build_servers(nodes: NodeSet, root: Path, batch_interval_s: float) -> dict[str, ServerProcess]:
    """The service three ways (as configured, read cache off, visit log on) and the raw app."""
    variants = {MAIN: {}, NO_CACHE: {"CACHE_TTL_SECONDS": "0"}, JOURNAL: {"JOURNAL_VISITS": "true"}}
    servers = {
        name: ServerProcess(
            name,
            "bench.apps:create_bench_app",
            {**service_env(nodes, root / f"data-{name}", batch_interval_s), **overrides},
            root,
            factory=True,
        )
        for name, overrides in variants.items()
    }
    servers[RAW] = ServerProcess(RAW, "bench.raw_asgi:app", {}, root, factory=False)
    return servers


def wait_flushed(server: ServerProcess, timeout: float) -> None:
    """Until the service holds no unflushed visit (its metrics say so), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(f"{server.url}{API}/counter/metrics", timeout=5) as answer:
            metrics = json.load(answer)["metrics"]
        if metrics["pending_visits"] == 0 and metrics["write_buffer_size"] == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service did not flush within {timeout}s: {metrics}")
        time.sleep(0.05)


class Session:
    """One benchmark session over running nodes and servers."""

    def __init__(
        self,
        config: BenchConfig,
        nodes: NodeSet,
        servers: dict[str, ServerProcess],
        load: LoadGenerator,
    ) -> None:
        self.config = config
        self.nodes = nodes
        self.servers = servers
        self.load = load
        self.flush_timeout = 3 * config.batch_interval_s + 10

    def _settle(self, scenario: Scenario) -> dict[str, int]:
        """Let the run's tail reach the nodes; return the command counts once they stand still.

        Requests in flight when the load generator stops still finish on the server,
        and buffered visits wait for the flusher: both belong to this run, not the next.
        """
        if scenario.records_visits:
            wait_flushed(self.servers[scenario.server], self.flush_timeout)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        calls = self.nodes.command_calls()
        while time.monotonic() < deadline:
            time.sleep(SETTLE_STEP_S)
            later = self.nodes.command_calls()
            if counting_calls(later) == counting_calls(calls):
                return later
            calls = later
        return calls

    def warm_up(self) -> None:
        for scenario in self.config.scenarios:
            server = self.servers[scenario.server]
            self.load.run(server.url, scenario.load, self.config.warmup_s, self.config.connections)
            self._settle(scenario)

    def measure(self, scenario: Scenario, run: int) -> Measurement:
        server = self.servers[scenario.server]
        before = self.nodes.command_calls()
        paused = self.nodes.nodes[0] if scenario.pause_node else None
        if paused is not None:
            paused.pause()
        try:
            result = self.load.run(
                server.url, scenario.load, self.config.duration_s, self.config.connections
            )
        finally:
            if paused is not None:
                paused.resume()
        after = self._settle(scenario)
        delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
        return Measurement(
            scenario=scenario.key,
            run=run,
            load=result,
            commands={name: calls for name, calls in delta.items() if calls > 0},
            rss_bytes=server.rss_bytes(),
        )

    def run_all(self) -> list[Measurement]:
        if self.config.warmup_s > 0:
            print(f"bench: warm-up, {self.config.warmup_s}s per scenario", flush=True)
            self.warm_up()
        measurements = []
        for run in range(1, self.config.runs + 1):
            for scenario in self.config.scenarios:
                measurement = self.measure(scenario, run)
                measurements.append(measurement)
                print(f"bench: run {run}/{self.config.runs} {describe(scenario, measurement)}")
        return measurements


def describe(scenario: Scenario, measurement: Measurement) -> str:
    load = measurement.load
    per_1k = 1000 * measurement.counting_commands / load.accepted if load.accepted else 0.0
    errors = load.status_errors + load.socket_errors
    return (
        f"{scenario.label}: {load.requests_per_s:,.0f} req/s, p50 {load.p50_ms:.2f} ms, "
        f"p99 {load.p99_ms:.2f} ms, {per_1k:,.1f} Redis cmds/1k, "
        f"RSS {measurement.rss_bytes / 2**20:.1f} MiB" + (f", {errors} errors" if errors else "")
    )


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: children get stopped


def run_session(config: BenchConfig) -> tuple[list[Measurement], dict[str, Any]]:
    pinned = pin_self_to_load_cpu()  # before any child starts: the nodes inherit the load core
    with tempfile.TemporaryDirectory(prefix="visit-counter-bench-") as tmp:
        root = Path(tmp)
        load = choose_load_generator(config.load, root / "wrk")
        nodes = NodeSet(root / "nodes")
        servers: dict[str, ServerProcess] = {}
        try:
            nodes.start()
            servers = build_servers(nodes, root, config.batch_interval_s)
            for server in servers.values():
                server.launch()
            for server in servers.values():
                server.wait_ready()
            print(f"bench: load from {load.name}; servers up: "
                  + ", ".join(f"{name} {server.url}" for name, server in servers.items()),
                  flush=True)  # fmt: skip
            measurements = Session(config, nodes, servers, load).run_all()
            for server in servers.values():
                server.stop()
            flush_ms = measure_flush_ms(nodes.urls, root / "data-flush")
        finally:
            for server in servers.values():  # before the nodes: the final flush reaches them
                try:
                    server.stop()
                except Exception as exc:
                    print(f"bench: stopping {server.name} failed: {exc}", file=sys.stderr)
            nodes.stop()
        context = {
            "flush_10k_ms": flush_ms,
            "pinned": pinned,
            "load_generator": load.name,
            "load_generator_version": load.version,
            "server_commands": {
                name: shlex.join(server.command()) for name, server in servers.items()
            },
        }
    return measurements, context


def parse_args(argv: Sequence[str] | None) -> BenchConfig:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario and run")
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs (median reported)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="seconds per scenario before run 1")
    parser.add_argument("--batch-interval", type=float, default=1.0, help="BATCH_INTERVAL_SECONDS")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report path (.md)")
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--scenarios",
        default="".join(s.key for s in SCENARIOS),
        help="which scenarios, by letter (default: all, e.g. 'ae' for a and e only)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="1 s per scenario, 1 run, no warm-up: checks wiring"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.runs, args.warmup = 1, 1, 0
    known = {s.key for s in SCENARIOS}
    if not args.scenarios or not set(args.scenarios) <= known:
        parser.error(f"--scenarios takes letters from {''.join(sorted(known))}")
    if args.duration < 1 or args.runs < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --runs and --connections must be at least 1, --warmup >= 0")
    return BenchConfig(
        duration_s=args.duration,
        runs=args.runs,
        connections=args.connections,
        warmup_s=args.warmup,
        batch_interval_s=args.batch_interval,
        out=args.out,
        load=args.load,
        smoke=args.smoke,
        scenarios=tuple(s for s in SCENARIOS if s.key in args.scenarios),
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    load_before = os.getloadavg()
    measurements, context = run_session(config)
    context["load_average"] = {"before": load_before, "after": os.getloadavg()}
    context["command"] = shlex.join(
        ["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
    )
    context["wall_seconds"] = time.monotonic() - started

    written = write_outputs(config, measurements, context)
    print("bench: wrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
