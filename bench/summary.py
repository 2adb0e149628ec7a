"""Measurements of a scenario over its runs, summed up: medians, commands per 1,000 visits."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.processes import is_housekeeping
from bench.results import Measurement
from bench.scenarios import SCENARIOS, Scenario


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


def breakdown_cell(per_1k: dict[str, float]) -> str:
    """Commands per 1,000 visits, most first, for a Markdown table cell.

    Subcommands (`script|load`) have their bar escaped: a bare one would end the cell.
    """
    ordered = sorted(per_1k.items(), key=lambda item: -item[1])
    return ", ".join(name.replace("|", "\\|") + f" {value:,.2f}" for name, value in ordered)
