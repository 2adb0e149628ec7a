"""What one benchmark session measured, and how it was configured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.load import LoadResult
from bench.processes import counting_calls
from bench.scenarios import Scenario

SECTIONS = ("scenarios", "move", "cluster")


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
    sections: tuple[str, ...] = SECTIONS  # which parts run: the scenarios, the move, the cluster
    move_pages: int = 1_000_000  # pages the move section stores on 3 nodes, then moves to 4
    move_placements: tuple[str, ...] = ("beside-nodes",)  # see bench/move.py
    move_max_rate: float = 0.0  # the mover's --max-rate, pages per second (0: unpaced)
