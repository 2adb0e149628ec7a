"""A local Redis Cluster for the benchmark: 3 primaries and 3 replicas on loopback.

Built as an operator builds one: six cluster-enabled nodes (AOF on, as every node
of the benchmark), joined by `redis-cli --cluster create ... --cluster-replicas 1`,
then waited for until every node says `cluster_state:ok` with all slots served and
every replica's link to its primary is up (the service's `WAIT 1` needs one).

Kept apart from tests/support/cluster.py, which also reshards and injects faults:
the benchmark needs only a healthy cluster and the command counts of its primaries
(replicas replay the primaries' writes, so counting them would count each write twice).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import redis

from bench.processes import command_calls_on
from visit_counter.core.embedded_nodes import (
    CLUSTER_BUS_OFFSET,
    RedisNodeProcess,
    cli_binary,
    cluster_port,
)

PRIMARIES = 3
NODES = 2 * PRIMARIES  # one replica per primary
SLOTS = 16384
# Redis's default cluster-node-timeout: no node is declared failed (and failed over)
# because the load generator sharing its core delayed a gossip reply.
NODE_TIMEOUT_MS = 15_000
POLL_S = 0.1


def _info(port: int, section: str) -> dict[str, str]:
    with redis.Redis(port=port, socket_timeout=5, decode_responses=True) as client:
        found = client.info(section)
    return {str(key): str(value) for key, value in found.items()}


def _role(port: int) -> str:
    """`master` or `slave`, as INFO replication says."""
    return _info(port, "replication").get("role", "unknown")


def _not_ready(port: int) -> str | None:
    """What keeps node `port` from serving: its cluster state, or its replica link."""
    with redis.Redis(port=port, socket_timeout=5, decode_responses=True) as client:
        text = str(client.execute_command("CLUSTER", "INFO"))
    state = dict(line.split(":", 1) for line in text.split() if ":" in line)
    if state.get("cluster_state") != "ok" or state.get("cluster_slots_ok") != str(SLOTS):
        return f"node {port}: cluster_state:{state.get('cluster_state')}"
    replication = _info(port, "replication")
    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
        return f"replica {port}: master_link_status:{replication.get('master_link_status')}"
    return None


class BenchCluster:
    """Six nodes under `root` joined into one cluster: 3 primaries, one replica each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[RedisNodeProcess] = []
        self.primary_ports: list[int] = []  # found once the cluster is up
        self.create_command: list[str] = []

    @property
    def urls(self) -> str:
        """Every node as a startup node (REDIS_NODES): any one would do."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        """The nodes, the cluster over them, and every node ready; all stopped on a failure."""
        cli = cli_binary()
        try:
            taken: set[int] = set()
            for _ in range(NODES):
                port = cluster_port(taken)
                taken.update((port, port + CLUSTER_BUS_OFFSET))
                node = RedisNodeProcess(
                    port,
                    self.root / f"node-{port}",
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"nodes-{port}.conf",
                        "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                        # A new replica's first sync would wait 5 s for more replicas to join.
                        "--repl-diskless-sync-delay", "0",
                    ],
                )  # fmt: skip
                self.nodes.append(node)
                node.start()
            self.create_command = [
                cli, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes",
            ]  # fmt: skip
            done = subprocess.run(
                self.create_command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if done.returncode != 0:
                output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
                raise RuntimeError(f"cluster create exited {done.returncode}:\n{output}")
            self._wait_ready(timeout)
            self.primary_ports = [node.port for node in self.nodes if _role(node.port) == "master"]
            if len(self.primary_ports) != PRIMARIES:
                raise RuntimeError(f"expected {PRIMARIES} primaries, found {self.primary_ports}")
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            problems = [p for node in self.nodes if (p := _not_ready(node.port)) is not None]
            if not problems:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster was not ready within {timeout}s: {problems}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # one stuck node must not keep the others running
                print(f"bench: stopping cluster node {node.port} failed: {exc}", file=sys.stderr)

    def command_calls(self) -> dict[str, int]:
        """Calls per command, summed over the primaries (INFO commandstats).

        Raises when a primary is one no longer: after a failover the counts would mix
        a replica's replay with a primary's work.
        """
        for port in self.primary_ports:
            if _role(port) != "master":
                raise RuntimeError(f"cluster node {port} is no longer a primary (a failover)")
        return command_calls_on(self.primary_ports)
