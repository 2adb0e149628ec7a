"""Turn measurements into `docs/benchmarks.md`, its PNG chart and the raw numbers as JSON."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from app.core.embedded_nodes import server_binary
from bench.processes import REPO_ROOT, is_housekeeping
from bench.results import BenchConfig, Measurement
from bench.scenarios import SCENARIOS, Scenario

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
class Summary:
    scenario: Scenario
    rps: list[float]  # one per run, in run order
    p50_ms: float  # medians over runs
    p99_ms: float
    commands_per_1k: float  # counting commands (no PING/INFO/connection set-up) per 1,000 2xx
    all_commands_per_1k: float
    breakdown_per_1k: dict[str, float]
    rss_mib: float  # largest reading over runs
    errors: int

    @property
    def rps_median(self) -> float:
        return statistics.median(self.rps)


@dataclass(frozen=True, slots=True)
class Ratio:
    name: str
    value: float
    target: str
    met: bool | None  # None: reported, no target


def summarize(measurements: list[Measurement]) -> dict[str, Summary]:
    summaries: dict[str, Summary] = {}
    for scenario in SCENARIOS:
        mine = [m for m in measurements if m.scenario == scenario.key]
        if not mine:
            continue
        accepted = sum(m.load.accepted for m in mine)
        breakdown: dict[str, int] = {}
        for m in mine:
            for name, calls in m.commands.items():
                if not is_housekeeping(name):
                    breakdown[name] = breakdown.get(name, 0) + calls

        def per_1k(calls: int, accepted: int = accepted) -> float:
            return 1000 * calls / accepted if accepted else 0.0

        summaries[scenario.key] = Summary(
            scenario=scenario,
            rps=[m.load.requests_per_s for m in mine],
            p50_ms=statistics.median(m.load.p50_ms for m in mine),
            p99_ms=statistics.median(m.load.p99_ms for m in mine),
            commands_per_1k=per_1k(sum(m.counting_commands for m in mine)),
            all_commands_per_1k=per_1k(sum(m.all_commands for m in mine)),
            breakdown_per_1k={name: per_1k(calls) for name, calls in breakdown.items()},
            rss_mib=max(m.rss_bytes for m in mine) / 2**20,
            errors=sum(m.load.status_errors + m.load.socket_errors for m in mine),
        )
    return summaries


Operand = tuple[str, str]  # (metric, scenario key); metric: "rps", "p99" or "cmds"

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
    ("Redis commands per 1,000 visits, b", ("cmds", "b"), None, ("<", 1050)),
    ("Redis commands per visit, b vs f (b/f)", ("cmds", "b"), ("cmds", "f"), None),
)


def _metric(summaries: dict[str, Summary], operand: Operand) -> float:
    metric, key = operand
    summary = summaries[key]
    return {"rps": summary.rps_median, "p99": summary.p99_ms, "cmds": summary.commands_per_1k}[
        metric
    ]


def ratios(summaries: dict[str, Summary]) -> list[Ratio]:
    """Each ratio whose scenarios ran, with its verdict against issue 4's target."""
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
        out.append(Ratio(name, value, shown, met))
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
    """The commit measured, and whether the work tree had uncommitted changes."""
    try:
        commit = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
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
        ("date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("code", _code_version()),
        ("nproc", str(os.cpu_count())),
        ("CPU", _read_first("/proc/cpuinfo", "model name")),
        ("memory", _read_first("/proc/meminfo", "MemTotal")),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("packages", ", ".join(versions)),
        ("nodes", f"3 x {_node_version()}, AOF everysec, on loopback"),
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
    context: dict[str, Any],
    chart_name: str | None,
) -> str:
    lines = ["# Benchmarks", ""]
    if config.smoke:
        lines += ["**Smoke run** (1 s per scenario, 1 run): checks the harness; the numbers mean "
                  "nothing.", ""]  # fmt: skip
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
        f"{config.runs} interleaved run(s) x {len(summaries)} scenarios x {config.duration_s} s,"
        f" {config.connections} keep-alive connections, {config.warmup_s} s warm-up per scenario"
        f" before run 1; whole session {context['wall_seconds']:.0f} s.",
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
    lines += ["", "## Ratios and the targets of issue 4", "",
              "| ratio | value | target | |", "|---|---:|---|---|"]  # fmt: skip
    for ratio in ratios(summaries):
        lines.append(
            f"| {ratio.name} | {ratio.value:,.2f} | {ratio.target} | {_verdict(ratio.met)} |"
        )
    flush = context.get("flush_10k_ms")
    if flush:
        verdict = _verdict(flush["max"] < 100)
        lines += ["", f"Flush of 10,000 distinct pages to the 3 nodes (`VisitCounter.flush()` in"
                  f" process, after the scenarios, {flush['repeats']:.0f} repeats): median"
                  f" {flush['median']:.1f} ms, max {flush['max']:.1f} ms; target < 100 ms:"
                  f" {verdict}."]  # fmt: skip
    if chart_name:
        lines += ["", f"![throughput and p99 per scenario]({chart_name})"]
    lines += ["", "## Redis commands per 1,000 requests, by command", "",
              "Commands run inside the batch script (HGET, HSET, HMGET, INCRBY, PUBLISH) count"
              " one each, as INFO commandstats counts them.", "",
              "| scenario | commands |", "|---|---|"]  # fmt: skip
    for s in summaries.values():
        if s.breakdown_per_1k:
            top = sorted(s.breakdown_per_1k.items(), key=lambda item: -item[1])
            lines.append(
                f"| {s.scenario.label} | "
                + ", ".join(f"{name} {value:,.2f}" for name, value in top)
                + " |"
            )
    lines += ["", "## Requests/s per run", "",
              "| scenario | " + " | ".join(f"run {n}" for n in range(1, config.runs + 1)) + " |",
              "|---|" + "---:|" * config.runs]  # fmt: skip
    for s in summaries.values():
        lines.append(f"| {s.scenario.label} | " + " | ".join(f"{v:,.0f}" for v in s.rps) + " |")
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in machine_info(context)]
    lines += ["", "## Method", ""]
    lines += [
        "- Three Redis-protocol nodes and four single-worker uvicorn servers (`--loop uvloop "
        "--http httptools --no-access-log`), all on 127.0.0.1 and sharing the nodes: the service"
        " with the two bench routes (`bench.apps:create_bench_app`: a, b, c, e, f), the same with"
        " CACHE_TTL_SECONDS=0 (d), the same with JOURNAL_VISITS=true (g), and "
        "`bench.raw_asgi:app` (h). Only the server under load is busy; the others idle on the "
        "same core. Service settings: "
        f"BATCH_INTERVAL_SECONDS={config.batch_interval_s:g}, CACHE_TTL_SECONDS=5, "
        "HEALTH_CHECK_INTERVAL_SECONDS=5, ENABLE_METRICS=true (the default: Prometheus metrics"
        " on), everything else at its default.",
        "- Runs are interleaved (run 1: a..h, run 2: a..h, ...) so machine drift hits every "
        "scenario alike; req/s is the median over runs, p50 and p99 the medians of each run's "
        "value, RSS the largest VmRSS read right after a run.",
        "- Redis commands: the change in INFO commandstats summed over the nodes, from before a"
        " run until the service has flushed everything it accepted in it (its metrics show no "
        "pending visit), divided by the 2xx answers of the run. The main column leaves out "
        "health-check PINGs, the harness's INFO and connection set-up (HELLO, CLIENT, SUBSCRIBE);"
        " the next column counts everything.",
        "- Server commands: "
        + "; ".join(f"{name}: `{command}`" for name, command in context["server_commands"].items()),
    ]
    return "\n".join(lines) + "\n"


def write_chart(path: Path, summaries: dict[str, Summary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import StrMethodFormatter

    items = list(summaries.values())
    labels = [f"({s.scenario.key})\n{textwrap.fill(s.scenario.title, 13)}" for s in items]
    colors = ["#2b6cb0" if s.scenario.server != "raw" and s.scenario.key in "abcdg" else "#a0aec0"
              for s in items]  # fmt: skip
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5), layout="constrained")
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
    right.set_title("Latency p99, ms (median of runs)")
    right.set_ylabel("ms")
    right.margins(y=0.12)
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle("visit-counter: the service (blue) beside its comparisons (grey)")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(
    config: BenchConfig, measurements: list[Measurement], context: dict[str, Any]
) -> list[Path]:
    """Write the report, the chart beside it (same name, .png) and the raw numbers (.json)."""
    summaries = summarize(measurements)
    out = config.out
    out.parent.mkdir(parents=True, exist_ok=True)
    chart = out.with_suffix(".png")
    write_chart(chart, summaries)
    out.write_text(render_markdown(config, summaries, measurements, context, chart.name))
    raw = out.with_suffix(".json")
    raw.write_text(
        json.dumps(
            {
                "config": {
                    **dataclasses.asdict(config),
                    "out": str(config.out),
                    "scenarios": [s.key for s in config.scenarios],
                },
                "context": context,
                "measurements": [dataclasses.asdict(m) for m in measurements],
            },
            indent=1,
        )
        + "\n"
    )
    return [out, chart, raw]
