"""Run the side-by-side benchmark and write `docs/benchmarks.md` and its PNG chart.

    python -m bench.run [--duration S] [--runs N] [--connections C] [--out docs/benchmarks.md]
                        [--warmup S] [--load auto|wrk|python] [--smoke]
                        [--only scenarios|move|cluster] [--move-pages N]
                        [--move-placement beside-nodes|beside-server|both]

Starts three nodes and four single-worker uvicorn servers (the service, the same
with its read cache off, the same with the per-visit log on, the raw ASGI app)
on loopback, pinned to CPU 0;
loads them from `wrk` (or the Python fallback) pinned to CPU 1; goes through
every scenario once per run, runs interleaved so machine drift cancels out.
Then the move section (bench/move.py): 1,000,000 pages moved from 3 nodes to 4
with `python -m app nodes add` while the service takes POSTs. `--only move` runs
that section alone; `--move-pages` makes it smaller (`--smoke`: 2,000 pages);
`--move-placement beside-server` (or `both`) puts the load generator on the
server's core, leaving the other to the nodes and the mover.
Then the cluster section (bench/cluster.py): scenario (b) on a Redis Cluster of 3
primaries and 3 replicas (REDIS_MODE=cluster) interleaved with the same on the three
standalone nodes, and a 10,000-page flush on each. `--only cluster` runs it alone
(it needs redis-cli to create the cluster). A run of `--only move` or `--only cluster`
into an existing report replaces that section's part of it and keeps the rest.
Every child process is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.cluster import ClusterResult, describe_cluster, run_cluster_section
from bench.flush import measure_flush_ms
from bench.load import LoadGenerator, choose_load_generator
from bench.move import MOVE_MAX_RATE, PLACEMENTS, MoveConfig, MoveResult, run_move_section
from bench.move import describe as describe_move
from bench.processes import REPO_ROOT, NodeSet, ServerProcess, pin_self_to_load_cpu
from bench.report import write_outputs
from bench.results import SECTIONS, BenchConfig, Measurement
from bench.scale import FLUSH_PAGES, PENDING_PAGES, measure_scale
from bench.scenarios import JOURNAL, MAIN, NO_CACHE, RAW, SCENARIOS
from bench.service import service_env
from bench.session import Session
from visit_counter.core.embedded_nodes import cli_binary

DEFAULT_OUT = REPO_ROOT / "docs" / "benchmarks.md"
SMOKE_MOVE_PAGES = 2_000


def build_servers(nodes: NodeSet, root: Path, batch_interval_s: float) -> dict[str, ServerProcess]:
    """The service three ways (as configured, read cache off, visit log on) and the raw app."""
    variants = {MAIN: {}, NO_CACHE: {"CACHE_TTL_SECONDS": "0"}, JOURNAL: {"JOURNAL_VISITS": "true"}}
    servers = {
        name: ServerProcess(
            name,
            "bench.apps:create_bench_app",
            {**service_env(nodes.urls, root / f"data-{name}", batch_interval_s), **overrides},
            root,
            factory=True,
        )
        for name, overrides in variants.items()
    }
    servers[RAW] = ServerProcess(RAW, "bench.raw_asgi:app", {}, root, factory=False)
    return servers


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`: children get stopped


def run_scenarios(
    config: BenchConfig, root: Path, load: LoadGenerator
) -> tuple[list[Measurement], dict[str, Any]]:
    """The scenarios on three nodes and four servers, then the 10,000-page flush and the
    scale figures (bench/scale.py)."""
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
        sizes = (10_000, 1_000) if config.smoke else (PENDING_PAGES, FLUSH_PAGES)
        scale = measure_scale(nodes.urls, root / "data-scale", *sizes)
    finally:
        for server in servers.values():  # before the nodes: the final flush reaches them
            try:
                server.stop()
            except Exception as exc:
                print(f"bench: stopping {server.name} failed: {exc}", file=sys.stderr)
        nodes.stop()
    context = {
        "flush_10k_ms": flush_ms,
        "scale": scale,
        "server_commands": {name: shlex.join(server.command()) for name, server in servers.items()},
    }
    return measurements, context


def run_session(
    config: BenchConfig,
) -> tuple[list[Measurement], list[MoveResult], ClusterResult | None, dict[str, Any]]:
    if "cluster" in config.sections:
        cli_binary()  # no redis-cli: say so now, not after the other sections
    pinned = pin_self_to_load_cpu()  # before any child starts: the nodes inherit the load core
    measurements: list[Measurement] = []
    moves: list[MoveResult] = []
    cluster: ClusterResult | None = None
    with tempfile.TemporaryDirectory(prefix="visit-counter-bench-") as tmp:
        root = Path(tmp)
        load = choose_load_generator(config.load, root / "wrk")
        context: dict[str, Any] = {
            "pinned": pinned,
            "load_generator": load.name,
            "load_generator_version": load.version,
        }
        if "scenarios" in config.sections:
            measurements, found = run_scenarios(config, root, load)
            context.update(found)
        # Placements differ only where cores can be pinned: elsewhere, one run says it all.
        placements = config.move_placements if pinned else config.move_placements[:1]
        for placement in placements if "move" in config.sections else ():
            move_config = MoveConfig(
                pages=config.move_pages,
                window_s=config.duration_s,
                warmup_s=config.warmup_s,
                connections=config.connections,
                batch_interval_s=config.batch_interval_s,
                placement=placement,
                max_rate=config.move_max_rate,
            )
            move = run_move_section(move_config, root, load, smoke=config.smoke)
            print(describe_move(move), flush=True)
            moves.append(move)
        if "cluster" in config.sections:
            cluster = run_cluster_section(config, root, load)
            print(describe_cluster(cluster), flush=True)
    return measurements, moves, cluster, context


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
        "--only",
        choices=SECTIONS,
        help="run one section: the scenarios (and the flush), the move of pages to a 4th node, "
        "or scenario (b) on a Redis Cluster beside the ring",
    )
    parser.add_argument(
        "--move-pages",
        type=int,
        help="pages the move section stores on 3 nodes, then moves to 4 "
        f"(default 1,000,000; {SMOKE_MOVE_PAGES:,} with --smoke)",
    )
    parser.add_argument(
        "--move-max-rate",
        type=float,
        default=MOVE_MAX_RATE,
        help="the mover's --max-rate in the move section, pages per second (default: "
        f"{MOVE_MAX_RATE:,.0f}, as on a host that serves; 0: unpaced)",
    )
    parser.add_argument(
        "--move-placement",
        choices=(*PLACEMENTS, "both"),
        default=PLACEMENTS[0],
        help="where the load generator runs in the move section (bench/move.py): beside the "
        "nodes, as in the scenarios (the default), beside the server, or both, one after the other",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"1 s per scenario, 1 run, no warm-up, {SMOKE_MOVE_PAGES:,} pages moved: wiring only",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.runs, args.warmup = 1, 1, 0
    if args.move_pages is None:
        args.move_pages = SMOKE_MOVE_PAGES if args.smoke else 1_000_000
    if args.move_pages < 1:
        parser.error("--move-pages must be at least 1")
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
        sections=SECTIONS if args.only is None else (args.only,),
        move_pages=args.move_pages,
        move_placements=PLACEMENTS if args.move_placement == "both" else (args.move_placement,),
        move_max_rate=args.move_max_rate,
    )


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    load_before = os.getloadavg()
    measurements, moves, cluster, context = run_session(config)
    context["load_average"] = {"before": load_before, "after": os.getloadavg()}
    context["command"] = shlex.join(
        ["python", "-m", "bench.run", *(sys.argv[1:] if argv is None else argv)]
    )
    context["wall_seconds"] = time.monotonic() - started

    written = write_outputs(config, measurements, moves, cluster, context)
    print("bench: wrote " + ", ".join(str(path) for path in written))
    if not all(move.exact for move in moves):
        print("bench: the counts after the move are not exact (see the report)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
