"""The `monitoring` compose profile agrees with the app: Prometheus, Grafana, the dashboard,
the alert rules.

Every metric a dashboard panel or an alert rule queries must be one the app exports: the
names come from a scrape of a real app (not a list kept here), so renaming a metric without
fixing the dashboard or the rules fails this test. promtool checks the Prometheus config and
the rules, and runs the rules' unit tests (deploy/prometheus/alerts.test.yml).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from tests.support.metrics import parse_metrics
from tests.support.promtool import find_promtool, run_promtool
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy/grafana/dashboards/visit-counter.json"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy/prometheus.yml"
DATASOURCES = REPO_ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_PROVIDERS = REPO_ROOT / "deploy/grafana/provisioning/dashboards/visit-counter.yml"
ALERT_RULES = REPO_ROOT / "deploy/prometheus/alerts.yml"
ALERT_TESTS = REPO_ROOT / "deploy/prometheus/alerts.test.yml"

# PromQL words that are not metric names (functions are recognised by their "(").
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
}  # fmt: skip


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:\\.|[^"\\])*"', "", expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r"(?<![A-Za-z0-9_:])[0-9][A-Za-z0-9_.]*", "", expr)  # numbers, durations
    grouping = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
    expr = re.sub(grouping, "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        followed_by = expr[match.end() :].lstrip()[:1]
        word = match.group()
        if followed_by != "(" and word.lower() not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def panels_of(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return [panel for panel in found if panel.get("type") != "row"]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def exported_names(redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory) -> set[str]:
    """Sample names a real app's /metrics shows, once one request has been answered."""
    with TestClient(create_app(make_settings(redis_nodes))) as client:
        client.post("/api/v1/counter/visit/page")
        text = client.get("/metrics").text
    return parse_metrics(text).names


@pytest.fixture(scope="module")
def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
    return rules


@pytest.fixture
def promtool() -> str:
    return find_promtool()


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    found: dict[str, Any] = compose["services"]
    return found


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repo path, for the service's `./...` bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("./"):
            mounts[target] = (REPO_ROOT / source).resolve()
    return mounts


# -- the PromQL reader itself ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum(rate(a_total[5m]))", {"a_total"}),
        ('histogram_quantile(0.99, sum by (le, node) (rate(b_bucket{x="y"}[$__rate_interval])))',
         {"b_bucket"}),
        ("a / (b + c) > bool 0 unless on(node) d offset 5m", {"a", "b", "c", "d"}),
    ],
)  # fmt: skip
def test_metric_names_in_promql(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names


# -- the dashboard -----------------------------------------------------------------------------


def test_every_panel_queries_only_metrics_the_app_exports(
    dashboard: dict[str, Any], exported_names: set[str]
) -> None:
    panels = panels_of(dashboard)
    assert panels
    for panel in panels:
        exprs = [target["expr"] for target in panel.get("targets", [])]
        assert exprs, f"panel {panel.get('title')!r} has no query"
        for expr in exprs:
            names = metric_names_in(expr)
            assert names, f"{panel['title']!r}: no metric in {expr!r}"
            unknown = names - exported_names
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}, not exported"


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    queried = set()
    for panel in panels_of(dashboard):
        for target in panel.get("targets", []):
            queried |= metric_names_in(target["expr"])
    assert {
        "pagevisits_accepted_total",  # visits/s
        "pagevisits_flush_duration_seconds_bucket",  # flush latency
        "pagevisits_pending_pages",  # pending pages
        "pagevisits_node_up",  # node health
    } <= queried


def test_panels_use_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in provisioned if source["type"] == "prometheus"}
    for panel in panels_of(dashboard):
        for item in (panel, *panel.get("targets", [])):
            assert item["datasource"]["uid"] in uids, panel["title"]


# -- compose, Prometheus, Grafana ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["prometheus", "grafana"])
def test_monitoring_services_run_only_in_their_profile(services: dict[str, Any], name: str) -> None:
    assert services[name].get("profiles") == ["monitoring"]
    image = services[name]["image"]
    assert ":" in image, f"{name}: pin the image, {image!r}"
    assert not image.endswith(":latest"), f"{name}: pin the image, {image!r}"


def test_the_default_services_have_no_profile(services: dict[str, Any]) -> None:
    for name in ("redis1", "redis2", "redis3", "app"):
        assert "profiles" not in services[name], name


def test_prometheus_mounts_its_config_and_scrapes_the_app(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["prometheus"])
    config_path = next(
        arg.split("=", 1)[1]
        for arg in services["prometheus"]["command"]
        if arg.startswith("--config.file=")
    )
    assert mounts[config_path] == PROMETHEUS_CONFIG.resolve()
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets == ["app:8000"]


def test_grafana_mounts_its_provisioning_and_the_dashboard(services: dict[str, Any]) -> None:
    mounts = bind_mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    assert (provisioning / "datasources" / DATASOURCES.name).resolve() == DATASOURCES.resolve()
    assert DASHBOARD_PROVIDERS.resolve().is_relative_to(provisioning)
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    dashboards_in_container = provider["options"]["path"]
    assert mounts[dashboards_in_container] == DASHBOARD.parent.resolve()


def test_the_datasource_points_at_the_prometheus_service(services: dict[str, Any]) -> None:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    assert "9090:9090" in [str(port) for port in services["prometheus"].get("ports", [])]


# -- alert rules -------------------------------------------------------------------------------


def test_prometheus_loads_the_alert_rules(services: dict[str, Any]) -> None:
    """rule_files, relative to the config, names alerts.yml here and in the container."""
    (rule_file,) = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"]
    assert (PROMETHEUS_CONFIG.parent / rule_file).resolve() == ALERT_RULES.resolve()
    config_in_container = next(
        arg.split("=", 1)[1]
        for arg in services["prometheus"]["command"]
        if arg.startswith("--config.file=")
    )
    in_container = Path(config_in_container).parent / rule_file
    mounts = bind_mounts(services["prometheus"])
    (directory,) = [target for target in mounts if in_container.is_relative_to(target)]
    assert mounts[directory] / in_container.relative_to(directory) == ALERT_RULES.resolve()


def test_the_alerts_the_issue_asks_for_are_there(alert_rules: list[dict[str, Any]]) -> None:
    alerts = {rule["alert"]: rule for rule in alert_rules}
    assert {
        "PageVisitsNodeDown",
        "PageVisitsFlushesFailing",
        "PageVisitsJournalGrowing",
        "PageVisitsAcknowledgedNotStored",
    } <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_every_alert_queries_only_metrics_the_app_exports(
    alert_rules: list[dict[str, Any]], exported_names: set[str]
) -> None:
    for rule in alert_rules:
        names = metric_names_in(rule["expr"])
        assert names, f"{rule['alert']}: no metric in {rule['expr']!r}"
        unknown = names - exported_names
        assert not unknown, f"{rule['alert']} queries {sorted(unknown)}, not exported"


def test_every_alert_is_tested_firing_and_not_firing(alert_rules: list[dict[str, Any]]) -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == [ALERT_RULES.name]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for rule in alert_rules}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_promtool_checks_the_prometheus_config_and_the_rules(promtool: str) -> None:
    config = run_promtool(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout, config.stdout
    rules = run_promtool(promtool, "check", "rules", str(ALERT_RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS" in rules.stdout, rules.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool: str) -> None:
    done = run_promtool(promtool, "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout, done.stdout
