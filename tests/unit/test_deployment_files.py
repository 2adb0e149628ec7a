"""The deployment files agree with the code: compose, Dockerfile, .env.example, requirements.

These files are never executed by the rest of the suite, so they drift silently:
a renamed setting, a Redis node without persistence, a key the service ignores.
Each test pins one promise the files make to whoever runs `docker compose up`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from tests.support.serve_stub import run_serve
from visit_counter.cli.commands import build_parser, serve
from visit_counter.core.config import Settings
from visit_counter.core.http_limits import PROTOCOL_PATH
from visit_counter.core.node_config import config_warnings

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVICES = ("redis1", "redis2", "redis3")
COMPOSE_REDIS_NODES = "redis://redis1:6379,redis://redis2:6379,redis://redis3:6379"
FIELD_KEYS = {name.upper() for name in Settings.model_fields}
# Keys the compose file fixes for its own topology instead of passing the shell's value through.
COMPOSE_FIXED_KEYS = {"REDIS_NODES": COMPOSE_REDIS_NODES, "DATA_DIR": "/data"}
# The `cluster` profile: six cluster nodes, the one-shot that joins them, the API on them.
CLUSTER_NODE_SERVICES = tuple(f"redis-cluster-{number}" for number in range(1, 7))
CLUSTER_PROFILE_SERVICES = {*CLUSTER_NODE_SERVICES, "cluster-init", "app-cluster"}
CLUSTER_NETWORK = "redis-cluster"
CLUSTER_FIXED_KEYS = {
    "REDIS_MODE": "cluster",
    "REDIS_NODES": ",".join(f"redis://{name}:6379" for name in CLUSTER_NODE_SERVICES),
    "REDIS_MIN_REPLICAS_ACK": "1",
    "DATA_DIR": "/data",
}
INTERPOLATION = re.compile(r"^\$\{(?P<key>[A-Z0-9_]+):-(?P<default>[^}]*)\}$")
COMMENTED_ASSIGNMENT = re.compile(r"^#\s*(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
ASSIGNMENT = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings() also reads the process environment; keep a developer's exports out."""
    for key in FIELD_KEYS:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


@pytest.fixture(scope="module")
def app_environment(services: dict[str, Any]) -> dict[str, str]:
    return environment_of(services["app"])


@pytest.fixture(scope="module")
def dockerfile_instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions_of((REPO_ROOT / "Dockerfile").read_text())


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment:` as a dict, whether written as a mapping or a list."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        return dict(item.split("=", 1) for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def volume_targets(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume source, for short (`src:dst[:mode]`) and long syntax."""
    targets: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            targets[volume["target"]] = volume.get("source", "")
        else:
            source, target = str(volume).split(":")[:2]
            targets[target] = source
    return targets


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def dockerfile_instructions_of(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with `\\` continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "Dockerfile ends inside a line continuation"
    instructions = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def arguments_of(instructions: list[tuple[str, str]], wanted: str) -> list[str]:
    return [arguments for keyword, arguments in instructions if keyword == wanted]


def parse_env_example() -> tuple[dict[str, str], dict[str, str]]:
    """(set keys -> value as Settings' dotenv reader sees it, commented-out keys -> value)."""
    path = REPO_ROOT / ".env.example"
    commented: dict[str, str] = {}
    assigned: list[str] = []
    for line in path.read_text().splitlines():
        if match := COMMENTED_ASSIGNMENT.match(line.strip()):
            commented[match["key"]] = match["value"]
        elif match := ASSIGNMENT.match(line.strip()):
            assigned.append(match["key"])
    values = {key: "" if value is None else value for key, value in dotenv_values(path).items()}
    assert sorted(values) == sorted(assigned), "dotenv and a plain reading disagree on the keys"
    return values, commented


def default_of(field: str) -> object:
    return Settings.model_fields[field].default


# --- docker-compose.yml -----------------------------------------------------------------------


def test_compose_defines_three_redis_nodes_and_the_app(services: dict[str, Any]) -> None:
    assert set(REDIS_SERVICES) | {"app"} <= set(services)


def test_compose_has_no_obsolete_version_key(compose: dict[str, Any]) -> None:
    assert "version" not in compose


@pytest.mark.parametrize("name", REDIS_SERVICES + CLUSTER_NODE_SERVICES)
def test_redis_node_persists_with_aof(services: dict[str, Any], name: str) -> None:
    command = command_text(services[name])
    assert re.search(r"--appendonly\s+yes\b", command), command
    assert re.search(r"--appendfsync\s+everysec\b", command), command


@pytest.mark.parametrize("name", REDIS_SERVICES + CLUSTER_NODE_SERVICES)
def test_redis_node_passes_the_services_configuration_check(
    services: dict[str, Any], name: str
) -> None:
    """What the service would read from the node: redis-server defaults unless the command
    sets them (maxmemory-policy noeviction, RDB snapshots on unless `--save ""`)."""
    arguments = shlex.split(command_text(services[name]))
    options = dict(zip(arguments[1::2], arguments[2::2], strict=False))
    warnings = config_warnings(
        options.get("--maxmemory-policy", "noeviction"),
        options.get("--appendonly", "no") == "yes",
        options.get("--save", "3600 1 300 100 60 10000"),
    )
    assert warnings == [], warnings


@pytest.mark.parametrize("name", REDIS_SERVICES + CLUSTER_NODE_SERVICES)
def test_redis_node_has_a_ping_healthcheck(services: dict[str, Any], name: str) -> None:
    assert "redis-cli ping" in healthcheck_text(services[name])


@pytest.mark.parametrize("name", REDIS_SERVICES + CLUSTER_NODE_SERVICES)
def test_redis_node_keeps_data_in_a_named_volume(
    compose: dict[str, Any], services: dict[str, Any], name: str
) -> None:
    source = volume_targets(services[name]).get("/data")
    assert source, f"{name} has no volume at /data"
    assert source in (compose.get("volumes") or {}), f"{source!r} is not a named volume"


def test_redis_nodes_do_not_share_a_volume(services: dict[str, Any]) -> None:
    names = REDIS_SERVICES + CLUSTER_NODE_SERVICES
    sources = [volume_targets(services[name]).get("/data") for name in names]
    assert len(set(sources)) == len(names), sources


def test_app_publishes_port_8000(services: dict[str, Any]) -> None:
    published = [str(port) for port in services["app"].get("ports", [])]
    assert "8000:8000" in published


def test_app_starts_after_every_redis_node_is_healthy(services: dict[str, Any]) -> None:
    depends_on = services["app"].get("depends_on")
    assert isinstance(depends_on, dict), "depends_on must be a mapping to carry conditions"
    for name in REDIS_SERVICES:
        assert depends_on.get(name, {}).get("condition") == "service_healthy", name


def test_app_redis_nodes_are_the_three_services_in_order(app_environment: dict[str, str]) -> None:
    nodes = app_environment["REDIS_NODES"].split(",")
    assert nodes == [f"redis://{name}:6379" for name in REDIS_SERVICES]


def test_app_environment_sets_only_settings_fields(app_environment: dict[str, str]) -> None:
    unknown = set(app_environment) - FIELD_KEYS
    assert not unknown, f"not Settings fields (the service would ignore them): {sorted(unknown)}"


def test_app_environment_fallbacks_are_the_settings_defaults(
    app_environment: dict[str, str],
) -> None:
    for key, value in app_environment.items():
        if key in COMPOSE_FIXED_KEYS:
            assert value == COMPOSE_FIXED_KEYS[key], key
            continue
        match = INTERPOLATION.match(value)
        assert match, f"{key}={value!r} should be ${{{key}:-default}}"
        assert match["key"] == key, f"{key} interpolates another variable, {match['key']}"
        field = key.lower()
        parsed = getattr(Settings(_env_file=None, **{field: match["default"]}), field)
        assert parsed == default_of(field), f"{key}: {parsed!r} != {default_of(field)!r}"


def test_app_fixed_values_are_valid_settings(app_environment: dict[str, str]) -> None:
    fixed = {key.lower(): app_environment[key] for key in COMPOSE_FIXED_KEYS}
    settings = Settings(_env_file=None, **fixed)
    assert not settings.uses_embedded_nodes
    assert settings.data_dir == Path("/data")


def test_app_data_dir_is_a_named_volume(compose: dict[str, Any], services: dict[str, Any]) -> None:
    source = volume_targets(services["app"]).get("/data")
    assert source in (compose.get("volumes") or {}), "the journal must outlive the container"


def test_app_prometheus_files_are_off_the_data_volume(app_environment: dict[str, str]) -> None:
    """Unset, PROMETHEUS_DIR means /dev/shm: a full /data cannot stop metrics or the process."""
    match = INTERPOLATION.match(app_environment.get("PROMETHEUS_DIR", ""))
    assert match, "PROMETHEUS_DIR should be passed through as ${PROMETHEUS_DIR:-}"
    assert match["default"] == ""


def test_app_healthcheck_gets_readiness(services: dict[str, Any]) -> None:
    check = healthcheck_text(services["app"])
    assert "http://127.0.0.1:8000/health/ready" in check
    assert "curl" not in check, "python:3.11-slim has no curl"


# --- docker-compose.yml: the `cluster` profile (issue 11) ------------------------------------


@pytest.fixture(scope="module")
def cluster_environment(services: dict[str, Any]) -> dict[str, str]:
    return environment_of(services["app-cluster"])


def cluster_address(service: dict[str, Any]) -> str:
    """The fixed IPv4 address a cluster node has on the cluster network."""
    address = service.get("networks", {}).get(CLUSTER_NETWORK, {}).get("ipv4_address")
    assert address, "a cluster node needs a fixed address (see the compose file's comment)"
    return str(address)


def init_script(services: dict[str, Any]) -> str:
    """cluster-init's shell script, as the container's shell gets it (compose's `$$` is `$`)."""
    command = services["cluster-init"]["command"]
    assert command[:2] == ["sh", "-c"], command
    return str(command[2]).replace("$$", "$")


def created_with(script: str) -> list[str]:
    """The arguments of the script's `redis-cli --cluster create` line."""
    (line,) = [line for line in script.splitlines() if "--cluster create" in line]
    return shlex.split(line)


def test_cluster_profile_is_six_nodes_an_init_and_the_app(services: dict[str, Any]) -> None:
    in_profile = {
        name for name, service in services.items() if "cluster" in service.get("profiles", [])
    }
    assert in_profile == CLUSTER_PROFILE_SERVICES


@pytest.mark.parametrize("name", sorted(CLUSTER_PROFILE_SERVICES))
def test_cluster_services_start_only_with_the_cluster_profile(
    services: dict[str, Any], name: str
) -> None:
    assert services[name].get("profiles") == ["cluster"]


def test_default_services_neither_are_in_a_profile_nor_need_one(services: dict[str, Any]) -> None:
    """`docker compose up` (no profile) runs the ring exactly as before the cluster profile."""
    for name in (*REDIS_SERVICES, "app"):
        assert "profiles" not in services[name], name
        assert set(services[name].get("depends_on") or {}) <= set(REDIS_SERVICES), name


@pytest.mark.parametrize("name", CLUSTER_NODE_SERVICES)
def test_cluster_node_runs_in_cluster_mode(services: dict[str, Any], name: str) -> None:
    command = command_text(services[name])
    assert re.search(r"--cluster-enabled\s+yes\b", command), command
    assert services[name].get("image") == "redis:7-alpine"


def test_cluster_nodes_have_distinct_addresses_on_the_cluster_subnet(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    (pool,) = compose["networks"][CLUSTER_NETWORK]["ipam"]["config"]
    addresses = [cluster_address(services[name]) for name in CLUSTER_NODE_SERVICES]
    assert len(set(addresses)) == len(CLUSTER_NODE_SERVICES), addresses
    subnet = pool["subnet"].rsplit(".", 1)[0] + "."
    assert all(address.startswith(subnet) for address in addresses), (pool, addresses)


def test_cluster_init_creates_the_six_nodes_with_one_replica_each(
    services: dict[str, Any],
) -> None:
    arguments = created_with(init_script(services))
    start = arguments.index("create") + 1
    listed = arguments[start : start + len(CLUSTER_NODE_SERVICES)]
    addresses = {f"{cluster_address(services[name])}:6379" for name in CLUSTER_NODE_SERVICES}
    assert sorted(listed) == sorted(addresses)
    options = arguments[start + len(CLUSTER_NODE_SERVICES) :]
    assert options == ["--cluster-replicas", "1", "--cluster-yes"]


def test_cluster_init_runs_once_after_every_node_is_healthy(services: dict[str, Any]) -> None:
    init = services["cluster-init"]
    assert init.get("restart") == "no"
    depends_on = init.get("depends_on")
    assert isinstance(depends_on, dict)
    assert set(depends_on) == set(CLUSTER_NODE_SERVICES)
    for name in CLUSTER_NODE_SERVICES:
        assert depends_on[name].get("condition") == "service_healthy", name


CLUSTER_INFO_NEW = "cluster_state:fail\r\ncluster_slots_assigned:0\r\ncluster_known_nodes:1\r\n"
CLUSTER_INFO_OK = "cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:6\r\n"
CLUSTER_INFO_DOWN = (
    "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_known_nodes:6\r\n"
)
FAKE_REDIS_CLI = """#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
case "$*" in
  *"--cluster create"*) touch "$FAKE_DIR/created" ;;
  *"cluster info"*) if [ -e "$FAKE_DIR/created" ]; then cat "$FAKE_DIR/after"; \\
                    else cat "$FAKE_DIR/before"; fi ;;
esac
"""


def run_init_script(script: str, tmp_path: Path, before: str, after: str) -> tuple[int, list[str]]:
    """Run cluster-init's script with a fake redis-cli answering `cluster info` with `before`,
    then `after` once the create ran (and a `sleep` that does not wait): exit code, cli calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("redis-cli", FAKE_REDIS_CLI), ("sleep", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "before").write_text(before)
    (tmp_path / "after").write_text(after)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path)}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=30)
    calls = tmp_path / "calls"
    return done.returncode, calls.read_text().splitlines() if calls.exists() else []


def test_cluster_init_leaves_an_existing_cluster_alone(
    services: dict[str, Any], tmp_path: Path
) -> None:
    returncode, calls = run_init_script(
        init_script(services), tmp_path, CLUSTER_INFO_OK, CLUSTER_INFO_OK
    )
    assert returncode == 0
    assert calls, "the script asked nothing"
    assert not any("--cluster create" in call for call in calls), calls


def test_cluster_init_creates_a_new_cluster_and_waits_for_it(
    services: dict[str, Any], tmp_path: Path
) -> None:
    script = init_script(services)
    returncode, calls = run_init_script(script, tmp_path, CLUSTER_INFO_NEW, CLUSTER_INFO_OK)
    assert returncode == 0
    creates = [call for call in calls if "--cluster create" in call]
    assert creates == [" ".join(created_with(script)[1:])]
    assert "cluster info" in calls[-1], "it should end by checking the cluster serves"


def test_cluster_init_fails_when_the_new_cluster_never_serves(
    services: dict[str, Any], tmp_path: Path
) -> None:
    """A non-zero exit keeps app-cluster (service_completed_successfully) from starting."""
    returncode, _ = run_init_script(
        init_script(services), tmp_path, CLUSTER_INFO_NEW, CLUSTER_INFO_DOWN
    )
    assert returncode != 0


def test_app_cluster_is_the_app_on_port_8001(services: dict[str, Any]) -> None:
    app_cluster, app = services["app-cluster"], services["app"]
    assert app_cluster.get("build") == app.get("build")
    assert app_cluster.get("image") == app.get("image")
    assert [str(port) for port in app_cluster.get("ports", [])] == ["8001:8000"]
    assert app_cluster.get("healthcheck") == app.get("healthcheck")
    assert app_cluster.get("stop_grace_period") == app.get("stop_grace_period")


def test_app_cluster_starts_after_the_cluster_is_created(services: dict[str, Any]) -> None:
    depends_on = services["app-cluster"].get("depends_on")
    assert depends_on == {"cluster-init": {"condition": "service_completed_successfully"}}


def test_app_cluster_redis_nodes_are_the_six_cluster_nodes(
    cluster_environment: dict[str, str],
) -> None:
    nodes = cluster_environment["REDIS_NODES"].split(",")
    assert sorted(nodes) == sorted(f"redis://{name}:6379" for name in CLUSTER_NODE_SERVICES)


def test_app_cluster_sets_cluster_mode_and_otherwise_the_apps_settings(
    app_environment: dict[str, str], cluster_environment: dict[str, str]
) -> None:
    """Fixed: cluster mode, its nodes, a replica's acknowledgement, /data. The rest is passed
    through exactly as for `app` (so the fallback checks above hold for it too)."""
    fixed = {key: cluster_environment.get(key) for key in CLUSTER_FIXED_KEYS}
    assert fixed == CLUSTER_FIXED_KEYS
    rest = {key: value for key, value in app_environment.items() if key not in CLUSTER_FIXED_KEYS}
    assert {key: cluster_environment[key] for key in rest} == rest
    assert set(cluster_environment) == set(rest) | set(CLUSTER_FIXED_KEYS)


def test_app_cluster_environment_sets_only_settings_fields(
    cluster_environment: dict[str, str],
) -> None:
    unknown = set(cluster_environment) - FIELD_KEYS
    assert not unknown, f"not Settings fields (the service would ignore them): {sorted(unknown)}"


def test_app_cluster_fixed_values_are_valid_settings(
    cluster_environment: dict[str, str],
) -> None:
    fixed = {key.lower(): cluster_environment[key] for key in CLUSTER_FIXED_KEYS}
    settings = Settings(_env_file=None, **fixed)
    assert not settings.uses_embedded_nodes
    assert settings.data_dir == Path("/data")


def test_app_cluster_keeps_its_journal_in_its_own_named_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    source = volume_targets(services["app-cluster"]).get("/data")
    assert source in (compose.get("volumes") or {}), "the journal must outlive the container"
    assert source != volume_targets(services["app"]).get("/data"), "two services, one journal"


def test_cluster_services_share_the_cluster_network(services: dict[str, Any]) -> None:
    for name in CLUSTER_PROFILE_SERVICES:
        assert CLUSTER_NETWORK in services[name].get("networks", {}), name


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_uses_python_311_slim(dockerfile_instructions: list[tuple[str, str]]) -> None:
    bases = arguments_of(dockerfile_instructions, "FROM")
    assert bases, "no FROM instruction"
    assert bases[-1].split()[0] == "python:3.11-slim"


def test_dockerfile_runs_as_a_non_root_user(dockerfile_instructions: list[tuple[str, str]]) -> None:
    keywords = [keyword for keyword, _ in dockerfile_instructions]
    users = arguments_of(dockerfile_instructions, "USER")
    assert users, "no USER instruction: the container runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert keywords.index("CMD") > last_user, "CMD must come after USER"


def test_dockerfile_installs_from_requirements_only(
    dockerfile_instructions: list[tuple[str, str]],
) -> None:
    runs = arguments_of(dockerfile_instructions, "RUN")
    installs = [arguments for arguments in runs if "pip install" in arguments]
    assert installs == ["pip install --no-cache-dir --require-hashes -r requirements.txt"], installs


def test_dockerfile_healthcheck_gets_readiness(
    dockerfile_instructions: list[tuple[str, str]],
) -> None:
    checks = arguments_of(dockerfile_instructions, "HEALTHCHECK")
    assert len(checks) == 1
    assert "http://127.0.0.1:8000/health/ready" in checks[0]
    assert "urllib" in checks[0]


def image_command(instructions: list[tuple[str, str]]) -> list[str]:
    """The Dockerfile's CMD, which must be in exec form (a JSON array: no shell in between,
    so the server is PID 1 and gets the SIGTERM of `docker stop`)."""
    (command,) = arguments_of(instructions, "CMD")
    argv = json.loads(command)
    assert isinstance(argv, list), command
    assert all(isinstance(part, str) for part in argv), command
    return argv


def test_dockerfile_runs_serve_on_every_interface_port_8000(
    dockerfile_instructions: list[tuple[str, str]],
) -> None:
    """`serve` checks the settings before any worker starts: under plain `uvicorn --workers N`
    a worker that dies of a bad setting is respawned forever."""
    assert ("EXPOSE", "8000") in dockerfile_instructions
    argv = image_command(dockerfile_instructions)
    assert argv[:4] == ["python", "-m", "app", "serve"], argv
    args = build_parser().parse_args(argv[3:])
    assert args.handler is serve
    assert (args.host, args.port) == ("0.0.0.0", 8000)
    assert "--workers" not in argv, "a fixed --workers would override WEB_CONCURRENCY"


def test_dockerfile_command_serves_with_the_request_head_limits_and_web_concurrency(
    dockerfile_instructions: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """What the image's command hands uvicorn: the bounded protocol (plain httptools has no
    header limit), no access log, and WEB_CONCURRENCY workers."""
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("WEB_CONCURRENCY", "4")
    monkeypatch.setenv("REDIS_NODES", COMPOSE_REDIS_NODES)
    ran = run_serve(monkeypatch, *image_command(dockerfile_instructions)[4:])
    assert ran["http"] == PROTOCOL_PATH
    assert ran["access_log"] is False
    assert ran["loop"] == "uvloop"
    assert ran["workers"] == 4
    assert (ran["host"], ran["port"]) == ("0.0.0.0", 8000)


def test_compose_passes_the_admin_token_through(app_environment: dict[str, str]) -> None:
    assert app_environment.get("ADMIN_TOKEN") == "${ADMIN_TOKEN:-}"


def test_dockerfile_data_dir_is_a_volume(dockerfile_instructions: list[tuple[str, str]]) -> None:
    assert ("VOLUME", '["/data"]') in dockerfile_instructions
    env = " ".join(arguments_of(dockerfile_instructions, "ENV"))
    assert "DATA_DIR=/data" in env.split()


# --- .env.example -----------------------------------------------------------------------------


def test_env_example_lists_every_setting() -> None:
    values, commented = parse_env_example()
    missing = FIELD_KEYS - set(values) - set(commented)
    assert not missing, f"undocumented settings: {sorted(missing)}"


def test_env_example_has_no_unknown_keys() -> None:
    values, commented = parse_env_example()
    unknown = (set(values) | set(commented)) - FIELD_KEYS
    assert not unknown, f"not Settings fields: {sorted(unknown)}"


def test_env_example_leaves_redis_nodes_unset_showing_the_compose_value() -> None:
    values, commented = parse_env_example()
    assert "REDIS_NODES" not in values, "a set REDIS_NODES would disable the embedded nodes"
    assert commented.get("REDIS_NODES") == COMPOSE_REDIS_NODES


def test_env_example_values_are_the_defaults() -> None:
    values, _ = parse_env_example()
    for key, value in values.items():
        field = key.lower()
        parsed = getattr(Settings(_env_file=None, **{field: value}), field)
        assert parsed == default_of(field), f"{key}={value!r} gives {parsed!r}"


def test_env_example_loads_as_an_env_file_to_the_defaults() -> None:
    loaded = Settings(_env_file=REPO_ROOT / ".env.example")
    assert loaded == Settings(_env_file=None)


def test_env_example_explains_each_key_on_the_line_above() -> None:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    for number, line in enumerate(lines):
        if ASSIGNMENT.match(line) or COMMENTED_ASSIGNMENT.match(line):
            above = lines[number - 1] if number else ""
            explained = re.match(r"^# \S", above) and not COMMENTED_ASSIGNMENT.match(above)
            assert explained, f"no comment above {line!r}"


# --- requirements.txt (the lock; tests/unit/test_packaging.py checks it against pyproject) ----


def requirement_lines() -> list[str]:
    lines = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if re.match(r"^[A-Za-z0-9]", line)]


def test_requirements_cover_the_servers_the_image_runs() -> None:
    names = {line.split("==")[0].split("[")[0].lower() for line in requirement_lines()}
    assert {"uvicorn", "uvloop", "httptools", "fastapi", "redis"} <= names
