"""`python -m app serve`, what `make run` runs: embedded nodes, a clean stop, exit code 0."""

from __future__ import annotations

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
