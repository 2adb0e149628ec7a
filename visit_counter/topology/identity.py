"""How a node is named on the ring, and how the service tells two servers apart.

A node's *label* is the string its virtual points are hashed from
(`consistent_hash.py`). For a fresh deployment it is the node's canonical
address, `redis://<host>:<port>/<db>`: the host lowercased, the port and db
always written, no credentials. The label is stored with the topology on the
nodes themselves (`document.py`), so once a deployment exists, how a URL is
spelled in REDIS_NODES never moves a page: the stored labels place every page.

Nodes first written by release 1 (before the stored topology existed) keep
the labels that release used, their URLs as listed with any password redacted,
so an upgrade moves nothing (`nodeset.py`).

Two entries can still reach one server (`localhost` and `127.0.0.1`, a DNS
alias). `ServerFacts` is what the server says of itself (`INFO server`'s
run_id, plus the db the entry selects, and whether it is a Redis Cluster
node); `refusal` turns a clash into the one line start-up exits with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


def canonical_address(url: str, default_db: int = 0) -> str:
    """`redis://host:port/db` for a node URL: lowercase host, no credentials, port and db."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port or 6379
    db_text = parts.path.strip("/")
    db = int(db_text) if db_text else default_db
    return f"{parts.scheme.lower()}://{host}:{port}/{db}"


def connect_url(address: str, credentials_from: str | None) -> str:
    """The URL to connect to `address` with, taking user and password from a listed entry."""
    if credentials_from is None:
        return address
    source = urlsplit(credentials_from)
    if not source.username and not source.password:
        return address
    target = urlsplit(address)
    userinfo = source.netloc.rsplit("@", 1)[0]
    return urlunsplit(target._replace(netloc=f"{userinfo}@{target.netloc}"))


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What one REDIS_NODES entry's server says of itself."""

    run_id: str
    db: int
    cluster_enabled: bool


def cluster_refusal(entries: Sequence[str], facts: Mapping[int, ServerFacts]) -> str | None:
    """In cluster mode: the line to refuse start-up with when an entry is a standalone server."""
    for position, fact in sorted(facts.items()):
        if not fact.cluster_enabled:
            return (
                f"REDIS_NODES entry {position + 1} ({entries[position]}) is a standalone server "
                "(cluster_enabled:0): REDIS_MODE=cluster needs nodes of a Redis Cluster; list "
                "them, or set REDIS_MODE=ring"
            )
    return None


def refusal(entries: Sequence[str], facts: Mapping[int, ServerFacts]) -> str | None:
    """The line to refuse start-up with, or None when the entries are usable.

    `entries` are the listed URLs (already redacted), `facts` what each
    reachable entry's server said, by position in `entries`.
    """
    for position, fact in sorted(facts.items()):
        if fact.cluster_enabled:
            return (
                f"REDIS_NODES entry {position + 1} ({entries[position]}) is a Redis Cluster "
                "node (cluster_enabled:1): ring mode needs standalone nodes; set "
                "REDIS_MODE=cluster to use the cluster (see the README, 'Redis Cluster')"
            )
    seen: dict[tuple[str, int], int] = {}
    for position, fact in sorted(facts.items()):
        key = (fact.run_id, fact.db)
        if key in seen:
            first = seen[key]
            return (
                f"REDIS_NODES entries {first + 1} ({entries[first]}) and {position + 1} "
                f"({entries[position]}) are the same server and db (run_id {fact.run_id[:12]}, "
                f"db {fact.db}): list it once"
            )
        seen[key] = position
    return None
