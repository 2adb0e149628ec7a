"""One benchmark session: scenarios measured on running servers, Redis commands counted.

A scenario's run is the load generator's window on its server, then the wait until
everything the server accepted in it has reached the nodes (its metrics show no
pending visit, the nodes' command counts stand still): those commands belong to
this run, not the next.
"""

from __future__ import annotations

import time
from typing import Protocol

from bench.load import LoadGenerator
from bench.processes import ServerProcess, counting_calls
from bench.results import BenchConfig, Measurement
from bench.scenarios import SCENARIOS, Scenario
from bench.service import wait_flushed
from visit_counter.core.embedded_nodes import RedisNodeProcess

SETTLE_STEP_S = 0.2
SETTLE_TIMEOUT_S = 5.0
SEED_S = 3  # at most: the load that writes what read scenarios read, when it has not run


class CountedNodes(Protocol):
    """Nodes whose commands a session counts: three standalone nodes, or a cluster's primaries."""

    @property
    def nodes(self) -> list[RedisNodeProcess]: ...

    def command_calls(self) -> dict[str, int]: ...


class Session:
    """One benchmark session over running nodes and servers."""

    def __init__(
        self,
        config: BenchConfig,
        nodes: CountedNodes,
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

    def seed(self) -> None:
        """Store what read scenarios read when the scenario that writes it does not run
        before them: its load for a few seconds, flushed (e.g. `--scenarios op`)."""
        ran: set[str] = set()
        for scenario in self.config.scenarios:
            source = scenario.reads_data_of
            if source and source not in ran:
                writer = next(s for s in SCENARIOS if s.key == source)
                seconds = min(SEED_S, self.config.duration_s)
                print(f"bench: {seconds}s of {writer.label} first, for {scenario.label}",
                      flush=True)  # fmt: skip
                server = self.servers[writer.server]
                self.load.run(server.url, writer.load, seconds, self.config.connections)
                self._settle(writer)
                ran.add(source)
            ran.add(scenario.key)

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
        self.seed()
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
