"""A real Redis Cluster on loopback for tests: 3 primaries, 3 replicas, and the faults to inject.

`LocalCluster` runs six `RedisNodeProcess`es with `--cluster-enabled yes` (AOF on, like
every node the service uses), joins them with `redis-cli --cluster create ... --cluster-replicas 1`
and waits until the cluster serves all 16384 slots. Tests then ask it who is primary, move
slots (`redis-cli --cluster reshard`), kill or pause a node and wait for the cluster to heal.

The topology is always read from the nodes themselves (`CLUSTER NODES`, `CLUSTER INFO`), never
from what the harness believes it did: after a failover the nodes are the only truth. Paused
nodes are never asked anything (they would answer only after a timeout).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis

from visit_counter.core.embedded_nodes import (
    CLUSTER_BUS_OFFSET,
    RedisNodeProcess,
    cli_binary,
    cluster_port,
)

CLUSTER_SLOTS = 16384
PRIMARY_COUNT = 3
NODE_COUNT = 2 * PRIMARY_COUNT  # one replica per primary
CLIENT_TIMEOUT = 2.0
POLL_INTERVAL = 0.1

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The local cluster could not be built, or did not reach a wanted state in time."""


@dataclass(frozen=True)
class ClusterNode:
    """One line of `CLUSTER NODES`, as the node that was asked sees that node."""

    node_id: str
    port: int
    flags: frozenset[str]
    primary_id: str | None  # the primary a replica follows; None for a primary
    slots: frozenset[int]  # the slots it serves (open migrating/importing marks left out)
    open_slots: bool  # `[slot->-id]` / `[slot-<-id]` entries: a migration not finished

    @property
    def is_primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged `fail` by the cluster (a suspicion alone, `fail?`, does not count)."""
        return "fail" in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """`CLUSTER NODES` output: `<id> <ip:port@cport[,host]> <flags> <primary> ... <slots>...`."""
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        node_id, address, flags, primary = fields[:4]
        port = int(address.split("@")[0].rsplit(":", 1)[1])
        slots: set[int] = set()
        open_slots = False
        for entry in fields[8:]:
            if entry.startswith("["):
                open_slots = True
                continue
            first, _, last = entry.partition("-")
            slots.update(range(int(first), int(last or first) + 1))
        nodes.append(
            ClusterNode(
                node_id=node_id,
                port=port,
                flags=frozenset(flags.split(",")),
                primary_id=None if primary == "-" else primary,
                slots=frozenset(slots),
                open_slots=open_slots,
            )
        )
    return nodes


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=CLIENT_TIMEOUT,
        socket_connect_timeout=CLIENT_TIMEOUT,
        decode_responses=True,
    )


def _wait_until(check: Callable[[], T | str], timeout: float, what: str) -> T:
    """Poll `check` until it returns something that is not a str; a str says what is missing."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            outcome = check()
        except redis.RedisError as error:
            outcome = f"{type(error).__name__}: {error}"
        if not isinstance(outcome, str):
            return outcome
        if time.monotonic() >= deadline:
            raise ClusterError(f"{what}: not reached within {timeout}s; last seen: {outcome}")
        time.sleep(POLL_INTERVAL)


class LocalCluster:
    """Six cluster-enabled nodes under `root` (3 primaries, 3 replicas) and their faults."""

    def __init__(
        self, root: Path, node_timeout_ms: int = 2000, extra_args: Sequence[str] = ()
    ) -> None:
        """`node_timeout_ms` is `cluster-node-timeout`: how long a silent node takes to be
        declared failed (and so the least a failover takes). `extra_args` go to every server."""
        self.root = root
        self.node_timeout_ms = node_timeout_ms
        self.extra_args = tuple(extra_args)
        self._nodes: list[RedisNodeProcess] = []
        self._node_ids: dict[int, str] = {}
        self._paused: set[int] = set()
        self._followers: dict[int, list[int]] = {}  # faulted primary's port -> its replicas
        self._reshards: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}  # by pid
        self._reshard_count = 0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Start the six nodes, create the cluster and wait until it is stable."""
        cli = cli_binary()
        try:
            taken: set[int] = set()
            for _ in range(NODE_COUNT):
                port = cluster_port(taken)
                taken.update((port, port + CLUSTER_BUS_OFFSET))
                node = RedisNodeProcess(
                    port, self.root / f"node-{port}", extra_args=self._server_args(port)
                )
                node.start()
                self._nodes.append(node)
            for node in self._nodes:
                with _client(node.port) as client:
                    self._node_ids[node.port] = str(client.execute_command("CLUSTER", "MYID"))
            addresses = [f"127.0.0.1:{node.port}" for node in self._nodes]
            create = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1"]
            self._run_cli([*create, "--cluster-yes"], timeout, "cluster create")
            self.wait_stable(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node whatever state the test left them in (paused ones resumed first),
        and kill a reshard still running."""
        for process, _ in self._reshards.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        self._reshards.clear()
        for port in sorted(self._paused):
            if self.node(port).running:
                self.node(port).resume()
        self._paused.clear()
        with contextlib.ExitStack() as stopping:  # every node is stopped even if one raises
            for node in self._nodes:
                stopping.callback(node.stop)

    @property
    def nodes(self) -> list[RedisNodeProcess]:
        """The six processes, in the order given to `redis-cli --cluster create`."""
        return list(self._nodes)

    @property
    def startup_urls(self) -> list[str]:
        return [node.url for node in self._nodes]

    def node(self, port: int) -> RedisNodeProcess:
        for node in self._nodes:
            if node.port == port:
                return node
        raise KeyError(f"no node of this cluster on port {port}")

    def node_id(self, port: int) -> str:
        """The node's cluster id (fixed for its lifetime, kept in its nodes-<port>.conf)."""
        return self._node_ids[port]

    def live_ports(self) -> list[int]:
        """Ports of the nodes that run and are not paused: the ones that can answer."""
        return [node.port for node in self._nodes if node.running and node.port not in self._paused]

    # --- topology, as the nodes report it -------------------------------------------------

    def topology(self, port: int | None = None) -> list[ClusterNode]:
        """`CLUSTER NODES` as node `port` sees it (default: the first live node)."""
        asked = port if port is not None else self._first_live_port()
        with _client(asked) as client:
            return parse_cluster_nodes(str(client.execute_command("CLUSTER", "NODES")))

    def primaries(self) -> list[ClusterNode]:
        """Primaries not flagged failed, in port order."""
        found = [node for node in self.topology() if node.is_primary and not node.failed]
        return sorted(found, key=lambda node: node.port)

    def replicas(self) -> list[ClusterNode]:
        """Replicas not flagged failed (`primary_id` says whom each follows), in port order."""
        found = [node for node in self.topology() if not node.is_primary and not node.failed]
        return sorted(found, key=lambda node: node.port)

    def replicas_of(self, port: int) -> list[int]:
        primary_id = self.node_id(port)
        return [node.port for node in self.replicas() if node.primary_id == primary_id]

    def slots_of(self, port: int) -> frozenset[int]:
        """The slots node `port` serves, as the first live node sees it."""
        return next(node.slots for node in self.topology() if node.port == port)

    def flush(self) -> None:
        """FLUSHALL on every primary (replicas follow)."""
        for primary in self.primaries():
            with _client(primary.port) as client:
                client.flushall()

    # --- faults ---------------------------------------------------------------------------

    def kill_primary(self, port: int) -> None:
        """SIGKILL a primary; `wait_for_failover(port)` then waits for one of its replicas."""
        if port not in {node.port for node in self.primaries()}:
            raise ClusterError(f"port {port} is not a primary of this cluster")
        self._followers[port] = self.replicas_of(port)
        self.node(port).kill()

    def pause(self, port: int) -> None:
        """SIGSTOP: the node keeps its sockets but answers nothing (nor gossips)."""
        if port in {node.port for node in self.primaries()}:
            self._followers[port] = self.replicas_of(port)
        self.node(port).pause()
        self._paused.add(port)

    def resume(self, port: int) -> None:
        self.node(port).resume()
        self._paused.discard(port)

    def wait_for_failover(self, dead_port: int, timeout: float = 30.0) -> int:
        """Wait until a replica of the killed (or paused) primary is a primary serving slots in
        every live node's view, and every live node reports `cluster_state:ok`; its port."""
        if dead_port not in self._followers:
            raise ClusterError(f"{dead_port} was not faulted as a primary (kill_primary/pause)")
        followers = self._followers[dead_port]
        if not followers:
            raise ClusterError(f"primary {dead_port} had no replica to promote")

        def promoted() -> int | str:
            chosen: set[int] = set()
            for port in self.live_ports():
                view = self.topology(port)
                serving = {n.port for n in view if n.is_primary and not n.failed and n.slots}
                if not serving & set(followers):
                    return f"node {port} sees none of {followers} as a primary with slots"
                chosen |= serving & set(followers)
                if (problem := _state_problem(port)) is not None:
                    return problem
            if len(chosen) != 1:
                return f"live nodes disagree on the promoted replica: {sorted(chosen)}"
            return chosen.pop()

        return _wait_until(promoted, timeout, f"failover of primary {dead_port}")

    # --- resharding -----------------------------------------------------------------------

    def reshard(
        self, source_port: int, target_port: int, slots: int, timeout: float = 120.0
    ) -> None:
        """Move `slots` slots (and their keys) from one primary to another, then wait stable."""
        process = self.start_reshard(source_port, target_port, slots)
        self.finish_reshard(process, timeout)
        self.wait_stable(timeout)

    def start_reshard(
        self, source_port: int, target_port: int, slots: int
    ) -> subprocess.Popen[bytes]:
        """The same move in the background, so a test can run load meanwhile. Pass the
        process to `finish_reshard`; `stop()` kills it if the test does not."""
        self._reshard_count += 1
        log_path = self.root / f"reshard-{self._reshard_count}-{source_port}-{target_port}.log"
        command = [
            cli_binary(), "--cluster", "reshard", f"127.0.0.1:{source_port}",
            "--cluster-from", self.node_id(source_port),
            "--cluster-to", self.node_id(target_port),
            "--cluster-slots", str(slots),
            "--cluster-yes",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._reshards[process.pid] = (process, log_path)
        return process

    def finish_reshard(self, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
        """Wait for a `start_reshard` process; ClusterError (with its output) if it failed."""
        _, log_path = self._reshards.pop(process.pid)
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ClusterError(f"reshard still running after {timeout}s; see {log_path}") from None
        if returncode != 0:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise ClusterError(f"reshard exited with {returncode}:\n{tail}")

    # --- waiting for a healthy cluster ----------------------------------------------------

    def wait_stable(self, timeout: float = 30.0) -> None:
        """Wait until every live node reports `cluster_state:ok` with all slots served, has no
        migrating/importing slot, agrees with the others on who follows whom and who serves
        which slot, and (if a replica) has its link to its primary up."""

        def stable() -> str | None:
            layouts: set[frozenset[tuple[str, str | None, frozenset[int]]]] = set()
            for port in self.live_ports():
                if (problem := _state_problem(port)) is not None:
                    return problem
                view = self.topology(port)
                myself = next(node for node in view if "myself" in node.flags)
                if myself.open_slots:
                    return f"node {port} has a migrating or importing slot"
                if not myself.is_primary and (problem := _replica_link_problem(port)):
                    return problem
                layouts.add(_layout(view))
            if len(layouts) > 1:
                return "live nodes disagree on roles or on who serves which slot"
            return None

        _wait_until(stable, timeout, "a stable cluster")

    # --- internals ------------------------------------------------------------------------

    def _server_args(self, port: int) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A new replica's first sync would wait 5 s (the default) for more replicas to join.
            "--repl-diskless-sync-delay", "0",
            *self.extra_args,
        ]  # fmt: skip

    def _first_live_port(self) -> int:
        live = self.live_ports()
        if not live:
            raise ClusterError("no node of the cluster is running and unpaused")
        return live[0]

    def _run_cli(self, command: list[str], timeout: float, what: str) -> None:
        try:
            done = subprocess.run(
                command, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(f"{what} did not finish within {timeout}s") from None
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise ClusterError(f"{what} exited with {done.returncode}:\n{output}")


def _layout(view: list[ClusterNode]) -> frozenset[tuple[str, str | None, frozenset[int]]]:
    """Who follows whom and who serves which slots, among the nodes not (suspected) failed.
    Right after a change the views differ (gossip spreads it), so stable means all agree."""
    return frozenset(
        (node.node_id, node.primary_id, node.slots)
        for node in view
        if not node.flags & {"fail", "fail?"}
    )


def _state_problem(port: int) -> str | None:
    """What `CLUSTER INFO` on `port` says is wrong, or None when all slots are served."""
    with _client(port) as client:
        text = str(client.execute_command("CLUSTER", "INFO"))
    info = dict(line.split(":", 1) for line in text.split() if ":" in line)
    if info.get("cluster_state") != "ok":
        return f"node {port}: cluster_state:{info.get('cluster_state')}"
    if info.get("cluster_slots_ok") != str(CLUSTER_SLOTS):
        return f"node {port}: cluster_slots_ok:{info.get('cluster_slots_ok')}"
    return None


def _replica_link_problem(port: int) -> str | None:
    with _client(port) as client:
        link = client.info("replication").get("master_link_status")
    return None if link == "up" else f"replica {port}: master_link_status:{link}"
