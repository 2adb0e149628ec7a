"""Turn measurements into `docs/benchmarks.md`, its PNG chart and the raw numbers as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.cluster import ClusterResult
from bench.cluster_report import cluster_record, render_cluster
from bench.load import BROWSER_ORIGIN, BROWSER_USER_AGENT, LoadResult
from bench.move import P99_GOAL, PLACEMENT_TEXT, THROUGHPUT_GOAL, CpuUse, MoveResult
from bench.processes import REPO_ROOT
from bench.report_parts import keep_parts, marked, part_of, with_part
from bench.results import BenchConfig, Measurement
from bench.scenarios import (
    BROWSER_VISITORS,
    COMPARISONS,
    JOURNAL,
    MAIN,
    NO_CACHE,
    RAW,
    SCENARIOS,
    STATS_DAYS,
)
from bench.summary import Summary, breakdown_cell, summarize
from visit_counter.core.bots import CACHE_SIZE as BOT_CACHE_SIZE
from visit_counter.core.embedded_nodes import server_binary

PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "uvloop",
    "httptools",
    "redis",
    "hiredis",
)


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    value: float
    target: str
    met: bool | None  # None: reported, no target
    per_second: bool = False  # requests or visits per second, not a ratio: no decimals


# (metric, scenario key); metric: "rps", "p99", "cmds", or "visits" (rps x visits per request)
Operand = tuple[str, str]

# name, numerator, denominator (None: the numerator alone), target (None: reported only)
RATIOS: tuple[tuple[str, Operand, Operand | None, tuple[str, float] | None], ...] = (
    ("throughput a/e (hot page vs bare)", ("rps", "a"), ("rps", "e"), (">=", 0.90)),
    ("throughput b/e (10,000 pages vs bare)", ("rps", "b"), ("rps", "e"), (">=", 0.90)),
    ("throughput a/f (hot page vs naive INCR)", ("rps", "a"), ("rps", "f"), (">=", 1.7)),
    ("throughput a/h (hot page vs raw ASGI), stretch", ("rps", "a"), ("rps", "h"), (">=", 0.5)),
    ("throughput e/h (bare FastAPI vs raw ASGI)", ("rps", "e"), ("rps", "h"), None),
    ("throughput g/a (visit log on vs off)", ("rps", "g"), ("rps", "a"), None),
    ("p99 a/e", ("p99", "a"), ("p99", "e"), ("<=", 1.1)),
    ("p99 b/e", ("p99", "b"), ("p99", "e"), ("<=", 1.1)),
    ("p99 i/b (a node paused vs all up)", ("p99", "i"), ("p99", "b"), ("<=", 1.1)),
    ("throughput i/b (a node paused vs all up)", ("rps", "i"), ("rps", "b"), None),
    ("Redis commands per 1,000 visits, a", ("cmds", "a"), None, ("<", 2)),
    # Issue 4's budget was < 1,050 when a flush wrote the count alone; since issue 13 a flush
    # also writes the day hash, the totals and the top set, and, for visits a browser sent,
    # the HyperLogLogs of visitors: (b) sends none, (n) writes every structure.
    ("Redis commands per 1,000 visits, b (no visitor ids)", ("cmds", "b"), None, None),
    ("Redis commands per visit, b vs f (b/f)", ("cmds", "b"), ("cmds", "f"), None),
    (
        "issue 13: Redis commands per 1,000 visits, n (from browsers: every structure written)",
        ("cmds", "n"),
        None,
        ("<=", 4000),
    ),
    ("throughput n/b (from browsers vs no visitor ids)", ("rps", "n"), ("rps", "b"), None),
    ("p99 n/b (from browsers vs no visitor ids)", ("p99", "n"), ("p99", "b"), None),
    ("issue 13: GET top 10 pages, reads/s (o)", ("rps", "o"), None, None),
    ("issue 13: GET stats of a page, 30 days, reads/s (p)", ("rps", "p"), None, None),
    ("issue 13: GET totals, 30 days, reads/s (q)", ("rps", "q"), None, None),
    ("issue 15: throughput a/h (hot POST vs raw ASGI)", ("rps", "a"), ("rps", "h"), (">=", 0.80)),
    ("issue 15: throughput c/h (GET, cache hit)", ("rps", "c"), ("rps", "h"), (">=", 0.70)),
    ("issue 15: throughput j/h (POST ?return=count)", ("rps", "j"), ("rps", "h"), (">=", 0.70)),
    ("issue 15: throughput d/h (GET, cache miss)", ("rps", "d"), ("rps", "h"), (">=", 0.35)),
    ("throughput m/h (GET, cache miss, 10,000 pages)", ("rps", "m"), ("rps", "h"), None),
    ("issue 15: batch ingest, visits/s (k)", ("visits", "k"), None, (">=", 1_000_000)),
)


def _metric(summaries: dict[str, Summary], operand: Operand) -> float:
    metric, key = operand
    summary = summaries[key]
    if metric == "visits":
        per_request = next(s.visits_per_request for s in SCENARIOS if s.key == key)
        return summary.rps_median * per_request
    return {"rps": summary.rps_median, "p99": summary.p99_ms, "cmds": summary.commands_per_1k}[
        metric
    ]


def ratios(summaries: dict[str, Summary]) -> list[Ratio]:
    """Each ratio whose scenarios ran, with its verdict against its issue's target, if any."""
    out: list[Ratio] = []
    for name, numerator, denominator, target in RATIOS:
        if any(key not in summaries for _, key in filter(None, (numerator, denominator))):
            continue
        value = _metric(summaries, numerator)
        if denominator is not None:
            below = _metric(summaries, denominator)
            value = value / below if below else float("nan")
        met = None
        if target is not None:
            op, bound = target
            met = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[op]
        shown = "" if target is None else f"{target[0]} {target[1]:,g}"
        per_second = denominator is None and numerator[0] in ("rps", "visits")
        out.append(Ratio(name, value, shown, met, per_second))
    return out


def _read_first(path: str, prefix: str) -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _node_version() -> str:
    try:
        binary = server_binary()
        completed = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        )
    except Exception:
        return "unknown"
    return completed.stdout.strip() or "unknown"


def _load_average(context: dict[str, Any]) -> str:
    before, after = (
        " ".join(f"{value:.2f}" for value in context["load_average"][when])
        for when in ("before", "after")
    )
    return f"{before} before, {after} after (other work on the machine skews the numbers)"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _code_version() -> str:
    """The commit measured, and whether the work tree had uncommitted changes.

    Changes under docs/ do not count: the report a run of one section updates is there,
    and the next run measures the same code.
    """
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)docs")
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"{commit}" + (" with uncommitted changes" if dirty else "")


def machine_info(context: dict[str, Any]) -> list[tuple[str, str]]:
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return [
        ("date", context["measured_by"]["date"]),
        ("code", context["measured_by"]["code"]),
        ("nproc", str(os.cpu_count())),
        ("CPU", _read_first("/proc/cpuinfo", "model name")),
        ("memory", _read_first("/proc/meminfo", "MemTotal")),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
        ("nodes", f"3 x {_node_version()} (4 in the move section, 6 in the cluster section),"
                  " AOF everysec, on loopback"),
        ("load generator", f"{context['load_generator']} ({context['load_generator_version']})"),
        ("load average (1, 5, 15 min)", _load_average(context)),
        ("placement", "server on CPU 0 (taskset); load generator, nodes and harness on CPU 1"
         if context["pinned"] else "not pinned (fewer than 2 cores, or no affinity support)"),
    ]  # fmt: skip


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**not met**")


def render_markdown(
    config: BenchConfig,
    summaries: dict[str, Summary],
    measurements: list[Measurement],
    moves: list[MoveResult],
    cluster: ClusterResult | None,
    context: dict[str, Any],
    chart_name: str | None,
) -> str:
    lines = ["# Benchmarks", ""]
    if config.smoke:
        lines += ["**Smoke run** (1 s per scenario, 1 run, a small move): checks the harness; the"
                  " numbers mean nothing.", ""]  # fmt: skip
    if context["load_generator"] != "wrk":
        lines += [f"**Load from {context['load_generator']}, not wrk**: it saturates its core"
                  " near 2,000 requests/s, below every server here, so the scenarios measure the"
                  " generator and the ratios mean little. Install wrk (`apt-get install -y wrk`)"
                  " for real numbers.", ""]  # fmt: skip
    lines += [
        "Generated by `make bench` (the harness in `bench/`, issue 4). Timings are never pass/fail"
        " tests; this page is the record.",
        "",
        "```",
        context["command"],
        "```",
        "",
    ]
    if summaries:
        lines += _render_scenarios(config, summaries, context, chart_name)
    stamp = _measured_line(context["measured_by"])
    if moves:
        lines += marked("move", [*render_moves(moves, context["load_generator"]), stamp])
    if cluster is not None:
        lines += marked("cluster", [*render_cluster(cluster), "", stamp])
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in machine_info(context)]
    lines += [f"| whole session | {context['wall_seconds']:.0f} s |"]
    if summaries:
        lines += ["", "## Method", ""]
        lines += _scenarios_method(config, context)
    return "\n".join(lines) + "\n"


def _measured_line(stamp: dict[str, str]) -> str:
    """Which run wrote a part: a part is kept when a later run does not measure it."""
    return (
        f"_This section: `{stamp['command']}`, {stamp['date']}, code {stamp['code']}; load"
        f" average (1, 5, 15 min) {stamp['load_average']}._"
    )


def _render_scenarios(
    config: BenchConfig,
    summaries: dict[str, Summary],
    context: dict[str, Any],
    chart_name: str | None,
) -> list[str]:
    lines = [
        f"{config.runs} interleaved run(s) x {len(summaries)} scenarios x {config.duration_s} s,"
        f" {config.connections} keep-alive connections, {config.warmup_s} s warm-up per scenario"
        " before run 1.",
        "",
        "| scenario | what | req/s (median) | min - max | p50 ms | p99 ms "
        "| Redis cmds / 1k requests | incl. PING etc. | RSS MiB | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries.values():
        lines.append(
            f"| {s.scenario.label} | {s.scenario.what} | {s.rps_median:,.0f} "
            f"| {min(s.rps):,.0f} - {max(s.rps):,.0f} | {s.p50_ms:.2f} | {s.p99_ms:.2f} "
            f"| {s.commands_per_1k:,.2f} | {s.all_commands_per_1k:,.2f} | {s.rss_mib:.1f} "
            f"| {s.errors} |"
        )
    lines += ["", "## Ratios and the targets of issues 4, 13 and 15", "",
              "| ratio | value | target | |", "|---|---:|---|---|"]  # fmt: skip
    for ratio in ratios(summaries):
        value = f"{ratio.value:,.0f}" if ratio.per_second else f"{ratio.value:,.2f}"
        lines.append(f"| {ratio.name} | {value} | {ratio.target} | {_verdict(ratio.met)} |")
    flush = context.get("flush_10k_ms")
    if flush:
        verdict = _verdict(flush["max"] < 100)
        lines += ["", f"Flush of 10,000 distinct pages to the 3 nodes (`VisitCounter.flush()` in"
                  f" process, after the scenarios, {flush['repeats']:.0f} repeats): median"
                  f" {flush['median']:.1f} ms, max {flush['max']:.1f} ms; target < 100 ms:"
                  f" {verdict}."]  # fmt: skip
    scale = context.get("scale")
    if scale:
        rss = scale["rss_with_pending_mib"]
        lines += ["", f"Scale (issue 15, `bench/scale.py`, a process of its own): RSS with"
                  f" {scale['pending_pages']:,} distinct pages pending {rss:,.0f} MiB (before"
                  f" them {scale['rss_before_mib']:,.0f} MiB; target <= 200 MB:"
                  f" {_verdict(rss * 1.048576 <= 200)}); one flush of"
                  f" {scale['flush_pages']:,} distinct pages to the 3 nodes"
                  f" {scale['flush_ms']:,.0f} ms (target < 1 s:"
                  f" {_verdict(scale['flush_ms'] < 1000)})."]  # fmt: skip
    if chart_name:
        lines += ["", f"![throughput and p99 per scenario]({chart_name})"]
    lines += ["", "## Redis commands per 1,000 requests, by command", "",
              "Commands run inside the batch script (HGET, HSET, HMGET, INCRBY, PUBLISH) count"
              " one each, as INFO commandstats counts them.", "",
              "| scenario | commands |", "|---|---|"]  # fmt: skip
    for s in summaries.values():
        if s.breakdown_per_1k:
            lines.append(f"| {s.scenario.label} | {breakdown_cell(s.breakdown_per_1k)} |")
    lines += ["", "## Requests/s per run", "",
              "| scenario | " + " | ".join(f"run {n}" for n in range(1, config.runs + 1)) + " |",
              "|---|" + "---:|" * config.runs]  # fmt: skip
    for s in summaries.values():
        lines.append(f"| {s.scenario.label} | " + " | ".join(f"{v:,.0f}" for v in s.rps) + " |")
    return [*lines, ""]


def _keys_on(server: str) -> str:
    return ", ".join(sorted(s.key for s in SCENARIOS if s.server == server))


def _scenarios_method(config: BenchConfig, context: dict[str, Any]) -> list[str]:
    return [
        "- Three Redis-protocol nodes and four single-worker uvicorn servers (`--loop uvloop "
        "--http httptools --no-access-log`), all on 127.0.0.1 and sharing the nodes: the service"
        f" with the two bench routes (`bench.apps:create_bench_app`: {_keys_on(MAIN)}), the same"
        f" with CACHE_TTL_SECONDS=0 ({_keys_on(NO_CACHE)}), the same with JOURNAL_VISITS=true"
        f" ({_keys_on(JOURNAL)}), and `bench.raw_asgi:app` ({_keys_on(RAW)}). Only the server"
        " under load is busy; the others idle on the same core. Service settings: "
        f"BATCH_INTERVAL_SECONDS={config.batch_interval_s:g}, CACHE_TTL_SECONDS=5, "
        "HEALTH_CHECK_INTERVAL_SECONDS=5, ENABLE_METRICS=true (the default: Prometheus metrics"
        " on), everything else at its default.",
        "- Runs are interleaved (run 1: a..h, run 2: a..h, ...) so machine drift hits every "
        "scenario alike; req/s is the median over runs, p50 and p99 the medians of each run's "
        "value, RSS the largest VmRSS read right after a run.",
        "- Visits from browsers (issue 13): each request of (n) carries what a browser's does,"
        f" `Origin: {BROWSER_ORIGIN}` and the User-Agent `{BROWSER_USER_AGENT} visitor/<k>`, k"
        f" uniform in 0..{BROWSER_VISITORS - 1:,} per request. The service takes it as visitor"
        " k's (ids hash the address and the User-Agent, and every request comes from"
        " 127.0.0.1), so its flushes write a HyperLogLog of visitors per page and day besides"
        " what (b)'s write (the counts, the day hash, the totals, the top set). A page's"
        " HyperLogLog gets its expiry (EXPIREAT) from the first batch of the day that holds it,"
        " once per server process: the warm-up pays most of those, a run without one counts up"
        f" to one more command per page. {BROWSER_VISITORS:,} User-Agents are far more than the"
        f" crawler check remembers ({BOT_CACHE_SIZE:,}), so almost every request of (n) runs"
        " the crawler regex: the worst case for that check.",
        "- Analytics reads (issue 13, o, p, q): they read what the session stored, all of it"
        f" today, so {STATS_DAYS - 1} of the {STATS_DAYS} days asked for are empty, where a site"
        " counted for a month has a HyperLogLog a day to merge. When (n) does not run before"
        " them (`--scenarios`), its load runs for a few seconds first. The count (p) answers"
        " comes through the read cache (CACHE_CAPACITY=1000 pages, for 5 s). The issue sets no"
        " goal for these reads; their req/s and p99 are the record.",
        "- Redis commands: the change in INFO commandstats summed over the nodes, from before a"
        " run until the service has flushed everything it accepted in it (its metrics show no "
        "pending visit), divided by the 2xx answers of the run. The main column leaves out "
        "health-check PINGs, the harness's INFO and connection set-up (HELLO, CLIENT, SUBSCRIBE);"
        " the next column counts everything.",
        "- Server commands: "
        + "; ".join(f"{name}: `{command}`" for name, command in context["server_commands"].items()),
    ]


def _window_row(name: str, result: LoadResult) -> str:
    return (
        f"| {name} | {result.duration_s:.1f} | {result.requests_per_s:,.0f} "
        f"| {result.p50_ms:.2f} | {result.p99_ms:.2f} | {result.accepted:,} "
        f"| {result.status_errors + result.socket_errors} |"
    )


def _cpu_row(name: str, use: CpuUse) -> str:
    return (
        f"| {name} | {use.server:.2f} | {use.nodes:.2f} | {use.load:.2f} | {use.mover:.2f} "
        f"| {use.others:.2f} | {use.machine:.2f} of {use.cores} "
        f"| {', '.join(f'{busy:.2f}' for busy in use.per_cpu)} |"
    )


def render_moves(moves: list[MoveResult], generator: str) -> list[str]:
    """The section of issue 10: the move's time, and what it costs the POSTs meanwhile."""
    first = moves[0]
    lines = [f"## Moving {first.pages:,} pages from 3 nodes to 4", ""]
    if first.smoke:
        lines += ["**Smoke run** (a small move, 1 s before it): the numbers mean nothing.", ""]
    lines += [
        f"`python -m app nodes add <4th node>` while the service takes POSTs (issue 10). Before"
        f" the move the 3 nodes hold {first.pages:,} pages, {first.visits:,} visits; the POSTs"
        f" go to {first.load_pages:,} of those pages, one drawn at random per request, as in"
        " scenario (b). The *during* window is the whole life of the mover's process; the"
        " *after* window, on the 4 nodes, shows how far the machine drifted meanwhile. The"
        " server has CPU 0 and the nodes CPU 1; the mover is not pinned; the load generator (a"
        " stand-in for remote clients) runs beside the nodes as in the scenarios, or beside the"
        " server, which leaves CPU 1 to the move's work (`--move-placement`).",
        "",
        "| placement of the load generator | mover `--max-rate` | move time | pages moved"
        " | POST throughput, during / before | POST p99, during / before"
        " | drift: throughput, after / before | counts after |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for move in moves:
        share = move.pages_moved / move.pages if move.pages else 0.0
        lines.append(
            f"| {PLACEMENT_TEXT[move.placement]} "
            f"| {f'{move.max_rate:,.0f} pages/s' if move.max_rate else 'unpaced'} "
            f"| {move.move_s:.1f} s "
            f"| {move.pages_moved:,} ({share:.1%}) "
            f"| {move.throughput_ratio:.2f} ({_verdict(move.throughput_met)}) "
            f"| {move.p99_ratio:.2f} ({_verdict(move.p99_met)}) "
            f"| {move.drift:.2f} "
            f"| {'exact' if move.exact else '**not exact**'} |"
        )
    lines += [
        "",
        f"Goals: throughput during / before >= {THROUGHPUT_GOAL:g}, p99 during / before <="
        f" {P99_GOAL:g}. Move time: the mover's own summary line, from its start to the stable"
        " topology (its Python start-up excluded).",
        "",
    ]
    for move in moves:
        lines += _render_move(move, generator)
    lines += [
        "- Four fresh nodes (per placement); the first topology stored by the app's NodeSet (as"
        " the service's first start does), then each page written to its owner with MSET"
        " (count 1..100) and put in the owner's top set, marked built, as the service keeps"
        " them (else the service would score them all while the before window runs). The"
        " server: the same command and settings as the scenarios' main server, on the 3 nodes.",
        "- The same load generator and connections as the scenarios: a warm-up, the *before*"
        " window (a fixed time), then the load started and, right after it, the mover; the load"
        " is stopped (SIGINT: it reports the window it ran) when the mover exits. Then the"
        " *after* window, as long as the before one: how far the machine drifted meanwhile (the"
        " goals compare during with before).",
        f"- Server: `{first.server_command}`. Mover: `{first.mover_command}`.",
        "",
    ]
    return lines


def _render_move(move: MoveResult, generator: str) -> list[str]:
    lines = [
        f"### {PLACEMENT_TEXT[move.placement][0].upper()}{PLACEMENT_TEXT[move.placement][1:]}",
        "",
    ]
    if not move.pinned:
        lines += ["Nothing pinned (fewer than 2 cores, or no affinity support).", ""]
    lines += [
        "| POST load | seconds | req/s | p50 ms | p99 ms | 2xx | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _window_row("before the move", move.before),
        _window_row("during the move", move.during),
        _window_row("after the move (4 nodes)", move.after),
        "",
        "Cores busy in each window (CPU seconds per second, from /proc; *others* is this"
        " harness and any other work on the machine):",
        "",
        "| POST load | server | nodes | load generator | mover | others | all "
        "| each core (0, 1, ...) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        _cpu_row("before the move", move.cpu_before),
        _cpu_row("during the move", move.cpu_during),
        _cpu_row("after the move (4 nodes)", move.cpu_after),
        "",
        f"Moved in {move.move_s:.1f} s (the mover's process: {move.mover_wall_s:.1f} s from"
        f" start to exit): {move.pages_moved:,} pages, {move.visits_moved:,} visits; "
        + "; ".join(f"{a} -> {b}: {p:,} pages, {v:,} visits" for a, b, p, v in move.flows)
        + f". Stored topology afterwards: {move.topology}. The {move.pages:,} pages were"
        f" stored in {move.store_s:.1f} s.",
        "",
        "| node after the move | pages | visits | pages not on their owner |",
        "|---|---:|---:|---:|",
    ]
    for node in move.nodes_after:
        lines.append(f"| {node.label} | {node.pages:,} | {node.visits:,} | {node.misplaced:,} |")
    lines.append(f"| all | {move.pages_after:,} | {move.visits_after:,} | {move.misplaced:,} |")
    equal = move.visits_after == move.visits + move.accepted
    lines += [
        "",
        f"Counts after the move: {move.visits_after:,} over the 4 nodes"
        f" {'=' if equal else '!='} {move.visits:,} before + {move.accepted:,} visits the"
        f" service accepted (it stored {move.stored:,}); {move.acknowledged:,} 2xx reached"
        f" {generator} (all four windows: the difference is requests in flight when a"
        f" window closed, counted by the service but not by the load generator);"
        f" {move.pages_after:,} pages, each on one node, {move.misplaced:,} off their owner:"
        f" {'**exact**' if move.exact else '**not exact**'}.",
        "",
    ]
    return lines


def write_chart(path: Path, summaries: dict[str, Summary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    items = list(summaries.values())
    labels = [f"({s.scenario.key})\n{textwrap.fill(s.scenario.title, 11)}" for s in items]
    colors = ["#a0aec0" if s.scenario.key in COMPARISONS else "#2b6cb0" for s in items]
    width = max(14.0, 1.4 * len(items))  # each scenario: a bar and its label in both panels
    figure, (left, right) = plt.subplots(1, 2, figsize=(width, 5.5), layout="constrained")
    medians = [s.rps_median for s in items]
    spread = [
        [s.rps_median - min(s.rps) for s in items],
        [max(s.rps) - s.rps_median for s in items],
    ]
    bars = left.bar(labels, medians, color=colors, yerr=spread, capsize=4)
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in medians], padding=3, fontsize=8)
    left.set_title("Throughput, requests/s (median of runs; whiskers: min-max)")
    left.set_ylabel("requests/s")
    left.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    left.margins(y=0.12)
    p99 = [s.p99_ms for s in items]
    bars = right.bar(labels, p99, color=colors)
    right.bar_label(bars, labels=[f"{v:.1f}" for v in p99], padding=3, fontsize=8)
    # Log: the analytics reads' p99 is a hundred times the visits', which a linear axis flattens.
    right.set_yscale("log")
    right.set_title("Latency p99, ms (median of runs; log scale)")
    right.set_ylabel("ms")
    right.margins(y=0.12)
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("visit-counter: the service (blue) beside its comparisons (grey)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def move_record(move: MoveResult) -> dict[str, Any]:
    """The move's numbers for the JSON file, its verdicts included."""
    return {
        **dataclasses.asdict(move),
        "throughput_ratio": move.throughput_ratio,
        "drift": move.drift,
        "p99_ratio": move.p99_ratio,
        "throughput_met": move.throughput_met,
        "p99_met": move.p99_met,
        "visits_after": move.visits_after,
        "pages_after": move.pages_after,
        "exact": move.exact,
    }


PART_KEYS = {"move": "moves", "cluster": "cluster"}  # each part's numbers in the JSON file


def _with_parts(base: dict[str, Any], source: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """`base` with the numbers (and who measured them) of parts `names` taken from `source`."""
    merged = {**base, "measured_by": dict(base.get("measured_by", {}))}
    for name in names:
        if source.get(PART_KEYS[name]):
            merged[PART_KEYS[name]] = source[PART_KEYS[name]]
            if name in source.get("measured_by", {}):
                merged["measured_by"][name] = source["measured_by"][name]
    return merged


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_outputs(
    config: BenchConfig,
    measurements: list[Measurement],
    moves: list[MoveResult],
    cluster: ClusterResult | None,
    context: dict[str, Any],
) -> list[Path]:
    """Write the report, the chart beside it (same name, .png) and the raw numbers (.json).

    The chart shows the scenarios: with none run (`--only move`), there is no chart.
    With the scenarios run, the whole report is written, and the parts of an existing
    one this run did not measure (the move, the cluster) are kept. Without them (`--only
    move`, `--only cluster`), an existing report keeps everything but the part measured.
    """
    stamp = {
        "command": context["command"],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": _code_version(),
        "load_average": _load_average(context),
    }
    context = {**context, "measured_by": stamp}
    summaries = summarize(measurements)
    written = [name for name, ran in (("move", bool(moves)), ("cluster", cluster is not None))
               if ran]  # fmt: skip
    out = config.out
    out.parent.mkdir(parents=True, exist_ok=True)
    chart: Path | None = None
    if summaries:
        chart = out.with_suffix(".png")
        write_chart(chart, summaries)
    text = render_markdown(
        config,
        summaries,
        measurements,
        moves,
        cluster,
        context,
        None if chart is None else chart.name,
    )
    raw = out.with_suffix(".json")
    numbers: dict[str, Any] = {
        "config": {
            **dataclasses.asdict(config),
            "out": str(config.out),
            "scenarios": [s.key for s in config.scenarios],
        },
        "context": context,
        "measurements": [dataclasses.asdict(m) for m in measurements],
        "moves": [move_record(move) for move in moves],
        "cluster": None if cluster is None else cluster_record(cluster),
        "measured_by": {
            name: stamp for name in ("scenarios", *written) if name != "scenarios" or summaries
        },
    }
    old_text = out.read_text() if out.exists() else None
    old_numbers = _read_json(raw)
    if summaries:
        kept = [name for name in PART_KEYS if name not in written]
        if old_text is not None:
            text = keep_parts(old_text, text, tuple(written))
        if old_numbers is not None:
            numbers = _with_parts(numbers, old_numbers, kept)
    else:
        if old_text is not None:
            for name in written:
                part = part_of(text, name)
                assert part is not None
                old_text = with_part(old_text, name, part)
            text = old_text
        if old_numbers is not None:
            numbers = _with_parts(old_numbers, numbers, written)
    out.write_text(text)
    raw.write_text(json.dumps(numbers, indent=1) + "\n")
    return [path for path in (out, chart, raw) if path is not None]
