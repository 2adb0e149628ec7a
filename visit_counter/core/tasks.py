"""Background loops that never die silently: `PeriodicTask`.

Every loop of the service (health checks, the flusher, the events listeners,
metrics) runs through this helper, so surviving errors is a property of one
place rather than of each loop (issue 9: one `RuntimeError` from uvloop once
killed the health checks for good). A step that raises anything but
cancellation is logged with its traceback and the loop goes on after its pause.
`aclose` never raises and never hangs: it sets `stopping`, lets a step that
watches it end by itself (a pub/sub read cancelled mid-way can swallow the
cancellation), then cancels what is left and waits a bounded time for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

_STOP_GRACE_SECONDS = 2.0  # for a step to notice `stopping` and return
_CANCEL_WAIT_SECONDS = 5.0  # for a cancelled step to unwind


class PeriodicTask:
    """Run `step` again and again, `interval` seconds apart, until `aclose`.

    `wake()` starts the next step at once instead of after the pause (the
    flusher uses it when the buffer fills). With `run_first=False` the loop
    pauses before its first step.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval: float,
        *,
        run_first: bool = False,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._run_first = run_first
        self._woken = asyncio.Event()
        self.stopping = asyncio.Event()  # set by aclose; long steps poll it and return
        self._task: asyncio.Task[None] | None = None
        self.failures = 0  # steps that raised, since start

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self.stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._woken.set()

    async def _run(self) -> None:
        if not self._run_first:
            await self._pause()
        while not self.stopping.is_set():
            try:
                await self._step()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                logger.exception("background task %s failed; it goes on", self.name)
            await self._pause()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._interval):
                await self._woken.wait()
        self._woken.clear()

    async def aclose(self) -> None:
        """Stop the loop (see the module docstring); log a task that will not stop."""
        task, self._task = self._task, None
        if task is None or task.done():
            return
        self.stopping.set()
        self._woken.set()
        done, _ = await asyncio.wait({task}, timeout=_STOP_GRACE_SECONDS)
        if not done:
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=_CANCEL_WAIT_SECONDS)
        if not done:
            logger.error("background task %s did not stop", self.name)
            return
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s ended with %r", self.name, task.exception())
