"""Service settings: every key of the seed's `.env`, typed and validated once at start-up.

`Settings` is read from the environment and from `.env` in the working directory.
Tests and the CLI construct it directly, so nothing here reads global state
except `load_settings()` and `unknown_key_warnings()`.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from visit_counter.analytics.periods import DEFAULT_RETENTION_DAYS

logger = logging.getLogger(__name__)

EMBEDDED_PORTS = (7070, 7071, 7072)
EMBEDDED_NODES = tuple(f"redis://127.0.0.1:{port}" for port in EMBEDDED_PORTS)
MIN_ADMIN_TOKEN_LENGTH = 16
MIN_VISITOR_SALT_SECRET_LENGTH = 16
KNOWN_SINKS = ("postgres", "log")
SQL_COLUMN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"  # a plain identifier: no quoting surprises
SQL_NAME = r"^([A-Za-z_][A-Za-z0-9_]{0,62}\.)?[A-Za-z_][A-Za-z0-9_]{0,62}$"
DEFAULT_HEAD_TIMEOUT_SECONDS = 10.0


CLUSTER_BATCH_SIZE_LIMIT = 10_000
# A key that is not a setting is reported when it is this close (difflib's ratio) to one.
NEAR_MISS_CUTOFF = 0.8
# Compared without these too, so CACHE_TTL and REDIS_TIMEOUT_SECONDS find their setting.
_UNIT_SUFFIXES = ("_PER_SECOND", "_SECONDS", "_SECOND", "_SECS", "_SEC", "_MS", "_S")
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


class SettingsError(Exception):
    """A setting has a value the service cannot start with."""


class Settings(BaseSettings):
    """Typed configuration. Field names are the `.env` keys (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Redis
    redis_nodes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=EMBEDDED_NODES,
        description="Comma-separated redis:// URLs; unset means the embedded nodes on 7070-7072.",
    )
    redis_mode: Literal["ring", "cluster"] = Field(
        default="ring",
        description="ring: pages placed on REDIS_NODES by this service's consistent-hash ring; "
        "cluster: REDIS_NODES are startup nodes of one Redis Cluster, which places the pages.",
    )
    redis_min_replicas_ack: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description="Cluster mode: replicas that must have a batch (WAIT) before it is forgotten; "
        "unset: 1 when the cluster has replicas, else 0.",
    )
    redis_password: str = Field(default="", description="Password for every node (empty: none).")
    redis_db: int = Field(default=0, ge=0, le=15)
    redis_timeout: float = Field(
        default=5.0, gt=0, le=60, description="Time a node has to answer one command, s."
    )
    redis_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Time to open a connection to a node, handshake included, s.",
    )
    redis_retry_attempts: int = Field(default=3, ge=0, le=10)
    redis_pool_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Connections per node, per worker; a call waits up to REDIS_TIMEOUT for a "
        "free one. Reserved out of the open-file limit (see MAX_CONNECTIONS).",
    )
    health_check_interval_seconds: float = Field(default=5.0, gt=0, le=3600)

    # Page ids (visit_counter/core/page_id.py)
    page_id_trailing_slash: Literal["strip", "keep"] = Field(
        default="strip",
        description="strip: `/blog/` and `/blog` are one page; keep: two pages.",
    )

    # Consistent hashing
    virtual_nodes: int = Field(default=100, ge=1, le=10_000)

    # Cache
    cache_ttl_seconds: float = Field(default=5.0, ge=0, le=86_400)
    cache_capacity: int = Field(default=1000, ge=0, le=10_000_000)

    # Batching
    batch_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    batch_size_limit: int = Field(default=1000, ge=1, le=1_000_000)
    max_pending_pages_per_node: int = Field(
        default=100_000,
        ge=1,
        description="Distinct pages (and idempotency keys) held in memory for one node, "
        "unreachable or behind its flushes, before the rest goes to the journal.",
    )
    shutdown_flush_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    journal_visits: bool = Field(
        default=False,
        description="Append every visit to a per-process log before acknowledging it, "
        "so even kill -9 loses nothing (one write() per visit, no fsync).",
    )
    idempotency_window_seconds: int = Field(
        default=86_400,
        ge=1,
        le=30 * 86_400,
        description="How long a node remembers an Idempotency-Key: a request repeated "
        "with the same key within this time is acknowledged again and counted once.",
    )

    # Sinks: stored counts mirrored elsewhere, each batch once (visit_counter/sinks)
    sinks: str = Field(
        default="",
        description="Comma-separated sinks fed at each flush: postgres (needs POSTGRES_DSN), "
        "log. Empty: none.",
    )
    postgres_dsn: SecretStr = Field(
        default=SecretStr(""), description="libpq connection string of the postgres sink."
    )
    postgres_table: str = Field(
        default="page_visits", pattern=SQL_NAME, description="[schema.]table of the postgres sink"
    )
    postgres_key_column: str = Field(default="page_id", pattern=SQL_COLUMN)
    postgres_hits_column: str = Field(default="hits", pattern=SQL_COLUMN)
    postgres_upsert: bool = Field(
        default=True, description="Insert a row for a page that has none (needs a unique key)."
    )
    sink_max_pending_batches: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="Deliveries a sink's queue holds in memory; the rest wait in its file.",
    )

    # Application
    debug: bool = False
    api_prefix: str = "/api/v1"
    project_name: str = "Visit Counter Service"
    data_dir: Path = Path("./data")

    # Access control and abuse limits
    admin_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token required by DELETE, the JSON metrics and the /status detail "
        "(empty: no token needed).",
    )
    rate_limit_per_second: float = Field(
        default=0.0, ge=0, le=1_000_000, description="Visits per second per client IP (0: off)."
    )
    rate_limit_burst: int = Field(
        default=10, ge=1, le=1_000_000, description="Visits a client may send at once."
    )

    # Analytics (visit_counter/analytics/)
    stats_retention_days: int = Field(
        default=DEFAULT_RETENTION_DAYS,
        ge=1,
        le=3660,
        description="Days each page's daily visits and unique visitors are kept (by key "
        "expiry); the hourly ones are kept 48 hours, the count itself for good.",
    )

    # Who is counted (visit_counter/core/bots.py, visit_counter/core/visitor_id.py)
    count_bots: bool = Field(
        default=False,
        description="Count requests from known crawlers too; false: a User-Agent on the "
        "crawler-user-agents list is answered 200 and not counted.",
    )
    visitor_salt_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Secret the daily visitor-id salt is derived from, the same in every "
        "worker and instance (empty: a random one per process, so ids differ between workers "
        "and restarts).",
    )

    # HTTP server limits (core/http_limits.py, core/connection_limits.py)
    head_timeout_seconds: float = Field(
        default=DEFAULT_HEAD_TIMEOUT_SECONDS,
        gt=0,
        le=300,
        description="Seconds a request head may take from its first byte (from the connection's "
        "opening for its first request); a late head gets 408 and the connection is closed.",
    )
    max_connections: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Client connections one worker holds at once. Lowered at start, with a "
        "warning, to what the open-file limit leaves after the node connections and files.",
    )

    # Browsers on other origins (visit_counter/core/cors.py)
    cors_allow_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Comma-separated origins (https://example.com) whose pages may read the "
        "answers, or *; empty: CORS off.",
    )

    # Monitoring
    enable_metrics: bool = True
    prometheus_dir: Path | None = Field(
        default=None,
        description="Directory of the workers' Prometheus files; unset: a directory on /dev/shm "
        "named after DATA_DIR, or DATA_DIR/prometheus without /dev/shm.",
    )
    metrics_interval_seconds: float = Field(default=60.0, gt=0, le=86_400)
    log_format: Literal["plain", "json"] = Field(
        default="plain", description="plain text lines, or one JSON object per line."
    )

    # Dashboard (visit_counter/api/dashboard.py)
    dashboard_popular_threshold: int = Field(
        default=1000,
        ge=1,
        description="Visits at or above which /dashboard marks a page 'Popular' (seed 004's 1000).",
    )

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _check_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and _ORIGIN.fullmatch(origin) is None:
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port], no path, or *"
                )
        return origins

    @field_validator("redis_nodes", mode="before")
    @classmethod
    def _split_nodes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
            return tuple(value) if value else EMBEDDED_NODES
        return value

    @field_validator("redis_nodes")
    @classmethod
    def _check_node_urls(cls, nodes: tuple[str, ...]) -> tuple[str, ...]:
        # Errors name the node by position, never by URL: a URL may hold a password.
        seen: dict[tuple[str, int, str], int] = {}
        for position, url in enumerate(nodes, start=1):
            parts = urlsplit(url)
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ValueError(f"node {position} is not a redis://host:port URL")
            try:
                port = 6379 if parts.port is None else parts.port
            except ValueError:
                raise ValueError(f"node {position} has an invalid port") from None
            if not 0 < port < 65536:
                raise ValueError(f"node {position} has an invalid port")
            identity = (parts.hostname.lower(), port, parts.path.strip("/") or "0")
            if identity in seen:
                raise ValueError(f"nodes {seen[identity]} and {position} are the same server")
            seen[identity] = position
        return nodes

    @field_validator("admin_token")
    @classmethod
    def _check_admin_token(cls, token: SecretStr) -> SecretStr:
        # Messages never include the value: it is a secret.
        value = token.get_secret_value()
        if value and len(value) < MIN_ADMIN_TOKEN_LENGTH:
            raise ValueError(f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters (or empty)")
        if any(not "!" <= char <= "~" for char in value):
            raise ValueError("may only hold printable ASCII characters without spaces")
        return token

    @field_validator("visitor_salt_secret")
    @classmethod
    def _check_visitor_salt_secret(cls, secret: SecretStr) -> SecretStr:
        # Messages never include the value: it is a secret.
        value = secret.get_secret_value()
        if value and len(value) < MIN_VISITOR_SALT_SECRET_LENGTH:
            raise ValueError(
                f"must be at least {MIN_VISITOR_SALT_SECRET_LENGTH} characters (or empty)"
            )
        return secret

    @field_validator("api_prefix")
    @classmethod
    def _check_prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ValueError("must start with '/' and not end with '/'")
        return prefix

    @field_validator("prometheus_dir", mode="before")
    @classmethod
    def _empty_prometheus_dir_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_mode", mode="before")
    @classmethod
    def _lower_redis_mode(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _cluster_batches(cls, data: object) -> object:
        """In cluster mode a flush costs a script call per bucket it touches (1,024 buckets,
        cluster/buckets.py), so by default it waits for 10,000 distinct pages, not 1,000,
        before flushing early: about one Redis command per visit, as on the ring."""
        if isinstance(data, dict):
            mode = str(data.get("redis_mode", "")).strip().lower()
            if mode == "cluster" and data.get("batch_size_limit") is None:
                return {**data, "batch_size_limit": CLUSTER_BATCH_SIZE_LIMIT}
        return data

    @model_validator(mode="after")
    def _check_cluster_mode(self) -> Settings:
        if self.redis_mode != "cluster":
            return self
        if self.uses_embedded_nodes:
            raise ValueError(
                "REDIS_MODE=cluster needs REDIS_NODES: one or more startup nodes of the cluster"
            )
        if self.redis_db != 0:
            raise ValueError("REDIS_MODE=cluster needs REDIS_DB=0: a cluster has database 0 only")
        return self

    @field_validator("sinks")
    @classmethod
    def _check_sinks(cls, value: str) -> str:
        names = [name.strip().lower() for name in value.split(",") if name.strip()]
        unknown = [name for name in names if name not in KNOWN_SINKS]
        if unknown:
            raise ValueError(f"unknown sink {unknown[0]!r}: choose from {', '.join(KNOWN_SINKS)}")
        if len(set(names)) != len(names):
            raise ValueError("a sink is listed twice")
        return ",".join(names)

    @model_validator(mode="after")
    def _check_postgres_sink(self) -> Settings:
        if "postgres" in self.sink_names and not self.postgres_dsn.get_secret_value():
            raise ValueError("SINKS=postgres needs POSTGRES_DSN (a libpq connection string)")
        return self

    @property
    def sink_names(self) -> tuple[str, ...]:
        return tuple(name for name in self.sinks.split(",") if name)

    @model_validator(mode="after")
    def _check_batching(self) -> Settings:
        if self.max_pending_pages_per_node < self.batch_size_limit:
            raise ValueError(
                "MAX_PENDING_PAGES_PER_NODE must be at least BATCH_SIZE_LIMIT "
                f"({self.max_pending_pages_per_node} < {self.batch_size_limit})"
            )
        return self

    @property
    def uses_embedded_nodes(self) -> bool:
        return self.redis_nodes == EMBEDDED_NODES

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"


def redact_url(url: str) -> str:
    """Return `url` with any password replaced, safe for logs and responses.

    Works on the raw text (not `urlsplit`), so a password holding an unescaped
    '/', '?' or '#' is masked too.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0] if ":" in credentials else credentials
    if ":" not in credentials:
        return url  # a user name alone is not secret
    return f"{scheme}://{user}:***@{host}"


def settings_of(**values: Any) -> Settings:
    """Settings from keyword values (setting names in lower case), then the environment and
    `.env`; SettingsError with one readable line per bad key (a key that names no
    setting included)."""
    unknown = [name for name in values if name not in Settings.model_fields]
    if unknown:
        close = closest_setting(unknown[0])
        hint = f"; did you mean {close.lower()}?" if close else ""
        raise SettingsError(f"{unknown[0]} is not a setting{hint}")
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]).upper() or "settings"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{key}: {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def load_settings(*, warn_unknown_keys: bool = True) -> Settings:
    """Read settings from the environment and `.env`; one readable line per bad key.

    Then log a WARNING for each key that looks like a misspelt setting (see
    `unknown_key_warnings`), unless `warn_unknown_keys` is false: the service's entry
    points log them with `log_start_notices` once their log format is set up.
    """
    settings = settings_of()
    if warn_unknown_keys:
        for line in unknown_key_warnings():
            logger.warning("%s", line)
    return settings


def _stem(name: str) -> str:
    for suffix in _UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name.removesuffix(suffix)
    return name


def closest_setting(key: str) -> str | None:
    """The setting (upper case) `key` was probably meant to name, or None: when `key` is a
    setting itself, or no setting is at least NEAR_MISS_CUTOFF alike, as written or with
    its unit suffix dropped (CACHE_TTL -> CACHE_TTL_SECONDS, REDIS_NODE -> REDIS_NODES)."""
    wanted = key.upper()
    names = [name.upper() for name in Settings.model_fields]
    if wanted in names:
        return None
    score, name = max(
        (max(_likeness(wanted, name), _likeness(_stem(wanted), _stem(name))), name)
        for name in names
    )
    return name if score >= NEAR_MISS_CUTOFF else None


def _likeness(key: str, name: str) -> float:
    """difflib's ratio of the two, or 0 when its cheap upper bounds already fall short of
    NEAR_MISS_CUTOFF (the answer is the same: only a name at the cutoff or above is
    suggested). Every upper-case variable of the environment is checked at each start, and
    the full ratio of each against every setting took 0.1-0.3 s of a CLI command."""
    if 2 * min(len(key), len(name)) < NEAR_MISS_CUTOFF * (len(key) + len(name)):
        return 0.0  # difflib's real_quick_ratio, before the matcher is built
    matcher = difflib.SequenceMatcher(None, key, name)
    return 0.0 if matcher.quick_ratio() < NEAR_MISS_CUTOFF else matcher.ratio()


def near_miss_warnings(environ: Mapping[str, str], env_file_keys: Iterable[str]) -> list[str]:
    """One line per key that is not a setting but close to one (never a value: it may be
    a secret). Of the environment only upper-case names are checked, so the ordinary
    variables (PATH, HOME, http_proxy, ...) never warn; every `.env` key is checked."""
    lines = []
    checked = set()
    for key in environ:
        if key.isupper() and (suggestion := closest_setting(key)) is not None:
            lines.append(f"{key}: not a setting; did you mean {suggestion}?")
            checked.add(key.upper())
    for key in env_file_keys:
        if key.upper() not in checked and (suggestion := closest_setting(key)) is not None:
            lines.append(f"{key} (in .env): not a setting; did you mean {suggestion}?")
    return lines


def unknown_key_warnings() -> list[str]:
    """`near_miss_warnings` for this process's environment and the `.env` Settings reads."""
    env_file = Path(".env")
    keys = dotenv_values(env_file, encoding="utf-8") if env_file.is_file() else {}
    return near_miss_warnings(os.environ, keys)


def embedded_nodes_notice(settings: Settings) -> str:
    """The start-up line for REDIS_NODES unset (see `log_start_notices`)."""
    ports = f"{EMBEDDED_PORTS[0]}-{EMBEDDED_PORTS[-1]}"
    return (
        f"REDIS_NODES is unset: counting on the embedded default, throwaway local nodes on "
        f"127.0.0.1:{ports} with their data under {settings.data_dir / 'nodes'}; "
        "set REDIS_NODES for production"
    )


def log_start_notices(settings: Settings, *, embedded_intended: bool = False) -> None:
    """What a starting service says about its settings, once its logging is set up:
    a WARNING per misspelt-looking key, and one when REDIS_NODES is unset (INFO instead
    when `embedded_intended`: `serve --embedded-ok`, what `make run` runs)."""
    for line in unknown_key_warnings():
        logger.warning("%s", line)
    if settings.uses_embedded_nodes:
        level = logging.INFO if embedded_intended else logging.WARNING
        logger.log(level, "%s", embedded_nodes_notice(settings))
