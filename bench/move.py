"""Moving pages from 3 nodes to 4 while the service takes POSTs (issue 10).

Four fresh nodes. `pages` pages (`page-0` ...) are stored on the first three, each
on its owner under the topology the service would store (version 1, stored first
by the app's own NodeSet), each with a known count. The service (the same server
and settings as the scenarios) runs on the three; then:

1. warm-up, then the *before* window: POST load as scenario (b), over the first
   10,000 stored pages (so a quarter of the loaded pages move);
2. `python -m app nodes add <4th node>` as a subprocess, the same load running from
   its start until it exits: the *during* window;
3. the *after* window, as long as the before one (on 4 nodes now): it shows how far
   the machine drifted meanwhile; the goals compare during with before only;
4. once the service has flushed: every page key on the four nodes is read. Their sum
   must be the stored total plus the visits the service accepted, every page must be
   on exactly one node, its owner under the new ring.

The mover is not pinned: it may run on both cores, as it would on a 2-core machine. It
runs under `nice -n 10`, as an operator would run it on a host that serves: here it
shares two cores with the server, the nodes and the load generator, which in
production it would not.
The load generator (a stand-in for remote clients) runs beside the nodes, as in the
scenarios, or (`placement`) beside the server: the move's work (the mover, and the
nodes' share of it) needs most of a core, and there it has CPU 1 to itself. The CPU
time of each process in each window is reported, so what the move cost, and whom,
can be read off.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.load import LoadGenerator, LoadResult, LoadSpec
from bench.processes import (
    SERVER_CPU,
    NodeSet,
    ServerProcess,
    can_pin,
    child_env,
    on_every_cpu,
)
from bench.scenarios import API, SPREAD_PAGES
from bench.service import counter_metrics, service_env, wait_flushed
from visit_counter.core.config import Settings
from visit_counter.core.node_identity import TOPOLOGY_KEY
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.batch import PAGE_KEY_PREFIX, TOP_BUILT_KEY, TOP_KEY
from visit_counter.topology.document import Topology
from visit_counter.topology.nodeset import NodeSet as AppNodeSet
from visit_counter.topology.nodeset import canonical_label

# The mover's pace by default: on this 2-core machine, where the mover, the nodes and the
# load generator share a core, 2,000 pages/s met both goals and 4,000 fell just short of the
# throughput one (0.88-0.89); unpaced, a move takes a quarter of the time at 0.68-0.86x.
MOVE_MAX_RATE = 2000.0
THROUGHPUT_GOAL = 0.9  # POST req/s during the move / before it, at least
P99_GOAL = 1.2  # POST p99 during the move / before it, at most
MOVER_TIMEOUT_S = 120  # `nodes add --timeout`: how long the mover waits for a silent node
STORE_CHUNK = 10_000  # pages per MSET when storing the pages
READ_COUNT = 10_000  # SCAN COUNT when reading them back
SUMMARY_LINE = re.compile(
    r"^moved (\d+) pages, (\d+) visits in ([\d.]+) s; topology version (\d+)$", re.MULTILINE
)
FLOW_LINE = re.compile(r"^(\S+) -> (\S+): (\d+) pages, (\d+) visits$", re.MULTILINE)


# Where the load generator runs. The server has CPU 0, the nodes (and this harness) CPU 1,
# the mover may use both; the load generator is a stand-in for remote clients.
BESIDE_NODES = "beside-nodes"  # on CPU 1, as in the scenarios
BESIDE_SERVER = "beside-server"  # on CPU 0: the nodes and the mover have CPU 1 to themselves
PLACEMENTS = (BESIDE_NODES, BESIDE_SERVER)
PLACEMENT_TEXT = {
    BESIDE_NODES: "load generator beside the nodes (CPU 1), as in the scenarios",
    BESIDE_SERVER: "load generator beside the server (CPU 0): the nodes and the mover have CPU 1",
}


@dataclass(frozen=True, slots=True)
class MoveConfig:
    pages: int
    window_s: int  # the before window; the during window lasts as long as the mover
    warmup_s: int
    connections: int
    batch_interval_s: float
    placement: str = BESIDE_NODES
    max_rate: float = 0.0  # `nodes add --max-rate`: pages per second at most (0: unpaced)


@dataclass(frozen=True, slots=True)
class NodeCensus:
    label: str
    pages: int
    visits: int
    misplaced: int  # pages whose owner under the node's stored ring is another node


@dataclass(frozen=True, slots=True)
class CpuUse:
    """Cores busy in a window (CPU seconds per second), by whom; from /proc and rusage."""

    server: float
    nodes: float
    load: float
    mover: float
    machine: float  # every process on the machine, those above included
    cores: int
    per_cpu: tuple[float, ...] = ()  # how busy each core was, 0..1

    @property
    def others(self) -> float:
        """Everything else: this harness, and any other work on the machine."""
        return max(0.0, self.machine - self.server - self.nodes - self.load - self.mover)


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Cumulative CPU seconds at one moment."""

    wall: float
    server: float
    nodes: float
    children: float  # processes this harness started and has waited for (load, mover)
    machine: float
    per_cpu: tuple[float, ...]


class CpuMeter:
    """Reads the CPU time of the server, the nodes, finished children and the whole machine."""

    def __init__(self, server_pid: int, node_pids: list[int]) -> None:
        self.server_pid = server_pid
        self.node_pids = node_pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def _process(self, pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def _machine(self) -> tuple[float, tuple[float, ...]]:
        """Busy CPU seconds: the whole machine, then each core (from /proc/stat)."""
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return 0.0, ()
        busy = []
        for line in lines:
            if not line.startswith("cpu"):
                break
            ticks = [int(value) for value in line.split()[1:9]]  # user .. steal
            busy.append((sum(ticks) - ticks[3] - ticks[4]) / self.tick)  # less idle, iowait
        return (busy[0], tuple(busy[1:])) if busy else (0.0, ())

    def snapshot(self) -> CpuSnapshot:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine, per_cpu = self._machine()
        return CpuSnapshot(
            wall=time.perf_counter(),
            server=self._process(self.server_pid),
            nodes=sum(self._process(pid) for pid in self.node_pids),
            children=children.ru_utime + children.ru_stime,
            machine=machine,
            per_cpu=per_cpu,
        )

    @staticmethod
    def use(start: CpuSnapshot, end: CpuSnapshot, *, load: float, mover: float) -> CpuUse:
        """Per second of the window start..end; `load` and `mover`: their CPU seconds."""
        wall = max(end.wall - start.wall, 1e-9)
        return CpuUse(
            server=(end.server - start.server) / wall,
            nodes=(end.nodes - start.nodes) / wall,
            load=load / wall,
            mover=mover / wall,
            machine=(end.machine - start.machine) / wall,
            cores=os.cpu_count() or 1,
            per_cpu=tuple(
                (after - before) / wall
                for before, after in zip(start.per_cpu, end.per_cpu, strict=False)
            ),
        )


def node_pids(nodes: NodeSet) -> list[int]:
    """Each node's process id, as the node reports it."""
    pids = []
    for node in nodes.nodes:
        with redis.Redis(port=node.port, socket_timeout=5) as client:
            pids.append(int(client.info("server")["process_id"]))
    return pids


@dataclass(frozen=True, slots=True)
class MoveResult:
    pages: int  # stored before the move
    visits: int  # their total
    store_s: float
    load_pages: int  # the POST load draws its page from page-0 .. page-(load_pages - 1)
    before: LoadResult
    during: LoadResult
    after: LoadResult  # on the 4 nodes, once the move is done: reported, not a goal
    cpu_before: CpuUse
    cpu_during: CpuUse
    cpu_after: CpuUse
    acknowledged: int  # 2xx the load generator saw: warm-up, before, during and after
    move_s: float  # the mover's own summary line
    mover_wall_s: float  # from starting the mover's process to its exit
    pages_moved: int
    visits_moved: int
    flows: list[tuple[str, str, int, int]]  # source, target, pages, visits
    topology: str  # the stored topology afterwards: version, state, members
    accepted: int  # visits the service accepted (its metrics), whole section
    stored: int  # visits the service stored on the nodes
    nodes_after: list[NodeCensus]
    mover_command: str
    server_command: str
    placement: str  # BESIDE_NODES or BESIDE_SERVER
    max_rate: float  # the mover's --max-rate (0: unpaced)
    pinned: bool  # False: fewer than 2 cores or no affinity support, nothing was pinned
    smoke: bool = False

    @property
    def pages_after(self) -> int:
        return sum(node.pages for node in self.nodes_after)

    @property
    def visits_after(self) -> int:
        return sum(node.visits for node in self.nodes_after)

    @property
    def misplaced(self) -> int:
        return sum(node.misplaced for node in self.nodes_after)

    @property
    def exact(self) -> bool:
        """No visit lost or counted twice, and every page once, on its owner."""
        return (
            self.visits_after == self.visits + self.accepted
            and self.stored == self.accepted
            and self.pages_after == self.pages
            and self.misplaced == 0
        )

    @property
    def throughput_ratio(self) -> float:
        before = self.before.requests_per_s
        return self.during.requests_per_s / before if before else float("nan")

    @property
    def drift(self) -> float:
        """Throughput after the move / before it: the noise the during/before ratio is read in."""
        before = self.before.requests_per_s
        return self.after.requests_per_s / before if before else float("nan")

    @property
    def p99_ratio(self) -> float:
        before = self.before.p99_ms
        return self.during.p99_ms / before if before else float("nan")

    @property
    def throughput_met(self) -> bool:
        return self.throughput_ratio >= THROUGHPUT_GOAL

    @property
    def p99_met(self) -> bool:
        return self.p99_ratio <= P99_GOAL


def seed_count(number: int) -> int:
    """The count page-`number` is stored with: 1..100, spread so every node gets a mix."""
    return 1 + (number * 7919) % 100


async def _store_first_topology(node_urls: str, data_dir: Path) -> Topology:
    """What the service stores at its first start: version 1 over the listed nodes."""
    settings = Settings(
        _env_file=None, redis_nodes=node_urls, data_dir=data_dir, enable_metrics=False
    )
    manager = RedisManager(settings)
    nodes = AppNodeSet(settings, manager)
    try:
        await nodes.start()
        return nodes.topology
    finally:
        await nodes.aclose()
        await manager.aclose()


def _ports(nodes: NodeSet) -> dict[str, int]:
    """Each node's port by its ring label."""
    return {canonical_label(node.url, 0): node.port for node in nodes.nodes}


def store_pages(topology: Topology, ports: dict[str, int], pages: int) -> int:
    """`pages` pages on their owners (MSET: the nodes hold none yet); their total.

    Each node's top set holds them too, and is marked built, as on nodes the service
    wrote: otherwise the service would score them all (`CountStore.backfill_top`, a
    one-off after an upgrade) while the before window is measured."""
    ring = topology.ring
    by_owner: dict[str, dict[str, int]] = {label: {} for label in topology.members}
    total = 0
    for number in range(pages):
        page = f"page-{number}"
        count = seed_count(number)
        by_owner[ring.owner(page)][PAGE_KEY_PREFIX + page] = count
        total += count
    for label, counts in by_owner.items():
        items = list(counts.items())
        with redis.Redis(port=ports[label], socket_timeout=60) as client:
            pipe = client.pipeline(transaction=False)
            for first in range(0, len(items), STORE_CHUNK):
                chunk = items[first : first + STORE_CHUNK]
                pipe.mset(dict(chunk))
                pipe.zadd(TOP_KEY, {key.removeprefix(PAGE_KEY_PREFIX): n for key, n in chunk})
            pipe.set(TOP_BUILT_KEY, 1)
            pipe.execute()
    return total


def census(ports: dict[str, int]) -> tuple[list[NodeCensus], Topology]:
    """Every page key on every node: how many, their sum, and any not on its owner."""
    documents = []
    for port in ports.values():
        with redis.Redis(port=port, socket_timeout=30) as client:
            raw = client.hget(TOPOLOGY_KEY, "doc")
        if raw is not None:
            documents.append(Topology.from_json(raw))
    topology = max(documents, key=lambda document: document.version)
    ring = topology.ring
    found = []
    for label, port in ports.items():
        pages = visits = misplaced = 0
        with redis.Redis(port=port, socket_timeout=30) as client:
            cursor = 0
            while True:
                cursor, keys = client.scan(cursor, match=PAGE_KEY_PREFIX + "*", count=READ_COUNT)
                if keys:
                    values = client.mget(keys)
                    pages += len(keys)
                    visits += sum(int(value) for value in values if value is not None)
                    prefix = len(PAGE_KEY_PREFIX)
                    misplaced += sum(ring.owner(key.decode()[prefix:]) != label for key in keys)
                if cursor == 0:
                    break
        found.append(NodeCensus(label, pages, visits, misplaced))
    return found, topology


@dataclass(frozen=True, slots=True)
class MoverRun:
    wall_s: float
    move_s: float
    pages: int
    visits: int
    version: int
    flows: list[tuple[str, str, int, int]]


def run_mover(command: list[str], env: dict[str, str], workdir: Path) -> MoverRun:
    """`nodes add` to its end; its summary read from what it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = workdir / "mover.out", workdir / "mover.err"
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        # Output to files, not pipes: the progress bar would fill a pipe nobody reads.
        completed = subprocess.run(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=MOVER_TIMEOUT_S + 600,
            check=False,
        )
    wall_s = time.perf_counter() - started
    printed = out_path.read_text(errors="replace")
    summary = SUMMARY_LINE.search(printed)
    if completed.returncode != 0 or summary is None:
        raise RuntimeError(
            f"the mover exited {completed.returncode}:\n{printed}\n"
            + err_path.read_text(errors="replace")[-4000:]
        )
    return MoverRun(
        wall_s=wall_s,
        move_s=float(summary[3]),
        pages=int(summary[1]),
        visits=int(summary[2]),
        version=int(summary[4]),
        flows=[(a, b, int(p), int(v)) for a, b, p, v in FLOW_LINE.findall(printed)],
    )


def run_move_section(
    config: MoveConfig, root: Path, load: LoadGenerator, *, smoke: bool = False
) -> MoveResult:
    """The whole section on its own four nodes and server; every process stopped on the way out.

    The nodes run where this harness runs (CPU 1, see processes.py), the server on CPU 0.
    """
    if config.placement == BESIDE_SERVER:
        load = load.on_cpu(SERVER_CPU)
    root = root / f"move-{config.placement}"
    nodes = NodeSet(root / "nodes", count=4)
    server: ServerProcess | None = None
    try:
        nodes.start()
        old, new = nodes.nodes[:3], nodes.nodes[3]
        node_urls = ",".join(node.url for node in old)
        ports = _ports(nodes)
        print(f"bench: move ({PLACEMENT_TEXT[config.placement]}): storing {config.pages:,} "
              "pages on 3 nodes", flush=True)  # fmt: skip
        started = time.perf_counter()
        topology = asyncio.run(_store_first_topology(node_urls, root / "data-store"))
        visits = store_pages(topology, ports, config.pages)
        store_s = time.perf_counter() - started

        env = service_env(node_urls, root / "data", config.batch_interval_s)
        server = ServerProcess("move", "bench.apps:create_bench_app", env, root, factory=True)
        server.launch()
        server.wait_ready()
        load_pages = min(SPREAD_PAGES, config.pages)
        spec = LoadSpec("POST", f"{API}/counter/visit/page-{{page}}", pages=load_pages)
        acknowledged = 0
        if config.warmup_s > 0:
            warm = load.run(server.url, spec, config.warmup_s, config.connections)
            acknowledged += warm.accepted
        meter = CpuMeter(server.pid, node_pids(nodes))

        def fixed_window(name: str) -> tuple[LoadResult, CpuUse]:
            assert server is not None
            start = meter.snapshot()
            result = load.run(server.url, spec, config.window_s, config.connections)
            end = meter.snapshot()
            use = meter.use(start, end, load=end.children - start.children, mover=0.0)
            print(f"bench: move: {name} {_window(result)}; {_cores(use)}", flush=True)
            return result, use

        before, cpu_before = fixed_window("before")
        acknowledged += before.accepted

        mover_command = on_every_cpu(
            ["nice", "-n", "10", sys.executable, "-m", "app", "nodes", "add", new.url,
             "--timeout", str(MOVER_TIMEOUT_S), "--max-rate", str(config.max_rate)]
        )  # fmt: skip
        start = meter.snapshot()
        running = load.start(server.url, spec, config.connections)
        try:
            mover = run_mover(mover_command, child_env(env), root / "mover")
        except BaseException:
            running.kill()
            raise
        end = meter.snapshot()  # the mover has been waited for: its CPU time is in `children`
        during = running.stop()
        cpu_during = meter.use(
            start,
            end,
            load=meter.snapshot().children - end.children,
            mover=end.children - start.children,
        )
        acknowledged += during.accepted
        print(f"bench: move: during {_window(during)}; {_cores(cpu_during)}; the mover: "
              f"{mover.move_s:.1f} s, {mover.pages:,} pages, {mover.visits:,} visits",
              flush=True)  # fmt: skip
        after, cpu_after = fixed_window("after")
        acknowledged += after.accepted

        wait_flushed(server, 3 * config.batch_interval_s + 30)
        metrics = counter_metrics(server)
        server_command = shlex.join(server.command())
        server.stop()  # nothing pending: its final flush adds nothing
        nodes_after, stored_topology = census(ports)
    finally:
        if server is not None:
            try:
                server.stop()
            except Exception as exc:
                print(f"bench: stopping the move's server failed: {exc}", file=sys.stderr)
        nodes.stop()
    return MoveResult(
        pages=config.pages,
        visits=visits,
        store_s=store_s,
        load_pages=load_pages,
        before=before,
        during=during,
        after=after,
        cpu_before=cpu_before,
        cpu_during=cpu_during,
        cpu_after=cpu_after,
        acknowledged=acknowledged,
        move_s=mover.move_s,
        mover_wall_s=mover.wall_s,
        pages_moved=mover.pages,
        visits_moved=mover.visits,
        flows=mover.flows,
        topology=f"version {stored_topology.version}, {stored_topology.state}: "
        + ", ".join(stored_topology.members),
        accepted=int(metrics["visits_accepted"]),
        stored=int(metrics["visits_stored"]),
        nodes_after=nodes_after,
        mover_command=shlex.join(mover_command),
        server_command=server_command,
        placement=config.placement,
        max_rate=config.max_rate,
        pinned=can_pin(),
        smoke=smoke,
    )


def _window(result: LoadResult) -> str:
    errors = result.status_errors + result.socket_errors
    return (
        f"{result.duration_s:.1f} s, {result.requests_per_s:,.0f} req/s, "
        f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
        + (f", {errors} errors" if errors else "")
    )


def _cores(use: CpuUse) -> str:
    return (
        f"cores busy: server {use.server:.2f}, nodes {use.nodes:.2f}, load {use.load:.2f}, "
        f"mover {use.mover:.2f}, others {use.others:.2f} (of {use.cores}; per core "
        + "/".join(f"{busy:.2f}" for busy in use.per_cpu)
        + ")"
    )


def describe(result: MoveResult) -> str:
    """The console's summary of the section."""
    return (
        f"bench: move ({result.placement}): {result.pages_moved:,} pages, "
        f"{result.visits_moved:,} visits in "
        f"{result.move_s:.1f} s; throughput during/before {result.throughput_ratio:.2f} "
        f"(goal >= {THROUGHPUT_GOAL:g}: {'met' if result.throughput_met else 'NOT MET'}), "
        f"p99 during/before {result.p99_ratio:.2f} (goal <= {P99_GOAL:g}: "
        f"{'met' if result.p99_met else 'NOT MET'}); sum after "
        f"{'exact' if result.exact else 'NOT EXACT'} ({result.visits_after:,} = "
        f"{result.visits:,} stored + {result.accepted:,} accepted"
        + ("" if result.visits_after == result.visits + result.accepted else " is FALSE")
        + ")"
    )
