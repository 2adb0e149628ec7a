"""How many client connections one worker holds, and the file descriptors that leaves.

Every client connection costs a file descriptor, and so does every connection to a
node. When a process runs out (EMFILE), libuv accepts and drops every connection
waiting in the listen queue, and a node connection being opened fails, so the node
is marked down: 1,100 idle sockets under the common limit of 1,024 descriptors took
the whole service down. So each worker

- raises its soft RLIMIT_NOFILE to the hard limit at start (`raise_open_files_limit`);
- reserves `REDIS_POOL_SIZE` descriptors per node (the node pools never hold
  more, see `RedisManager`) plus `OTHER_DESCRIPTORS` for everything else;
- holds at most `MAX_CONNECTIONS` client connections, lowered with a WARNING to what
  the limit leaves after that reserve, and refuses to start (`SettingsError`) when it
  leaves fewer than `MIN_CLIENT_CONNECTIONS`.

`ConnectionGuard` keeps the count. At the limit it makes room the way nginx does
when its worker_connections run out (`ngx_drain_connections`): it closes the
connections that have waited longest for a request (idle keep-alive connections,
heads that never finish). Besides the one it must close, it closes up to an eighth
of them (at most 32) at once, so a flood of new connections does not pay a scan
each, but of those only ones that have waited IDLE_SECONDS: a burst of clients just
over the limit must not cost 32 of them their request. Only when every connection
is serving a request is the new one refused (503). An idle-socket flood therefore
cycles through the slots while a client that sends its request at once is served.
"""

from __future__ import annotations

import heapq
import logging
import resource
import sys
import time
from dataclasses import dataclass
from typing import Protocol

from visit_counter.core.config import Settings, SettingsError

logger = logging.getLogger(__name__)

# Descriptors besides the node pools: the interpreter, event loop and listening socket,
# the journal, visit-log and metrics files, log files (about 40 at start), plus the
# connections libuv accepts in one go before the guard closes the excess.
OTHER_DESCRIPTORS = 128
MIN_CLIENT_CONNECTIONS = 16
OPEN_MAX = 10_240  # the most macOS allows a process, whatever its hard limit says
IDLE_SECONDS = 1.0  # waited this long for a request: closed ahead of need at the limit
LOG_INTERVAL_SECONDS = 10.0  # at most one line per reason this often; the metric has every one

# Why the server closed a connection on its own (the label of the Prometheus counter).
CLOSE_REASONS = (
    "max_connections",  # new connection refused: every connection was serving a request
    "evicted",  # a connection waiting for a request, closed to admit new ones
    "head_timeout",  # its request head was not complete within HEAD_TIMEOUT_SECONDS
    "url_too_long",  # 414
    "headers_too_large",  # 431
)


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit.

    An unlimited hard limit (macOS) cannot be the soft one; OPEN_MAX is tried then.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = _value(hard)
    for target in (hard, OPEN_MAX):
        if _value(soft) < _value(target) <= ceiling:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            except (ValueError, OSError):
                continue
            return _value(target)
    return _value(soft)


def _value(limit: int) -> int:
    return sys.maxsize if limit == resource.RLIM_INFINITY else limit


@dataclass(frozen=True, slots=True)
class DescriptorBudget:
    """What the open-file limit leaves for client connections."""

    open_files: int  # the soft RLIMIT_NOFILE
    reserved: int  # node pools + OTHER_DESCRIPTORS
    max_connections: int  # MAX_CONNECTIONS, lowered to what fits


def descriptor_budget(settings: Settings, open_files: int) -> DescriptorBudget:
    """Client connections that fit in `open_files` descriptors; SettingsError if too few."""
    nodes = len(settings.redis_nodes)
    reserved = nodes * settings.redis_pool_size + OTHER_DESCRIPTORS
    room = open_files - reserved
    if room < min(settings.max_connections, MIN_CLIENT_CONNECTIONS):
        raise SettingsError(
            f"the open-file limit (RLIMIT_NOFILE {open_files}) leaves room for {max(room, 0)} "
            f"client connections after reserving {reserved} descriptors ({nodes} "
            f"node{'s' if nodes != 1 else ''} x REDIS_POOL_SIZE="
            f"{settings.redis_pool_size}, and {OTHER_DESCRIPTORS} for files): raise the "
            "limit (ulimit -n) or lower REDIS_POOL_SIZE"
        )
    return DescriptorBudget(open_files, reserved, min(settings.max_connections, room))


def check_open_files(settings: Settings) -> DescriptorBudget:
    """Raise this process's open-file limit, then size the budget; SettingsError if too small."""
    return descriptor_budget(settings, raise_open_files_limit())


class Connection(Protocol):
    """What the guard needs of a connection (`BoundedHttpToolsProtocol`)."""

    @property
    def waiting_since(self) -> float | None:
        """Loop time since which it has waited for a request; None while it serves one."""

    def evict(self) -> None:
        """Close now, to make room (answering 503 if part of a request had come)."""


class _ThrottledLog:
    """One log line per LOG_INTERVAL_SECONDS at most, with the count since the last."""

    __slots__ = ("level", "message", "next_at", "unlogged")

    def __init__(self, level: int, message: str) -> None:
        self.level, self.message = level, message
        self.unlogged, self.next_at = 0, 0.0

    def note(self, count: int) -> None:
        self.unlogged += count
        now = time.monotonic()
        if now >= self.next_at:
            logger.log(self.level, self.message, self.unlogged)
            self.unlogged, self.next_at = 0, now + LOG_INTERVAL_SECONDS


class ConnectionGuard:
    """One worker's connection limits, shared by all its connections, and what they closed.

    Built by the app's lifespan and put in the lifespan state, which uvicorn hands to
    every protocol it creates (see `http_limits.py`); one per worker process.
    """

    def __init__(self, max_connections: int, head_timeout: float) -> None:
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.closed = dict.fromkeys(CLOSE_REASONS, 0)  # connections closed, by reason
        self._held: set[Connection] = set()
        limit = f"MAX_CONNECTIONS={max_connections}"
        self._logs = {
            "max_connections": _ThrottledLog(
                logging.WARNING,
                f"refused %d new connections with 503: all {limit} were serving requests",
            ),
            "evicted": _ThrottledLog(
                logging.WARNING,
                f"closed %d connections waiting for a request, to admit new ones ({limit})",
            ),
            "head_timeout": _ThrottledLog(
                logging.INFO,
                f"closed %d connections whose request head took over {head_timeout:g}s "
                "(HEAD_TIMEOUT_SECONDS; 408 where part of it came)",
            ),
        }

    @classmethod
    def for_process(cls, settings: Settings) -> ConnectionGuard:
        """Raise the open-file limit and size MAX_CONNECTIONS to it (a WARNING if lowered)."""
        budget = check_open_files(settings)
        if budget.max_connections < settings.max_connections:
            logger.warning(
                "MAX_CONNECTIONS lowered from %d to %d: the open-file limit is %d and %d "
                "descriptors are reserved for node connections and files",
                settings.max_connections,
                budget.max_connections,
                budget.open_files,
                budget.reserved,
            )
        return cls(budget.max_connections, settings.head_timeout_seconds)

    @property
    def open_connections(self) -> int:
        return len(self._held)

    def admit(self, connection: Connection, now: float) -> bool:
        """Hold `connection`, closing the longest-waiting ones if the limit is reached.

        `now` is on the clock of `waiting_since`. False: every held connection is
        serving a request; `connection` is not held and the caller refuses it.
        """
        self._held.add(connection)
        excess = len(self._held) - self.max_connections
        if excess > 0:
            self._evict(excess, connection, now)
        if len(self._held) <= self.max_connections:
            return True
        self._held.discard(connection)
        self.note("max_connections")
        return False

    def _evict(self, excess: int, newcomer: Connection, now: float) -> None:
        waiting = [
            (since, connection)
            for connection in self._held
            if connection is not newcomer and (since := connection.waiting_since) is not None
        ]
        count = max(excess, min(32, len(waiting) // 8))
        ranked = heapq.nsmallest(count, waiting, key=lambda item: item[0])
        idle_since = now - IDLE_SECONDS
        victims = ranked[:excess] + [item for item in ranked[excess:] if item[0] <= idle_since]
        for _, victim in victims:
            self._held.discard(victim)
            victim.evict()
        if victims:
            self.note("evicted", len(victims))

    def release(self, connection: Connection) -> None:
        """`connection` is closed (a no-op if it was evicted or refused)."""
        self._held.discard(connection)

    def note(self, reason: str, count: int = 1) -> None:
        """Count connections the server closed for `reason` (one of CLOSE_REASONS)."""
        self.closed[reason] += count
        log = self._logs.get(reason)
        if log is not None:
            log.note(count)
