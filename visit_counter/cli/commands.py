"""Command line: `visit-counter COMMAND` (or `python -m app COMMAND`; `--help` on each).

  serve        serve the API (what `make run` uses)
  ring owner   which node holds a page
  ring stats   pages per node for a sample of page ids, and the imbalance
  nodes        PING every node; `nodes status|plan|add|remove` change the node set
               online (visit_counter/cli/nodes.py)
  journal quarantine   list damaged journal files kept in DATA_DIR/journal/quarantine,
               or clear one incident (--clear NAME); exit 1 if any is listed
  load         a bounded loopback load test that checks the counts (visit_counter/cli/load.py)

`ring`, `nodes` and `journal` read the same settings as the service (environment and
`.env`: REDIS_NODES, VIRTUAL_NODES, REDIS_PASSWORD, ...), so they describe the
placement and the nodes the service uses.

With REDIS_NODES unset, `serve` first starts the three embedded nodes on
127.0.0.1:7070-7072 (data under DATA_DIR/nodes) and stops them after the
service has stopped, so the service's final flush still reaches them; it says so
in a WARNING (INFO with --embedded-ok, which `make run` passes).

`serve` reads and checks the settings and the nodes before any worker starts, so a
bad one stops it with one line and exit status 2 (the Docker image runs it for this:
a worker that died of a bad setting would be respawned by uvicorn's supervisor forever).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import uvicorn

from visit_counter import __version__
from visit_counter.cli import nodes as nodes_cli
from visit_counter.core.config import (
    EMBEDDED_PORTS,
    Settings,
    SettingsError,
    load_settings,
    log_start_notices,
)
from visit_counter.core.connection_limits import check_open_files
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import NodeStartError, RedisNodeProcess
from visit_counter.core.errors import InvalidPageIdError
from visit_counter.core.http_limits import PROTOCOL_PATH
from visit_counter.core.logging import configure_logging
from visit_counter.core.page_id import normalize_page_id
from visit_counter.core.redis_manager import RedisManager
from visit_counter.services.quarantine import clear, quarantined
from visit_counter.services.storage import open_storage
from visit_counter.topology.nodeset import NodeSet, TopologyError

logger = logging.getLogger("visit_counter.cli")

MAX_WORKERS = 1024
# serve's workers: the app built as `app.main:app` builds it, less the start-up notices
# serve has logged once already (a factory, so each worker calls it).
WORKER_APP = "visit_counter.main:serve_worker_app"


def _start_embedded_nodes(settings: Settings, stack: ExitStack) -> None:
    for port in EMBEDDED_PORTS:
        node = RedisNodeProcess(port, settings.data_dir / "nodes" / str(port))
        node.start()
        stack.callback(node.stop)
        logger.info("embedded node on %s (data in %s)", node.url, node.data_dir)


def serve(args: argparse.Namespace) -> int:
    settings = load_settings(warn_unknown_keys=False)  # logged below, in LOG_FORMAT
    check_open_files(settings)  # raised here, the limit is inherited by the workers
    configure_logging(settings.debug, settings.log_format)
    log_start_notices(settings, embedded_intended=args.embedded_ok)
    # uvicorn re-raises the signal that stopped it once shutdown is complete;
    # with these no-op handlers that re-raise returns here, so the embedded nodes
    # are stopped after the service's final flush and the exit code is 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    with ExitStack() as stack:
        if settings.uses_embedded_nodes:
            _start_embedded_nodes(settings, stack)
        try:
            asyncio.run(_check_nodes(settings))
        except TopologyError as exc:
            print(f"visit-counter: {exc}", file=sys.stderr)
            return 2
        uvicorn.run(
            WORKER_APP,
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http=PROTOCOL_PATH,  # httptools with limits on URL and header size
            access_log=args.access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
        )
    return 0


async def _check_nodes(settings: Settings) -> None:
    """Before any worker starts: refuse nodes the mode cannot use (one line, exit 2),
    and store the first topology if none is (what each worker's start does too)."""
    storage = open_storage(settings)
    manager, nodes = storage.manager, storage.nodes
    try:
        await nodes.start()
    finally:
        await nodes.aclose()
        await manager.aclose()


def ring_for(settings: Settings, *, listed: bool) -> ConsistentHashRing:
    """The service's ring: the topology stored on the nodes (the new ring during a move),
    or, when no node answers or none holds one (or `listed`), the ring a first start
    would store for REDIS_NODES."""

    async def peek() -> ConsistentHashRing:
        manager = RedisManager(settings)
        try:
            return (await NodeSet(settings, manager).peek(ask_nodes=not listed)).write_ring
        finally:
            await manager.aclose()

    ring: ConsistentHashRing = asyncio.run(peek())
    return ring


def ring_owner(args: argparse.Namespace) -> int:
    print(ring_for(load_settings(), listed=args.listed).owner(normalize_page_id(args.page_id)))
    return 0


def ring_stats(args: argparse.Namespace) -> int:
    ring = ring_for(load_settings(), listed=args.listed)
    counts = ring.distribution(f"page-{index}" for index in range(args.sample))
    mean = args.sample / len(counts)
    width = max(len(node) for node in counts)
    print(f"{len(counts)} nodes, {ring.virtual_nodes} virtual nodes each, {args.sample} pages")
    for node, count in counts.items():
        print(f"{node:<{width}}  {count:>9}  {count / args.sample:6.1%}")
    print(f"imbalance (max/mean): {max(counts.values()) / mean:.3f}")
    return 0


def journal_quarantine(args: argparse.Namespace) -> int:
    journal_dir = load_settings().journal_dir
    if args.clear is not None:
        try:
            removed = clear(journal_dir, args.clear)
        except ValueError as exc:
            print(f"visit-counter: {exc}", file=sys.stderr)
            return 2
        print(f"removed {removed}")
        return 0
    files = quarantined(journal_dir)
    for item in files:
        unreadable = "report missing" if item.lines is None else f"{item.lines} lines"
        if item.bytes is not None:
            unreadable += f", {item.bytes} bytes"
        print(
            f"{item.found_at:%Y-%m-%d %H:%M:%S}Z  [{item.incident}]  {item.kind:<9}  "
            f"{unreadable} unreadable  {item.path}"
        )
    print(f"{len(files)} damaged files in {journal_dir / 'quarantine'}")
    return 1 if files else 0


def load(args: argparse.Namespace) -> int:
    try:
        from visit_counter.cli.load import run
    except ImportError as exc:  # httpx comes with requirements-dev.txt, not the image
        print(f"visit-counter: load needs httpx ({exc}); pip install httpx", file=sys.stderr)
        return 2
    return run(
        args.url,
        args.requests,
        args.pages,
        args.concurrency,
        args.timeout,
        prefix=args.prefix,
        api_prefix=args.api_prefix,
    )


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return value

    return parse


def _workers(text: str) -> int:
    """--workers, or $WEB_CONCURRENCY for its default (argparse parses a string default)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a worker count from 1 to {MAX_WORKERS} "
            "(--workers, or WEB_CONCURRENCY without it)"
        )
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"visit-counter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve",
        help="serve the API (starting the embedded nodes when REDIS_NODES is unset)",
        description="Check the settings and the nodes, then serve the API with uvicorn "
        "(uvloop, the HTTP protocol with request-head limits of "
        "visit_counter/core/http_limits.py). With REDIS_NODES unset, first start the "
        "embedded nodes on 127.0.0.1:7070-7072 and stop them after the service. A bad "
        "setting or node set stops it before any worker starts: one line, exit status 2.",
    )
    serve_parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve_parser.add_argument(
        "--port",
        type=_bounded_int(0, 65535),
        default=8000,
        help="port to listen on (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--workers",
        type=_workers,
        default=os.environ.get("WEB_CONCURRENCY") or "1",  # a string: parsed by _workers
        metavar="N",
        help="worker processes, each with its own buffer and journal; unless given, "
        "$WEB_CONCURRENCY when set, else 1 (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (default: off)",
    )
    serve_parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to finish open requests at a stop (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--embedded-ok",
        action="store_true",
        help="REDIS_NODES unset is intended (make run): log the embedded nodes at INFO, "
        "not as a WARNING (default: off)",
    )
    serve_parser.set_defaults(handler=serve)

    ring_parser = commands.add_parser(
        "ring", help="page placement on the consistent-hash ring (REDIS_NODES, VIRTUAL_NODES)"
    )
    ring_commands = ring_parser.add_subparsers(dest="ring_command", required=True)
    owner_parser = ring_commands.add_parser(
        "owner", help="print the node that holds a page (as the service names it)"
    )
    owner_parser.add_argument("page_id", metavar="PAGE", help="a page id")
    owner_parser.set_defaults(handler=ring_owner)
    stats_parser = ring_commands.add_parser(
        "stats", help="pages per node for a sample of page ids, and the imbalance (max/mean)"
    )
    stats_parser.add_argument(
        "--sample",
        type=_bounded_int(1, 10_000_000),
        default=100_000,
        metavar="N",
        help="how many page ids (page-0 ... page-<N-1>) to place (default: %(default)s)",
    )
    stats_parser.set_defaults(handler=ring_stats)
    for ring_command in (owner_parser, stats_parser):
        ring_command.add_argument(
            "--listed",
            action="store_true",
            help="place by REDIS_NODES as a first start would, without asking the nodes for "
            "the stored topology",
        )

    nodes_cli.add_parser(commands)

    journal_parser = commands.add_parser("journal", help="the on-disk journal (DATA_DIR/journal)")
    journal_commands = journal_parser.add_subparsers(dest="journal_command", required=True)
    quarantine_parser = journal_commands.add_parser(
        "quarantine",
        help="list damaged journal files kept in the quarantine; exit status 1 if any",
        description="List the journal and visit-log files a claim found damaged and moved to "
        "DATA_DIR/journal/quarantine/<incident>/ (damage.json there says which bytes could "
        "not be read). /status reports them until they are cleared: --clear, or remove or "
        "move the incident directory.",
    )
    quarantine_parser.add_argument(
        "--clear",
        metavar="INCIDENT",
        help="delete one incident directory (its name is shown in brackets in the list)",
    )
    quarantine_parser.set_defaults(handler=journal_quarantine)

    load_parser = commands.add_parser(
        "load",
        help="bounded loopback load test: N POSTs over M pages, then check the counts",
        description="POST --requests visits round-robin over --pages fresh pages with "
        "--concurrency clients against a service on this machine, with a progress bar on "
        "stderr; then read the counts back with GET until they equal the accepted POSTs "
        "(other workers' visits show after their flush, and a count may be served from the "
        "cache for CACHE_TTL_SECONDS, so --timeout should exceed both). Exit status 1 if a "
        "POST was not accepted or a count never matched; 2 for a non-loopback URL.",
    )
    load_parser.add_argument(
        "--url",
        default="http://127.0.0.1:8000",
        help="service base URL, loopback only (default: %(default)s)",
    )
    load_parser.add_argument(
        "--requests",
        "-n",
        type=_bounded_int(1, 10_000_000),
        default=1000,
        metavar="N",
        help="POSTs to send (default: %(default)s)",
    )
    load_parser.add_argument(
        "--pages",
        "-m",
        type=_bounded_int(1, 100_000),
        default=10,
        metavar="M",
        help="distinct pages to spread them over (default: %(default)s)",
    )
    load_parser.add_argument(
        "--concurrency",
        "-c",
        type=_bounded_int(1, 1000),
        default=10,
        metavar="C",
        help="concurrent clients (default: %(default)s)",
    )
    load_parser.add_argument(
        "--timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds to wait for the counts to read back (default: %(default)s)",
    )
    load_parser.add_argument(
        "--prefix", help="page id prefix (default: load-<random>, so every page starts at 0)"
    )
    load_parser.add_argument(
        "--api-prefix", default="/api/v1", help="the service's API_PREFIX (default: %(default)s)"
    )
    load_parser.set_defaults(handler=load)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (SettingsError, NodeStartError, InvalidPageIdError) as exc:
        print(f"visit-counter: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
