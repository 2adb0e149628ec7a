"""One sink's queue: deliveries written ahead to a file, handed over in order, retried.

A sink that is down delays only itself. Its deliveries wait here, never in front
of the Redis flush: `offer` appends the delivery to this process's file
(`DATA_DIR/sinks/<sink>/<writer>.jsonl`, records as in the journal, with a
checksum) and returns; a task of the queue's own hands them over oldest first and
retries the oldest, with a backoff up to 5 s, until the sink takes it.

Bounded: at most `max_in_memory` deliveries are held in memory; the rest stay in
the file only and are read back, in order, once memory has room. Once every
delivery in the file was handed over, the file is emptied. At shutdown the queue
tries for `shutdown_seconds` to hand over what is left; what is still left stays
in the file (cut to the undelivered part), and the next process to start claims
the files of writers that are gone (the file's `flock` tells a dead writer from a
live one), so nothing is lost across restarts. A delivery found twice (claimed
after a crash that left delivered ones in the file) is harmless: the sink's own
marks apply it once (`base.py`).

A file that cannot be written (a full disk) leaves the delivery in memory while
there is room, and drops it with an ERROR (`lost` counts them) when there is not.
An unreadable record in a claimed file is skipped with an ERROR and counted in
`damaged`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from visit_counter.services.journal_format import DamagedRecordError, encode_record, record_text
from visit_counter.services.orphans import orphan_lock
from visit_counter.sinks.base import Delivery, Sink

logger = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 0.2
_LAST_RETRY_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class SinkStats:
    """One sink's queue, as status and metrics show it."""

    name: str
    pending: int  # deliveries not handed over yet (in memory and in the file only)
    delivered: int  # handed over and applied now
    duplicates: int  # handed over, and the sink had applied them before
    failures: int  # attempts that raised
    lost: int  # dropped: neither the file nor memory could hold them
    damaged: int  # unreadable records skipped in claimed files
    last_error: str | None


class SinkQueue:
    """The queue of one sink in one process (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        directory: Path,
        writer: str,
        *,
        max_in_memory: int = 1000,
        shutdown_seconds: float = 5.0,
    ) -> None:
        self.sink = sink
        self.directory = directory
        self.path = directory / f"{writer}.jsonl"
        self._max_in_memory = max_in_memory
        self._shutdown_seconds = shutdown_seconds
        self._fd: int | None = None
        # Deliveries in order, each with the file offset after its record (None: not in
        # the file); `_file_only` counts the ones after them that are in the file only.
        self._memory: deque[tuple[Delivery, int | None]] = deque()
        self._file_only = 0
        self._read_from = 0  # where the next record to read back starts
        self._woken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.delivered = self.duplicates = self.failures = self.lost = self.damaged = 0
        self.last_error: str | None = None

    @property
    def pending(self) -> int:
        return len(self._memory) + self._file_only

    def stats(self) -> SinkStats:
        return SinkStats(
            self.sink.name,
            self.pending,
            self.delivered,
            self.duplicates,
            self.failures,
            self.lost,
            self.damaged,
            self.last_error,
        )

    # -- lifecycle --------------------------------------------------------------

    def open(self) -> None:
        """Create and lock this process's file, then claim the files of dead writers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        for path in sorted(self.directory.glob("*.jsonl")):
            if path != self.path:
                self._claim(path)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sink-{self.sink.name}")

    async def aclose(self) -> None:
        """Hand over what is left for up to `shutdown_seconds`; keep the rest in the file."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._shutdown_seconds):
                    while self.pending and not task.done():
                        self._woken.set()
                        await asyncio.sleep(0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.sink.aclose()
        except Exception:
            logger.exception("sink %s: close failed", self.sink.name)
        self._close_file()

    async def abandon(self) -> None:
        """Stop as `kill -9` would: the file is left as it is, unlocked, for a claim."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.sink.aclose()
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    # -- the flush side ---------------------------------------------------------

    def offer(self, delivery: Delivery) -> None:
        """Queue `delivery` (never waits; see the module docstring)."""
        end: int | None = None
        if self._fd is not None:
            try:
                os.write(self._fd, encode_record(delivery.to_json()))
                end = os.lseek(self._fd, 0, os.SEEK_END)
            except OSError as exc:
                logger.error("sink %s: cannot write %s: %s", self.sink.name, self.path, exc)
        if end is not None and (self._file_only or len(self._memory) >= self._max_in_memory):
            self._file_only += 1  # read back once memory has room
        elif end is not None or len(self._memory) < self._max_in_memory:
            self._memory.append((delivery, end))
        else:
            self.lost += 1
            logger.error(
                "sink %s: batch %s/%d (%d visits) LOST: the queue is full and its file "
                "cannot be written",
                self.sink.name,
                delivery.batch,
                delivery.seq,
                delivery.visits,
            )
        self._woken.set()

    # -- handing over -------------------------------------------------------------

    async def _run(self) -> None:
        """Hand over deliveries until cancelled; survives anything else (logged)."""
        while True:
            try:
                await self._hand_over()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("sink %s: queue step failed; going on", self.sink.name)
                await asyncio.sleep(_LAST_RETRY_SECONDS)

    async def _hand_over(self) -> None:
        attempt = 0
        while True:
            if not self._memory:
                self._read_back()
            if not self._memory:
                self._empty_file()
                self._woken.clear()
                await self._woken.wait()
                continue
            delivery, end = self._memory[0]
            try:
                await self.sink.start()  # connects once; again after a failure, if need be
                applied = await self.sink.deliver(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if attempt == 0:
                    logger.warning(
                        "sink %s: batch %s/%d not delivered, retrying: %s",
                        self.sink.name,
                        delivery.batch,
                        delivery.seq,
                        self.last_error,
                    )
                delay = min(_LAST_RETRY_SECONDS, _FIRST_RETRY_SECONDS * 2**attempt)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if attempt:
                logger.info("sink %s: delivering again after %d failures", self.sink.name, attempt)
            attempt = 0
            self.last_error = None
            self._memory.popleft()
            if end is not None:
                self._read_from = max(self._read_from, end)
            if applied:
                self.delivered += 1
            else:
                self.duplicates += 1

    def _read_back(self) -> None:
        """Refill memory from the file's records not handed over yet."""
        if not self._file_only or self._fd is None:
            return
        with open(self.path, "rb") as file:
            file.seek(self._read_from)
            offset = self._read_from
            while self._file_only and len(self._memory) < self._max_in_memory:
                raw = file.readline()
                if not raw:
                    self._file_only = 0  # cannot happen unless the file was cut
                    break
                offset += len(raw)
                self._file_only -= 1
                delivery = self._parse(raw, self.path, offset)
                if delivery is None:
                    self._read_from = max(self._read_from, offset)  # skipped: handed over
                else:
                    self._memory.append((delivery, offset))

    def _empty_file(self) -> None:
        """Everything in the file was handed over: start it again from nothing."""
        if self._fd is None or self._read_from == 0:
            return
        try:
            os.ftruncate(self._fd, 0)
            self._read_from = 0
        except OSError as exc:
            logger.error("sink %s: cannot empty %s: %s", self.sink.name, self.path, exc)

    def _close_file(self) -> None:
        """Leave only what was not handed over (for the next start to claim), or nothing."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if not self._memory and not self._file_only:
                self.path.unlink(missing_ok=True)
            elif self._read_from:
                with open(self.path, "rb") as file:
                    file.seek(self._read_from)
                    rest = file.read()
                os.ftruncate(fd, 0)
                os.write(fd, rest)
                os.fsync(fd)
            else:
                os.fsync(fd)
        except OSError as exc:
            logger.error("sink %s: cannot keep %s: %s", self.sink.name, self.path, exc)
        finally:
            os.close(fd)

    def _parse(self, raw: bytes, path: Path, offset: int) -> Delivery | None:
        """The delivery of one record, or None (logged, counted) when it is unreadable."""
        try:
            return Delivery.from_json(record_text(raw))
        except (DamagedRecordError, ValueError) as exc:
            self.damaged += 1
            logger.error(
                "sink %s: the record at offset %d of %s is unreadable (%s); its delivery "
                "is skipped",
                self.sink.name,
                offset,
                path,
                exc,
            )
            return None

    def _claim(self, path: Path) -> None:
        """Take a dead writer's undelivered deliveries into this queue, then remove its file."""
        with orphan_lock(path) as orphaned:
            if not orphaned:
                return
            taken = offset = 0
            with open(path, "rb") as file:
                for raw in file:
                    delivery = self._parse(raw, path, offset)
                    offset += len(raw)
                    if delivery is not None:
                        self.offer(delivery)
                        taken += 1
            assert self._fd is not None
            os.fsync(self._fd)
            path.unlink()
            logger.info("sink %s: claimed %d deliveries from %s", self.sink.name, taken, path.name)
