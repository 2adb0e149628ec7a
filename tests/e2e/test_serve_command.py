"""`python -m app serve`, what `make run` and the Docker image run: embedded nodes, a clean
stop, exit code 0; a bad setting stops it before any worker starts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.service import REPO_ROOT
from visit_counter.core.config import EMBEDDED_PORTS, Settings
from visit_counter.core.embedded_nodes import free_port
from visit_counter.services.prometheus_dir import directory_for

pytestmark = pytest.mark.e2e

SETTING_KEYS = {name.upper() for name in Settings.model_fields}


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited at start"
        try:
            if httpx.get(f"{url}/status", timeout=1).json()["status"] == "healthy":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def test_serve_starts_the_embedded_nodes_counts_and_stops_everything(tmp_path: Path) -> None:
    if any(port_answers(port) for port in EMBEDDED_PORTS):
        pytest.skip("the embedded ports 7070-7072 are in use on this machine")
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTING_KEYS}
    env.update({"DATA_DIR": str(tmp_path / "data"), "BATCH_INTERVAL_SECONDS": "0.2"})
    # The default place of the Prometheus files (on /dev/shm where there is one).
    metrics_dir = directory_for(
        Settings(_env_file=None, data_dir=tmp_path / "data", prometheus_dir=None)
    ).path
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port)],
        cwd=tmp_path,  # no .env here: the embedded default applies
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_healthy(url, process)
        assert all(port_answers(node_port) for node_port in EMBEDDED_PORTS)
        for _ in range(3):
            assert httpx.post(f"{url}/api/v1/counter/visit/page1").status_code == 200
        time.sleep(0.5)
        reading = httpx.get(f"{url}/api/v1/counter/visits/page1").json()
        assert reading["visits"] == 3
        assert reading["served_via"] in {f"redis_{node_port}" for node_port in EMBEDDED_PORTS}

        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert list(metrics_dir.glob("counter_*.db"))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    assert not any(port_answers(node_port) for node_port in EMBEDDED_PORTS), "nodes stopped"
    assert sorted(p.name for p in (tmp_path / "data" / "nodes").iterdir()) == [
        str(node_port) for node_port in EMBEDDED_PORTS
    ]


def image_command() -> list[str]:
    """The Dockerfile's CMD (exec form), run with this interpreter."""
    (line,) = [
        line
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("CMD ")
    ]
    argv = json.loads(line.removeprefix("CMD "))
    assert argv[0] == "python", argv
    return [sys.executable, *argv[1:]]


@pytest.mark.parametrize(
    ("started_as", "web_concurrency"),
    [("serve --workers 2", None), ("the image's CMD", "2")],
    ids=["serve --workers 2", "the image's CMD, WEB_CONCURRENCY=2"],
)
def test_a_bad_setting_stops_serve_before_any_worker_starts(
    tmp_path: Path, started_as: str, web_concurrency: str | None
) -> None:
    """Exit status 2 and one line, not a supervisor respawning workers that die of it."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTING_KEYS}
    env.pop("WEB_CONCURRENCY", None)
    env.update(VIRTUAL_NODES="abc", DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(REPO_ROOT))
    if web_concurrency is not None:
        env["WEB_CONCURRENCY"] = web_concurrency
    if started_as == "the image's CMD":
        command = image_command()
        # Never the image's fixed port, should it get as far as binding one.
        command[command.index("--port") + 1] = str(free_port())
    else:
        command = [sys.executable, "-m", "app", "serve", "--workers", "2"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its workers, if any, die with it below
    )
    try:
        out, err = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("serve did not stop on a bad setting") from None
    assert process.returncode == 2, err
    assert out == ""
    assert err.count("\n") == 1, err  # no uvicorn line: no worker, no socket
    assert err.startswith("visit-counter: invalid configuration: VIRTUAL_NODES: "), err
    assert not (tmp_path / "data").exists(), "nothing started: no embedded node either"
