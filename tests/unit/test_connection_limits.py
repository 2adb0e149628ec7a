"""The open-file budget and the connection guard: pure arithmetic and hand-written fakes.

The real server under these limits is driven in tests/e2e/test_request_limits.py.
"""

from __future__ import annotations

import logging
import resource
import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.support.service import REPO_ROOT
from visit_counter.core import connection_limits
from visit_counter.core.config import Settings, SettingsError
from visit_counter.core.connection_limits import (
    MIN_CLIENT_CONNECTIONS,
    OTHER_DESCRIPTORS,
    ConnectionGuard,
    descriptor_budget,
)

THREE_NODES = "redis://a:1,redis://b:2,redis://c:3"
NOW = 1000.0  # loop time in the guard tests; waiting_since values are on the same clock


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, redis_nodes=THREE_NODES, **values)  # type: ignore[arg-type]


# --- the budget -------------------------------------------------------------------------------


def test_max_connections_is_kept_when_the_limit_has_room() -> None:
    budget = descriptor_budget(settings(max_connections=1024), open_files=1_048_576)
    assert budget.max_connections == 1024
    assert budget.reserved == 3 * 100 + OTHER_DESCRIPTORS


def test_max_connections_is_lowered_to_what_the_limit_leaves() -> None:
    budget = descriptor_budget(settings(redis_pool_size=16), open_files=256)
    assert budget.reserved == 3 * 16 + OTHER_DESCRIPTORS
    assert budget.max_connections == 256 - 3 * 16 - OTHER_DESCRIPTORS


def test_a_small_max_connections_that_fits_is_kept() -> None:
    room = MIN_CLIENT_CONNECTIONS // 2
    open_files = 3 * 100 + OTHER_DESCRIPTORS + room
    assert descriptor_budget(settings(max_connections=room), open_files).max_connections == room


@pytest.mark.parametrize(
    "open_files", [150, 3 * 100 + OTHER_DESCRIPTORS + MIN_CLIENT_CONNECTIONS - 1]
)
def test_a_limit_without_room_for_clients_is_refused_in_one_line(open_files: int) -> None:
    with pytest.raises(SettingsError) as caught:
        descriptor_budget(settings(), open_files)
    message = str(caught.value)
    assert "\n" not in message
    assert f"RLIMIT_NOFILE {open_files}" in message
    assert "3 nodes x REDIS_POOL_SIZE=100" in message


def run_python(code: str, open_files: tuple[int, int]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    code = (
        "import resource; "
        "from visit_counter.core.connection_limits import raise_open_files_limit as r; "
        "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    assert run_python(code, (200, hard)) == f"{hard} {hard}"
    assert run_python(code, (200, 200)) == "200 200"


def test_for_process_warns_when_it_lowers_max_connections(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(connection_limits, "raise_open_files_limit", lambda: 256)
    with caplog.at_level(logging.WARNING, logger="visit_counter.core.connection_limits"):
        guard = ConnectionGuard.for_process(settings(redis_pool_size=16))
    assert guard.max_connections == 80
    assert "MAX_CONNECTIONS lowered from 1024 to 80" in caplog.text


# --- the guard --------------------------------------------------------------------------------


@dataclass(eq=False)
class FakeConnection:
    waiting_since: float | None  # None: serving a request
    evicted: bool = False

    def evict(self) -> None:
        self.evicted = True


def test_connections_are_admitted_up_to_the_limit() -> None:
    guard = ConnectionGuard(max_connections=3, head_timeout=10)
    connections = [FakeConnection(float(number)) for number in range(3)]
    assert all(guard.admit(connection, NOW) for connection in connections)
    assert guard.open_connections == 3
    assert not any(connection.evicted for connection in connections)


def test_at_the_limit_the_longest_waiting_connection_makes_room() -> None:
    guard = ConnectionGuard(max_connections=3, head_timeout=10)
    busy = FakeConnection(None)
    recent, oldest = FakeConnection(5.0), FakeConnection(1.0)
    for connection in (busy, recent, oldest):
        guard.admit(connection, NOW)
    newcomer = FakeConnection(9.0)
    assert guard.admit(newcomer, NOW)
    assert oldest.evicted
    assert not busy.evicted
    assert not recent.evicted
    assert guard.open_connections == 3
    assert guard.closed["evicted"] == 1
    guard.release(oldest)  # its close arrives later: counted once
    assert guard.open_connections == 3


def test_a_flood_evicts_an_eighth_of_the_waiting_at_once() -> None:
    guard = ConnectionGuard(max_connections=64, head_timeout=10)
    waiting = [FakeConnection(float(number)) for number in range(64)]  # idle for minutes
    for connection in waiting:
        guard.admit(connection, NOW)
    assert guard.admit(FakeConnection(NOW), NOW)
    assert [connection.evicted for connection in waiting] == [True] * 8 + [False] * 56
    assert guard.open_connections == 64 - 8 + 1


def test_a_burst_just_over_the_limit_closes_only_what_it_must() -> None:
    """Connections that opened a moment ago are about to send their request."""
    guard = ConnectionGuard(max_connections=64, head_timeout=10)
    fresh = [FakeConnection(NOW - 0.001 * number) for number in range(64)]
    for connection in fresh:
        guard.admit(connection, NOW)
    assert guard.admit(FakeConnection(NOW), NOW)
    assert sum(connection.evicted for connection in fresh) == 1
    assert fresh[-1].evicted  # the longest-waiting
    assert guard.open_connections == 64


def test_when_every_connection_is_busy_the_new_one_is_refused() -> None:
    guard = ConnectionGuard(max_connections=2, head_timeout=10)
    busy = [FakeConnection(None), FakeConnection(None)]
    for connection in busy:
        guard.admit(connection, NOW)
    assert not guard.admit(FakeConnection(NOW), NOW)
    assert guard.open_connections == 2
    assert guard.closed["max_connections"] == 1
    assert not any(connection.evicted for connection in busy)


def test_a_released_connection_frees_its_slot() -> None:
    guard = ConnectionGuard(max_connections=1, head_timeout=10)
    first = FakeConnection(None)
    guard.admit(first, NOW)
    guard.release(first)
    assert guard.admit(FakeConnection(None), NOW)


def test_a_flood_of_closes_logs_one_line(caplog: pytest.LogCaptureFixture) -> None:
    guard = ConnectionGuard(max_connections=1, head_timeout=10)
    with caplog.at_level(logging.INFO, logger="visit_counter.core.connection_limits"):
        for _ in range(100):
            guard.note("head_timeout")
    assert guard.closed["head_timeout"] == 100
    assert len(caplog.records) == 1
    assert "took over 10s" in caplog.records[0].getMessage()
