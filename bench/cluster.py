"""Scenario (b) on a Redis Cluster beside the same on the ring (issue 11).

Three standalone nodes with a server in ring mode (as in the scenarios), and six
cluster nodes (3 primaries, 3 replicas, `bench/cluster_nodes.py`) with a server in
cluster mode (`REDIS_MODE=cluster`, every cluster node a startup node,
`REDIS_MIN_REPLICAS_ACK=1`: each primary's part of a flush ends with `WAIT 1`). The
same app, settings and load generator on both; runs interleaved (run 1: ring,
cluster; run 2: ...) so machine drift hits both alike. Then a 10,000-page flush,
timed in process, on each.

Redis commands on the cluster are counted on its three primaries only: the replicas
replay every write they get, and counting them would count each write twice. WAIT
and ASKING count (a flush sends them); reading the slot map and the cluster's state
(`CLUSTER ...`, READONLY) is housekeeping, as PING is (bench/processes.py).

Every node runs where this harness runs (CPU 1), the servers on CPU 0, one at a time
under load.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.cluster_nodes import NODE_TIMEOUT_MS, BenchCluster
from bench.flush import measure_flush_ms
from bench.load import LoadGenerator
from bench.processes import NodeSet, ServerProcess, can_pin
from bench.results import BenchConfig, Measurement
from bench.scenarios import MAIN, SCENARIOS
from bench.service import service_env
from bench.session import Session, describe
from bench.summary import Summary, summarize
from visit_counter.core.config import CLUSTER_BATCH_SIZE_LIMIT

THROUGHPUT_GOAL = 0.9  # POST req/s on the cluster / on the ring, at least
# Redis commands per 1,000 visits on the cluster, at most: issue 13's budget, with every
# analytics structure written. Issue 11 set 1,100 when a flush stored the counts alone; the
# day of each page (one HINCRBY per page) and the buckets' totals came with issue 13.
COMMANDS_GOAL = 4_000
FLUSH_GOAL_MS = 200  # a 10,000-page flush on the cluster, below (the slowest of the repeats)
MIN_REPLICAS_ACK = 1
SPREAD = next(scenario for scenario in SCENARIOS if scenario.key == "b")
RING, CLUSTER = "ring", "cluster"


@dataclass(frozen=True, slots=True)
class Goal:
    name: str
    value: float
    target: str  # e.g. ">= 0.9"
    met: bool


@dataclass(frozen=True, slots=True)
class ClusterResult:
    ring: list[Measurement]  # scenario (b) on the three standalone nodes, one per run
    cluster: list[Measurement]  # the same on the cluster (commands: its primaries)
    flush_ms: dict[str, float]  # 10,000 pages on the cluster: median, max, repeats
    ring_flush_ms: dict[str, float]  # the same on the three nodes, for comparison
    ring_server_command: str
    cluster_server_command: str
    create_command: str  # redis-cli --cluster create ...
    node_timeout_ms: int
    min_replicas_ack: int
    pinned: bool  # False: fewer than 2 cores or no affinity support, nothing was pinned
    smoke: bool = False

    @property
    def ring_summary(self) -> Summary:
        return summarize(self.ring)[SPREAD.key]

    @property
    def cluster_summary(self) -> Summary:
        return summarize(self.cluster)[SPREAD.key]

    @property
    def throughput_ratio(self) -> float:
        ring = self.ring_summary.rps_median
        return self.cluster_summary.rps_median / ring if ring else float("nan")

    @property
    def commands_per_1k(self) -> float:
        """Counting commands on the primaries (no PING, INFO, CLUSTER ...) per 1,000 visits."""
        return self.cluster_summary.commands_per_1k

    @property
    def goals(self) -> list[Goal]:
        return [
            Goal(
                "POST throughput, cluster / ring (scenario b)",
                self.throughput_ratio,
                f">= {THROUGHPUT_GOAL:g}",
                self.throughput_ratio >= THROUGHPUT_GOAL,
            ),
            Goal(
                "Redis commands per 1,000 visits on the cluster (b; issue 13's budget)",
                self.commands_per_1k,
                f"<= {COMMANDS_GOAL:,}",
                self.commands_per_1k <= COMMANDS_GOAL,
            ),
            Goal(
                "10,000-page flush on the cluster, ms (slowest repeat)",
                self.flush_ms["max"],
                f"< {FLUSH_GOAL_MS}",
                self.flush_ms["max"] < FLUSH_GOAL_MS,
            ),
        ]


def cluster_env(node_urls: str, data_dir: Path, batch_interval_s: float) -> dict[str, str]:
    """The scenarios' service settings, in cluster mode (with cluster mode's default
    BATCH_SIZE_LIMIT: a flush there costs a script call per bucket, see config.py)."""
    return {
        **service_env(node_urls, data_dir, batch_interval_s),
        "BATCH_SIZE_LIMIT": str(CLUSTER_BATCH_SIZE_LIMIT),
        "REDIS_MODE": "cluster",
        "REDIS_MIN_REPLICAS_ACK": str(MIN_REPLICAS_ACK),
    }


def run_cluster_section(config: BenchConfig, root: Path, load: LoadGenerator) -> ClusterResult:
    """The whole section on its own nodes and servers; every process stopped on the way out."""
    root = root / "cluster"
    ring_nodes = NodeSet(root / "ring-nodes")
    cluster = BenchCluster(root / "cluster-nodes")
    servers: dict[str, ServerProcess] = {}
    try:
        ring_nodes.start()
        print("bench: cluster: creating a cluster of 3 primaries and 3 replicas", flush=True)
        cluster.start()
        servers = {
            RING: ServerProcess(
                RING,
                "bench.apps:create_bench_app",
                service_env(ring_nodes.urls, root / "data-ring", config.batch_interval_s),
                root,
                factory=True,
            ),
            CLUSTER: ServerProcess(
                CLUSTER,
                "bench.apps:create_bench_app",
                cluster_env(cluster.urls, root / "data-cluster", config.batch_interval_s),
                root,
                factory=True,
            ),
        }
        for server in servers.values():
            server.launch()
        for server in servers.values():
            server.wait_ready()
        only_b = dataclasses.replace(config, scenarios=(SPREAD,))
        sessions = {
            RING: Session(only_b, ring_nodes, {MAIN: servers[RING]}, load),
            CLUSTER: Session(only_b, cluster, {MAIN: servers[CLUSTER]}, load),
        }
        if config.warmup_s > 0:
            print(f"bench: cluster: warm-up, {config.warmup_s}s on each", flush=True)
            for session in sessions.values():
                session.warm_up()
        measured: dict[str, list[Measurement]] = {RING: [], CLUSTER: []}
        for run in range(1, config.runs + 1):
            for name, session in sessions.items():
                measurement = session.measure(SPREAD, run)
                measured[name].append(measurement)
                print(f"bench: cluster: run {run}/{config.runs} on the {name}: "
                      f"{describe(SPREAD, measurement)}", flush=True)  # fmt: skip
        commands = {name: shlex.join(server.command()) for name, server in servers.items()}
        for server in servers.values():
            server.stop()
        flush_ms = measure_flush_ms(cluster.urls, root / "data-flush-cluster", mode="cluster")
        ring_flush_ms = measure_flush_ms(ring_nodes.urls, root / "data-flush-ring")
    finally:
        for server in servers.values():  # before the nodes: the final flush reaches them
            try:
                server.stop()
            except Exception as exc:
                print(f"bench: stopping {server.name} failed: {exc}", file=sys.stderr)
        cluster.stop()
        ring_nodes.stop()
    return ClusterResult(
        ring=measured[RING],
        cluster=measured[CLUSTER],
        flush_ms=flush_ms,
        ring_flush_ms=ring_flush_ms,
        ring_server_command=commands[RING],
        cluster_server_command=commands[CLUSTER],
        create_command=shlex.join(cluster.create_command),
        node_timeout_ms=NODE_TIMEOUT_MS,
        min_replicas_ack=MIN_REPLICAS_ACK,
        pinned=can_pin(),
        smoke=config.smoke,
    )


def describe_cluster(result: ClusterResult) -> str:
    """The console's summary of the section."""
    return "bench: cluster: " + "; ".join(
        f"{goal.name} {goal.value:,.2f} (goal {goal.target}: {'met' if goal.met else 'NOT MET'})"
        for goal in result.goals
    )
