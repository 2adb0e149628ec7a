"""Settings: the seed's keys and defaults, REDIS_NODES parsing, and one-line start-up errors.

Every test runs in an empty temporary directory with no setting in the
environment, so neither a developer's `.env` nor their exports can leak in.
"""

from __future__ import annotations

import difflib
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from visit_counter import main as service
from visit_counter.core.config import (
    EMBEDDED_NODES,
    NEAR_MISS_CUTOFF,
    Settings,
    SettingsError,
    closest_setting,
    load_settings,
    near_miss_warnings,
    redact_url,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIELD_KEYS = sorted(name.upper() for name in Settings.model_fields)

# The seed's `.env` block, verbatim: the file users were told to write must keep working.
SEED_ENV = """\
# Redis Configuration
REDIS_NODES=redis://redis1:6379,redis://redis2:6379,redis://redis3:6379
REDIS_PASSWORD=
REDIS_DB=0
REDIS_TIMEOUT=5
REDIS_RETRY_ATTEMPTS=3

# Consistent Hashing Configuration
VIRTUAL_NODES=100

# Cache Configuration
CACHE_TTL_SECONDS=5
CACHE_CAPACITY=1000

# Batch Processing Configuration
BATCH_INTERVAL_SECONDS=5.0
BATCH_SIZE_LIMIT=1000

# Application Configuration
DEBUG=true
API_PREFIX=/api/v1
PROJECT_NAME=Visit Counter Service

# Monitoring Configuration
ENABLE_METRICS=true
METRICS_INTERVAL_SECONDS=60
"""

# The seed's values for every key it names except REDIS_NODES (compose-specific) and
# DEBUG (the seed turns it on as an example; the service defaults to off).
SEED_DEFAULTS: dict[str, object] = {
    "redis_password": "",
    "redis_db": 0,
    "redis_timeout": 5.0,
    "redis_retry_attempts": 3,
    "virtual_nodes": 100,
    "cache_ttl_seconds": 5.0,
    "cache_capacity": 1000,
    "batch_interval_seconds": 5.0,
    "batch_size_limit": 1000,
    "api_prefix": "/api/v1",
    "project_name": "Visit Counter Service",
    "enable_metrics": True,
    "metrics_interval_seconds": 60.0,
}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty working directory (no `.env`) and no setting in the environment."""
    for key in FIELD_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def settings_error(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> str:
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "expected"), SEED_DEFAULTS.items())
def test_default_is_the_seed_value(field: str, expected: object) -> None:
    value = getattr(load_settings(), field)
    assert value == expected
    assert type(value) is type(expected)


def test_debug_is_off_by_default() -> None:
    assert load_settings().debug is False


def test_node_pool_size_defaults_to_redis_pys_own() -> None:
    assert load_settings().redis_pool_size == 100


def test_http_limits_default_to_the_documented_values() -> None:
    settings = load_settings()
    assert settings.head_timeout_seconds == 10.0
    assert settings.max_connections == 1024


def test_unset_redis_nodes_means_the_embedded_nodes() -> None:
    settings = load_settings()
    assert settings.redis_nodes == (
        "redis://127.0.0.1:7070",
        "redis://127.0.0.1:7071",
        "redis://127.0.0.1:7072",
    )
    assert settings.uses_embedded_nodes


def test_the_seed_env_file_loads(isolated: Path) -> None:
    (isolated / ".env").write_text(SEED_ENV)
    settings = load_settings()
    assert settings.redis_nodes == (
        "redis://redis1:6379",
        "redis://redis2:6379",
        "redis://redis3:6379",
    )
    assert settings.debug is True
    for field, expected in SEED_DEFAULTS.items():
        assert getattr(settings, field) == expected, field


def test_environment_wins_over_env_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated / ".env").write_text("VIRTUAL_NODES=7\nCACHE_CAPACITY=9\n")
    monkeypatch.setenv("VIRTUAL_NODES", "11")
    settings = load_settings()
    assert settings.virtual_nodes == 11
    assert settings.cache_capacity == 9


# --- PROMETHEUS_DIR ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_unset_or_empty_prometheus_dir_leaves_the_place_to_the_service(
    monkeypatch: pytest.MonkeyPatch, raw: str | None
) -> None:
    if raw is not None:
        monkeypatch.setenv("PROMETHEUS_DIR", raw)
    assert load_settings().prometheus_dir is None


def test_prometheus_dir_is_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_DIR", "/run/visit-counter/metrics")
    assert load_settings().prometheus_dir == Path("/run/visit-counter/metrics")


# --- REDIS_NODES parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("redis://a:6379", ("redis://a:6379",)),
        ("redis://a:1,redis://b:2,rediss://c:3", ("redis://a:1", "redis://b:2", "rediss://c:3")),
        (" redis://a:1 ,  redis://b:2\t, ", ("redis://a:1", "redis://b:2")),
        ("redis://b:2,redis://a:1", ("redis://b:2", "redis://a:1")),  # order is kept
    ],
)
def test_redis_nodes_is_split_on_commas(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("REDIS_NODES", raw)
    settings = load_settings()
    assert settings.redis_nodes == expected
    assert not settings.uses_embedded_nodes


@pytest.mark.parametrize("raw", ["", "   ", " , ,"])
def test_empty_redis_nodes_means_the_embedded_nodes(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("REDIS_NODES", raw)
    settings = load_settings()
    assert settings.redis_nodes == EMBEDDED_NODES
    assert settings.uses_embedded_nodes


# --- one-line errors naming the key -----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("REDIS_NODES", "http://host:6379"),  # not redis://
        ("REDIS_NODES", "host:6379"),
        ("REDIS_NODES", "redis://:6379"),  # no host
        ("REDIS_NODES", "redis://a:6379,redis://a:6379"),  # the same node twice
        ("REDIS_NODES", "redis://a:port"),
        ("REDIS_NODES", "redis://a:65536"),
        ("REDIS_NODES", "redis://a:-1"),
        ("VIRTUAL_NODES", "abc"),
        ("VIRTUAL_NODES", "0"),
        ("VIRTUAL_NODES", "-100"),
        ("REDIS_DB", "-1"),
        ("REDIS_DB", "zero"),
        ("REDIS_TIMEOUT", "-5"),
        ("REDIS_TIMEOUT", "five"),
        ("REDIS_RETRY_ATTEMPTS", "-1"),
        ("HEALTH_CHECK_INTERVAL_SECONDS", "-1"),
        ("CACHE_TTL_SECONDS", "-5"),
        ("CACHE_CAPACITY", "-1"),
        ("CACHE_CAPACITY", "1k"),
        ("BATCH_INTERVAL_SECONDS", "-5.0"),
        ("BATCH_INTERVAL_SECONDS", "soon"),
        ("BATCH_SIZE_LIMIT", "-1000"),
        ("MAX_PENDING_PAGES_PER_NODE", "-1"),
        ("SHUTDOWN_FLUSH_TIMEOUT_SECONDS", "-1"),
        ("METRICS_INTERVAL_SECONDS", "-60"),
        ("METRICS_INTERVAL_SECONDS", "hourly"),
        ("DEBUG", "maybe"),
        ("ENABLE_METRICS", "sometimes"),
        ("API_PREFIX", "api/v1"),
        ("API_PREFIX", "/api/v1/"),
        ("HEAD_TIMEOUT_SECONDS", "0"),
        ("HEAD_TIMEOUT_SECONDS", "-1"),
        ("HEAD_TIMEOUT_SECONDS", "301"),
        ("HEAD_TIMEOUT_SECONDS", "soon"),
        ("MAX_CONNECTIONS", "0"),
        ("MAX_CONNECTIONS", "many"),
        ("REDIS_POOL_SIZE", "0"),
        ("REDIS_POOL_SIZE", "10001"),
        ("REDIS_MODE", "sentinel"),
        ("CORS_ALLOW_ORIGINS", "blog.example"),  # no scheme
        ("CORS_ALLOW_ORIGINS", "https://blog.example/path"),
        ("PAGE_ID_TRAILING_SLASH", "drop"),
        ("REDIS_MIN_REPLICAS_ACK", "-1"),
        ("REDIS_MIN_REPLICAS_ACK", "17"),
    ],
)
def test_bad_value_is_one_line_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str
) -> None:
    message = settings_error(monkeypatch, key, value)
    assert "\n" not in message
    assert f"{key}:" in message
    others = [other for other in FIELD_KEYS if other != key and f"{other}:" in message]
    assert not others, f"blames {others} too: {message}"


def test_every_bad_key_is_reported_on_the_same_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_NODES", "abc")
    monkeypatch.setenv("CACHE_CAPACITY", "-1")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "\n" not in message
    assert "VIRTUAL_NODES:" in message
    assert "CACHE_CAPACITY:" in message


def test_pending_bound_below_batch_size_names_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_SIZE_LIMIT", "500")
    message = settings_error(monkeypatch, "MAX_PENDING_PAGES_PER_NODE", "499")
    assert "\n" not in message
    assert "MAX_PENDING_PAGES_PER_NODE" in message
    assert "BATCH_SIZE_LIMIT" in message


def test_cluster_mode_needs_listed_nodes_and_db_0(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "REDIS_MODE", "Cluster")
    assert "REDIS_MODE=cluster needs REDIS_NODES" in message
    assert "\n" not in message
    monkeypatch.setenv("REDIS_NODES", "redis://10.0.0.1:7000")
    message = settings_error(monkeypatch, "REDIS_DB", "3")
    assert "REDIS_MODE=cluster needs REDIS_DB=0" in message
    monkeypatch.setenv("REDIS_DB", "0")
    settings = load_settings()
    assert settings.redis_mode == "cluster"
    assert settings.redis_min_replicas_ack is None


def test_cluster_mode_flushes_early_at_10000_pages_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_MODE", "cluster")
    monkeypatch.setenv("REDIS_NODES", "redis://10.0.0.1:7000")
    assert load_settings().batch_size_limit == 10_000
    monkeypatch.setenv("BATCH_SIZE_LIMIT", "2000")
    assert load_settings().batch_size_limit == 2000
    monkeypatch.setenv("REDIS_MODE", "ring")
    monkeypatch.delenv("BATCH_SIZE_LIMIT")
    assert load_settings().batch_size_limit == 1000


def test_error_hides_the_validation_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIRTUAL_NODES", "abc")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- passwords never leak ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "nodes",
    [
        "redis://:secret@host:6379,redis://:secret@host:6379",  # duplicate
        "redis://:secret@host:port",  # bad port
        "redis://:secret@host:99999",  # port out of range
        "redis://:secret@:6379",  # no host
        "http://:secret@host:6379",  # wrong scheme
        "redis://user:secret@host:6379,redis://user:secret@host:6379",
    ],
)
def test_password_never_appears_in_the_error(monkeypatch: pytest.MonkeyPatch, nodes: str) -> None:
    message = settings_error(monkeypatch, "REDIS_NODES", nodes)
    assert "REDIS_NODES:" in message
    assert "secret" not in message


@pytest.mark.parametrize("nodes", ["redis://:se/cret@host:6379", "redis://:se#cret@host:6379"])
def test_unescaped_password_never_appears_in_the_error(
    monkeypatch: pytest.MonkeyPatch, nodes: str
) -> None:
    message = settings_error(monkeypatch, "REDIS_NODES", nodes)
    assert "cret" not in message


def test_port_zero_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "REDIS_NODES", "redis://host:0")
    assert "REDIS_NODES:" in message


@pytest.mark.parametrize(
    "nodes",
    [
        "redis://h:6379,redis://H:6379/",
        "redis://h,redis://h:6379",
        "redis://:a@h:6379,redis://:b@h:6379",
    ],
)
def test_the_same_server_spelled_twice_is_rejected(
    monkeypatch: pytest.MonkeyPatch, nodes: str
) -> None:
    message = settings_error(monkeypatch, "REDIS_NODES", nodes)
    assert "same server" in message


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:secret@host:6379", "redis://:***@host:6379"),
        ("redis://user:secret@host:6379/2", "redis://user:***@host:6379/2"),
        ("rediss://:p%40ss@host:6380", "rediss://:***@host:6380"),
        ("redis://host:6379", "redis://host:6379"),
        ("redis://user@host:6379", "redis://user@host:6379"),
        ("redis://:se/cret@host:6379", "redis://:***@host:6379"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


# --- keys that look like misspelt settings ---------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("key", "setting"),
    [
        ("CACHE_TTL", "CACHE_TTL_SECONDS"),  # the unit left out
        ("REDIS_TIMEOUT_SECONDS", "REDIS_TIMEOUT"),  # a unit added
        ("VIRTUAL_NODE", "VIRTUAL_NODES"),
        ("REDIS_PASWORD", "REDIS_PASSWORD"),
        ("BATCH_INTERVAL_SECOND", "BATCH_INTERVAL_SECONDS"),
        ("RATE_LIMIT", "RATE_LIMIT_PER_SECOND"),
    ],
)
def test_a_variable_close_to_a_setting_is_warned_at_load(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, key: str, setting: str
) -> None:
    monkeypatch.setattr(logging.getLogger("visit_counter"), "propagate", True)
    monkeypatch.setenv(key, "30")
    with caplog.at_level(logging.WARNING, logger="visit_counter"):
        load_settings()
    assert warnings_of(caplog) == [f"{key}: not a setting; did you mean {setting}?"]


def test_a_misspelt_env_file_key_is_warned_without_its_value(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(logging.getLogger("visit_counter"), "propagate", True)
    (isolated / ".env").write_text("admin_tokn=not-to-be-logged-ever\nVIRTUAL_NODES=7\n")
    with caplog.at_level(logging.WARNING, logger="visit_counter"):
        assert load_settings().virtual_nodes == 7
    assert warnings_of(caplog) == ["admin_tokn (in .env): not a setting; did you mean ADMIN_TOKEN?"]


def test_ordinary_variables_and_settings_are_not_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ordinary = {
        key: "x"
        for key in (
            "PATH",
            "HOME",
            "LANG",
            "HOSTNAME",
            "VIRTUAL_ENV",
            "PYTHONPATH",
            "WEB_CONCURRENCY",
            "PROMETHEUS_MULTIPROC_DIR",
            "REDIS_URL",
            "REDIS_HOST",
            "REDIS_PORT",
            "LOG_LEVEL",
            "DATA_PATH",
            "XDG_DATA_DIRS",
            "cache_ttl",  # lower case: not meant for us in the environment
        )
    }
    settings = {"CACHE_TTL_SECONDS": "3", "virtual_nodes": "7", "Redis_Db": "1"}
    assert near_miss_warnings({**ordinary, **settings}, settings) == []
    monkeypatch.setattr(logging.getLogger("visit_counter"), "propagate", True)
    for key in ordinary:
        monkeypatch.setenv(key, "x" if key != "PATH" else os.environ.get("PATH", ""))
    with caplog.at_level(logging.WARNING, logger="visit_counter"):
        load_settings()
    warned = " ".join(warnings_of(caplog))
    assert not any(f"{key}:" in warned for key in ordinary), warned


def test_a_setting_itself_has_no_closest_setting() -> None:
    assert closest_setting("cache_ttl_seconds") is None
    assert closest_setting("CACHE_TTL") == "CACHE_TTL_SECONDS"


@given(name=st.sampled_from(FIELD_KEYS), data=st.data())
def test_a_setting_with_one_letter_dropped_or_doubled_is_suggested(
    name: str, data: st.DataObject
) -> None:
    """A one-letter slip is at least 0.8 alike (difflib's ratio), so a setting is
    suggested, however the search skips names that cannot reach the cutoff."""
    at = data.draw(st.integers(0, len(name) - 1))
    dropped, doubled = name[:at] + name[at + 1 :], name[:at] + name[at] + name[at:]
    slip = data.draw(st.sampled_from([dropped, doubled]))
    assume(slip not in FIELD_KEYS)
    assert difflib.SequenceMatcher(None, slip, name).ratio() >= NEAR_MISS_CUTOFF
    assert closest_setting(slip) is not None


# --- the process entry point ------------------------------------------------------------------


def test_bad_setting_stops_the_app_import_with_one_line() -> None:
    env = {key: value for key, value in os.environ.items() if key.upper() not in FIELD_KEYS}
    env["VIRTUAL_NODES"] = "abc"
    result = subprocess.run(
        [sys.executable, "-c", "import app.main; app.main.app"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "VIRTUAL_NODES" in lines[0]


def test_the_app_warns_in_its_log_format_when_redis_nodes_is_unset(tmp_path: Path) -> None:
    """`uvicorn app.main:app` with no REDIS_NODES: one WARNING saying so, as a log line."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in FIELD_KEYS}
    env.update(DATA_DIR=str(tmp_path / "data"), CACHE_TTL="30", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", "import app.main; app.main.app"],
        cwd=tmp_path,  # no .env
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].endswith("CACHE_TTL: not a setting; did you mean CACHE_TTL_SECONDS?")
    assert " WARNING visit_counter.core.config " in warnings[1]  # the configured format
    assert warnings[1].endswith(
        "REDIS_NODES is unset: counting on the embedded default, throwaway local nodes on "
        f"127.0.0.1:7070-7072 with their data under {tmp_path / 'data' / 'nodes'}; "
        "set REDIS_NODES for production"
    )


def test_serve_workers_leave_the_start_notices_to_serve(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """serve logged them once; each worker builds the app without repeating them."""
    monkeypatch.setattr(service, "configure_logging", lambda *args, **kwargs: None)
    monkeypatch.setattr(logging.getLogger("visit_counter"), "propagate", True)
    monkeypatch.setenv("CACHE_TTL", "30")
    with caplog.at_level(logging.INFO, logger="visit_counter"):
        service.serve_worker_app()
        assert caplog.records == []
        service.app_from_environment()  # what `uvicorn app.main:app` builds
    assert len(warnings_of(caplog)) == 2
