"""Command line: `python -m app serve` (what `make run` uses).

With REDIS_NODES unset, `serve` first starts the three embedded nodes on
127.0.0.1:7070-7072 (data under DATA_DIR/nodes) and stops them after the
service has stopped, so the service's final flush still reaches them.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from contextlib import ExitStack

import uvicorn

from app.core.config import EMBEDDED_PORTS, Settings, SettingsError, load_settings
from app.core.embedded_nodes import NodeStartError, RedisNodeProcess
from app.core.logging import configure_logging

logger = logging.getLogger("app.cli")


def _start_embedded_nodes(settings: Settings, stack: ExitStack) -> None:
    for port in EMBEDDED_PORTS:
        node = RedisNodeProcess(port, settings.data_dir / "nodes" / str(port))
        node.start()
        stack.callback(node.stop)
        logger.info("embedded node on %s (data in %s)", node.url, node.data_dir)


def serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.debug)
    # uvicorn re-raises the signal that stopped it once shutdown is complete;
    # with these no-op handlers that re-raise returns here, so the embedded nodes
    # are stopped after the service's final flush and the exit code is 0.
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: None)
    with ExitStack() as stack:
        if settings.uses_embedded_nodes:
            _start_embedded_nodes(settings, stack)
        uvicorn.run(
            "app.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            access_log=args.access_log,
            timeout_graceful_shutdown=args.graceful_timeout,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="serve the API (starting the embedded nodes when REDIS_NODES is unset)"
    )
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument("--access-log", action="store_true", help="log every request")
    serve_parser.add_argument(
        "--graceful-timeout", type=float, default=10.0, help="seconds to finish open requests"
    )
    serve_parser.set_defaults(handler=serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except (SettingsError, NodeStartError) as exc:
        print(f"visit-counter: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
