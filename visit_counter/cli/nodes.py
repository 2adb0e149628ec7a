"""`python -m app nodes ...`: the node set, and changing it while the service runs.

  nodes                 PING every node of the topology; exit 1 if any is down
  nodes status          the topology version, its nodes, and any move under way
  nodes plan add|remove URL   what a move would transfer, per source -> target
  nodes add URL         add a node: move its share of the pages to it
  nodes remove URL      move every page off a node, then drop it

In cluster mode (REDIS_MODE=cluster) `nodes` pings the cluster, `nodes status`
shows its nodes, roles and slots, and a move is refused (exit 2): the cluster
moves its slots itself (`redis-cli --cluster reshard`).

A move can be killed at any point and the same command run again: it resumes
(visit_counter/topology/mover.py). Exit status: 0 done, 1 a node is down (ping), 2 the
command was refused (the reason is on stderr), 3 a node did not answer within
--timeout (run the command again to resume).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from visit_counter.cli.progress import draw_bar
from visit_counter.cluster.manager import ClusterManager
from visit_counter.core.config import Settings, load_settings
from visit_counter.services.storage import open_storage
from visit_counter.topology.mover import MoveError, MovePaused, Mover, MoveSummary
from visit_counter.topology.nodeset import NodeSet

logger = logging.getLogger("visit_counter.cli")


async def _with_nodes(settings: Settings, work: Callable[[NodeSet], Awaitable[int]]) -> int:
    storage = open_storage(settings)
    manager, nodes = storage.manager, storage.nodes
    try:
        await nodes.start()
        return await work(nodes)
    finally:
        await nodes.aclose()
        await manager.aclose()


def ping(args: argparse.Namespace) -> int:
    async def run(nodes: NodeSet) -> int:
        manager = nodes.manager
        names = list(nodes.topology.nodes)

        async def one(name: str) -> tuple[bool, float]:
            started = time.perf_counter()
            up = await manager.check(name)
            return up, time.perf_counter() - started

        results = await asyncio.gather(*(one(name) for name in names))
        width = max(len(name) for name in names)
        for name, (up, seconds) in zip(names, results, strict=True):
            detail = f"{seconds * 1000:.1f} ms" if up else (manager.health()[name].last_error or "")
            print(f"{name:<{width}}  {'up' if up else 'DOWN':<4}  {detail}")
        down = sum(not up for up, _ in results)
        print(f"{len(names) - down} of {len(names)} nodes up")
        return 1 if down else 0

    logging.getLogger("visit_counter").setLevel(logging.ERROR)  # the table says it all
    return asyncio.run(_with_nodes(load_settings(), run))


def status(args: argparse.Namespace) -> int:
    async def run(nodes: NodeSet) -> int:
        if isinstance(nodes.manager, ClusterManager):
            return await _cluster_status(nodes.manager)
        topology = await nodes.refresh()
        print(f"topology version {topology.version}: {topology.state}")
        for label in topology.members:
            print(f"  {label}")
        if topology.state != "stable":
            print(f"move under way ({topology.state}) from: {', '.join(topology.previous or ())}")
            print("  finish it: run the `nodes add` or `nodes remove` that started it again")
        return 0

    return asyncio.run(_with_nodes(load_settings(), run))


def plan(args: argparse.Namespace) -> int:
    async def run(nodes: NodeSet) -> int:
        mover = Mover(nodes, timeout=args.timeout)
        if args.action == "add":
            await mover.check_new_node(args.url)
            members, addresses = await mover.target_for_add(args.url)
        else:
            members, addresses = await mover.target_for_remove(args.url), {}
        summary = await mover.plan(members, addresses)
        _print_flows(summary, sys.stdout, "would move")
        return 0

    return _refusals(lambda: asyncio.run(_with_nodes(load_settings(), run)))


def add(args: argparse.Namespace) -> int:
    async def run(nodes: NodeSet) -> int:
        mover = Mover(
            nodes, timeout=args.timeout, progress=_bar(sys.stderr), max_rate=args.max_rate
        )
        topology = await mover.current()
        if topology.state == "stable":
            await mover.check_new_node(args.url)
        members, addresses = await mover.target_for_add(args.url)
        summary = await mover.run(members, addresses)
        _print_flows(summary, sys.stdout, "moved")
        return 0

    return _refusals(lambda: asyncio.run(_with_nodes(load_settings(), run)))


def remove(args: argparse.Namespace) -> int:
    async def run(nodes: NodeSet) -> int:
        mover = Mover(
            nodes, timeout=args.timeout, progress=_bar(sys.stderr), max_rate=args.max_rate
        )
        members = await mover.target_for_remove(args.url)
        summary = await mover.run(members, {})
        _print_flows(summary, sys.stdout, "moved")
        print(f"{args.url} holds no counts any more: it can be shut down")
        return 0

    return _refusals(lambda: asyncio.run(_with_nodes(load_settings(), run)))


async def _cluster_status(manager: ClusterManager) -> int:
    await manager.check_all()
    print(f"redis cluster: cluster_state {manager.state}, batches wait for "
          f"{manager.min_replicas_ack} replica(s)")  # fmt: skip
    for member in manager.members:
        role = member.role if member.primary is None else f"replica of {member.primary}"
        flags = "" if member.connected and not member.failing else "  (failing)"
        print(f"  {member.address:<21}  {role:<30}  {member.slots:>5} slots{flags}")
    return 0 if manager.state == "ok" else 1


def _refusals(run: Callable[[], int]) -> int:
    if load_settings().redis_mode == "cluster":
        print(
            "visit-counter: REDIS_MODE=cluster: the cluster places its slots itself; add or "
            "remove its nodes with `redis-cli --cluster add-node|del-node|reshard`",
            file=sys.stderr,
        )
        return 2
    try:
        return run()
    except MoveError as exc:
        print(f"visit-counter: {exc}", file=sys.stderr)
        return 2
    except MovePaused as exc:
        print(f"visit-counter: {exc}", file=sys.stderr)
        return 3


def _bar(stream: TextIO) -> Callable[[int, int, bool], None]:
    started = time.perf_counter()

    def draw(done: int, total: int, final: bool) -> None:
        draw_bar(stream, done, total, time.perf_counter() - started, "keys", final=final)

    return draw


def _print_flows(summary: MoveSummary, out: TextIO, verb: str) -> None:
    for (source, target), (pages, visits) in sorted(summary.flows.items()):
        print(f"{source} -> {target}: {pages} pages, {visits} visits", file=out)
    if summary.analytics_keys:
        print(f"handed over {summary.analytics_keys} analytics keys of the removed node", file=out)
    print(
        f"{verb} {summary.pages} pages, {summary.visits} visits in {summary.seconds:.1f} s; "
        f"topology version {summary.version}",
        file=out,
    )


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "nodes",
        help="the node set: ping, status, and adding or removing a node online",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=ping)
    sub = parser.add_subparsers(dest="nodes_command")
    sub.add_parser("ping", help="PING every node; exit 1 if any is down").set_defaults(handler=ping)
    sub.add_parser("status", help="the topology version and any move under way").set_defaults(
        handler=status
    )
    plan_parser = sub.add_parser("plan", help="what `add` or `remove` would move")
    plan_parser.add_argument("action", choices=("add", "remove"))
    plan_parser.add_argument("url", metavar="URL")
    plan_parser.set_defaults(handler=plan)
    for name, handler, text in (
        ("add", add, "add a node and move its share of the pages to it"),
        ("remove", remove, "move every page off a node, then drop it from the topology"),
    ):
        move_parser = sub.add_parser(name, help=text)
        move_parser.add_argument("url", metavar="URL")
        move_parser.add_argument(
            "--max-rate",
            type=float,
            default=0.0,
            metavar="PAGES",
            help="move at most this many pages per second (default: 0, as fast as the nodes "
            "go); lower it when the service's latency matters more than the move's duration",
        )
        move_parser.set_defaults(handler=handler)
    for sub_parser in (plan_parser, *(sub.choices[name] for name in ("add", "remove"))):
        sub_parser.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            metavar="S",
            help="how long to wait for a node that does not answer (default: %(default)s s)",
        )
