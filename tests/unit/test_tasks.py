"""PeriodicTask: a background loop survives any error but cancellation, and stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from visit_counter.core.tasks import PeriodicTask


async def test_a_step_that_raises_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    task = PeriodicTask("flaky", step, interval=0.01, run_first=True)
    task.start()
    for _ in range(200):
        if calls >= 5:
            break
        await asyncio.sleep(0.01)
    await task.aclose()
    assert calls >= 5, "the loop went on after the errors"
    assert task.failures == 3
    failures = [r for r in caplog.records if "background task flaky failed" in r.message]
    assert len(failures) == 3
    assert all(r.levelno == logging.ERROR for r in failures)
    assert not task.running


async def test_wake_runs_the_next_step_at_once() -> None:
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    task = PeriodicTask("sleepy", step, interval=3600)
    task.start()
    await asyncio.sleep(0.01)
    assert not ran.is_set(), "without run_first the loop pauses first"
    task.wake()
    await asyncio.wait_for(ran.wait(), timeout=2)
    await task.aclose()


async def test_aclose_lets_a_long_step_end_by_itself_when_it_watches_stopping() -> None:
    ended_cleanly = False

    async def long_step() -> None:
        nonlocal ended_cleanly
        while not task.stopping.is_set():
            await asyncio.sleep(0.01)
        ended_cleanly = True

    task = PeriodicTask("session", long_step, interval=0.01, run_first=True)
    task.start()
    await asyncio.sleep(0.05)
    await task.aclose()
    assert ended_cleanly
    assert not task.running


async def test_aclose_cancels_a_step_that_ignores_stopping() -> None:
    cancelled = False

    async def stuck() -> None:
        nonlocal cancelled
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled = True
            raise

    task = PeriodicTask("stuck", stuck, interval=0.01, run_first=True)
    task.start()
    await asyncio.sleep(0.02)
    await task.aclose()
    assert cancelled
    assert not task.running
