"""A damaged journal is never lost silently: real service processes, a real node.

A service journals what its dead node cannot take, is killed (SIGKILL), and one
record in the middle of its journal file is damaged. The next service claims the
file: every intact batch reaches the node exactly once, the damaged batch's
visits are named in an ERROR and counted in the metrics, the file is kept in the
quarantine, and `/status` of every process on that data directory reports it
until an operator clears it with the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import NodeFactory, ServiceFactory
from tests.support.metrics import parse_metrics
from tests.support.service import REPO_ROOT
from visit_counter.services.batch import Batch, page_key
from visit_counter.services.journal_format import record_text

pytestmark = pytest.mark.fault

API = "/api/v1/counter"
PAGES = [f"pg-{number:02d}" for number in range(12)]
ROUNDS = 4


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.05)


def get_json(url: str) -> Any:
    response = httpx.get(url, timeout=5.0)
    assert response.status_code == 200, response.text
    return response.json()


def stored(port: int) -> dict[str, int]:
    with redis.Redis(port=port) as client:
        return {page: int(client.get(page_key(page)) or 0) for page in PAGES}


def journal_records(path: Path) -> list[tuple[int, bytes, Batch]]:
    """(offset, line, batch) for every record of an undamaged journal file."""
    records, offset = [], 0
    with path.open("rb") as handle:
        for raw in handle:
            records.append((offset, raw, Batch.from_json(record_text(raw))))
            offset += len(raw)
    return records


def test_a_damaged_journal_is_replayed_quarantined_and_reported_until_cleared(
    node_factory: NodeFactory, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    (node,) = node_factory(1)
    # A cap of one page: while the node is down, every flush moves its batch to the journal.
    settings = {"batch_size_limit": 1, "max_pending_pages_per_node": 1}
    first = service_factory([node], **settings)
    node.kill()
    acked: Counter[str] = Counter()
    with httpx.Client(base_url=first.url, timeout=5.0) as client:
        for round_number in range(1, ROUNDS + 1):
            for page_id in PAGES[: 3 * round_number]:
                assert client.post(f"{API}/visit/{page_id}").status_code == 200
                acked[page_id] += 1

            def all_journaled() -> bool:
                metrics = client.get(f"{API}/metrics").json()["metrics"]
                return bool(metrics["pending_visits"] == 0)

            wait_until(all_journaled, "every acknowledged visit is in the journal")
    first.kill()  # SIGKILL: the journal file stays behind, unclaimed

    data_dir = tmp_path / "data"
    (path,) = (data_dir / "journal").glob("*.jsonl")
    records = journal_records(path)
    assert len(records) >= 3
    journaled: Counter[str] = Counter()
    for _, _, batch in records:
        journaled.update({page: count for page, (count, _) in batch.increments.items()})
    assert journaled == acked, "every acknowledged visit was journaled, once"
    # Damage a record in the middle: one page id's letter, so the JSON still parses.
    offset, line, damaged_batch = records[len(records) // 2]
    content = bytearray(path.read_bytes())
    at = content.index(b'"pg-', offset) + 1
    content[at] = ord("q")
    damaged_file = bytes(content)
    path.write_bytes(damaged_file)

    node.start()
    claimed_after = datetime.now(UTC)
    second = service_factory([node], **settings)
    expected = Counter(acked)
    expected.subtract({page: count for page, (count, _) in damaged_batch.increments.items()})
    wait_until(lambda: stored(node.port) == dict(expected), "the intact batches are stored")

    def journal_empty() -> bool:
        return bool(get_json(f"{second.url}{API}/metrics")["metrics"]["journal_batches"] == 0)

    wait_until(journal_empty, "the claimed batches are acknowledged")
    assert stored(node.port) == dict(expected), "nothing was replayed twice"
    assert damaged_batch.visits > 0
    assert sum(expected.values()) == acked.total() - damaged_batch.visits

    writer = path.name.removesuffix(".jsonl")
    (error,) = [entry for entry in second.log().splitlines() if "journal damage:" in entry]
    assert "ERROR" in error
    assert str(path) in error
    assert f"at byte {offset} ({len(line)} bytes)" in error
    batch_id = f"batch {writer}/{damaged_batch.seq} for {damaged_batch.node}"
    assert f"{batch_id} ({damaged_batch.visits} visits as written)" in error
    assert not path.exists()
    (incident,) = (data_dir / "journal" / "quarantine").iterdir()
    quarantined = incident / path.name
    assert str(quarantined) in error
    assert quarantined.read_bytes() == damaged_file, "kept byte for byte"

    metrics = get_json(f"{second.url}{API}/metrics")["metrics"]
    assert (metrics["journal_damaged_records"], metrics["journal_damaged_bytes"]) == (1, len(line))
    scrape = parse_metrics(httpx.get(f"{second.url}/metrics", timeout=5.0).text)
    assert scrape.value("pagevisits_journal_damaged_records_total") == 1
    assert scrape.value("pagevisits_journal_damaged_bytes_total") == len(line)
    assert scrape.value("pagevisits_journal_quarantined_files") == 1

    # Another process on the same data directory, which claimed nothing, reports it too.
    third = service_factory([node], **settings)
    assert get_json(f"{third.url}{API}/metrics")["metrics"]["journal_damaged_records"] == 0
    report = {
        "file": str(quarantined.relative_to(data_dir)),
        "incident": incident.name,
        "writer": writer,
        "kind": "journal",
        "lines": 1,
        "bytes": len(line),
    }
    for service in (second, third):
        (damage,) = get_json(f"{service.url}/status")["journal_damage"]
        assert {key: damage[key] for key in report} == report
        assert claimed_after <= datetime.fromisoformat(damage["found_at"]) <= datetime.now(UTC)

    cleared = subprocess.run(
        [sys.executable, "-m", "app", "journal", "quarantine", "--clear", incident.name],
        cwd=REPO_ROOT,
        env={**os.environ, "DATA_DIR": str(data_dir), "REDIS_NODES": node.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cleared.returncode == 0, cleared.stderr
    for service in (second, third):
        assert get_json(f"{service.url}/status")["journal_damage"] == []

    def gauge_cleared() -> bool:  # every process sets it at its next sync
        scrape = parse_metrics(httpx.get(f"{second.url}/metrics", timeout=5.0).text)
        return scrape.value("pagevisits_journal_quarantined_files") == 0

    wait_until(gauge_cleared, "the quarantine gauge reads 0")
