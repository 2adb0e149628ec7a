"""What one benchmark session measured, and how it was configured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadResult
from bench.processes import counting_calls
from bench.scenarios import Scenario


@dataclass(frozen=True, slots=True)
class Measurement:
    scenario: str
    run: int
    load: LoadResult
    commands: dict[str, int]  # calls per command on all nodes during the run and its flush
    rss_bytes: int  # the answering server's VmRSS right after the run

    @property
    def counting_commands(self) -> int:
        return counting_calls(self.commands)

    @property
    def all_commands(self) -> int:
        return sum(self.commands.values())


@dataclass(frozen=True, slots=True)
class BenchConfig:
    duration_s: int
    runs: int
    connections: int
    warmup_s: int
    batch_interval_s: float
    out: Path
    load: str
    smoke: bool
    scenarios: tuple[Scenario, ...]
