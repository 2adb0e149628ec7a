"""Hostile requests against the real server: oversized or late heads get a 4xx, and idle
sockets cannot crowd out clients or the node connections.

Raw sockets, so the client sends exactly the bytes meant (httpx would refuse some),
against uvicorn with the protocol the Dockerfile and `serve` use
(core/http_limits.py, core/connection_limits.py). A 5xx, a reset without an
answer, or a hang fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import ServiceFactory, node_urls
from tests.support.load import stored_counts
from tests.support.service import REPO_ROOT, ServiceProcess
from visit_counter.core.config import Settings
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.core.http_limits import MAX_HEAD_BYTES, MAX_URL_BYTES

pytestmark = pytest.mark.e2e

API = "/api/v1/counter"
ANSWER_TIMEOUT = 5.0


def read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(ANSWER_TIMEOUT)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        if b"\r\n\r\n" in answer and b"connection: close" not in answer.lower():
            break  # a kept-alive answer: the head is all the test reads
    return answer


def send_request(service: ServiceProcess, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(request)
        return read_answer(sock)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def wait_stored(
    nodes: list[RedisNodeProcess], expected: Counter[str], timeout: float = 10.0
) -> Counter[str]:
    """Poll the nodes until they hold `expected`; return what they hold at the end."""
    deadline = time.monotonic() + timeout
    while True:
        stored = stored_counts(nodes, list(expected))
        if stored == expected or time.monotonic() > deadline:
            return stored
        time.sleep(0.1)


@contextlib.contextmanager
def idle_sockets(service: ServiceProcess, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that never send a byte, closed on exit."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT)
            sock.setblocking(False)  # see closed_by_server
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing sent
    except ConnectionResetError:
        return True


def count_closed(sockets: list[socket.socket], at_least: int) -> int:
    """How many of `sockets` the server closed, once at least `at_least` (or at the timeout)."""
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        closed = sum(closed_by_server(sock) for sock in sockets)
        if closed >= at_least or time.monotonic() > deadline:
            return closed
        time.sleep(0.05)


def closed_connections(service: ServiceProcess, reason: str) -> float:
    """The Prometheus count of connections the server closed for `reason`."""
    text = httpx.get(f"{service.url}/metrics", timeout=ANSWER_TIMEOUT).text
    found = re.search(rf'http_connections_closed_total{{reason="{reason}"}} (\S+)', text)
    assert found, text
    return float(found.group(1))


def wait_all_nodes_healthy(service: ServiceProcess) -> dict[str, bool]:
    deadline = time.monotonic() + ANSWER_TIMEOUT
    while True:
        nodes: dict[str, bool] = httpx.get(f"{service.url}/status", timeout=ANSWER_TIMEOUT).json()[
            "redis_status"
        ]["node_status"]
        if all(nodes.values()) or time.monotonic() > deadline:
            return nodes
        time.sleep(0.1)


@pytest.fixture
def service(redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory) -> ServiceProcess:
    return service_factory(redis_nodes)


def test_requests_within_the_limits_are_served(service: ServiceProcess) -> None:
    page = "p" * 256
    header = b"X-Padding: " + b"a" * (MAX_HEAD_BYTES // 2) + b"\r\n"
    request = f"POST {API}/visit/{page} HTTP/1.1\r\nHost: t\r\n".encode() + header + b"\r\n"
    assert status_of(send_request(service, request)) == 200


def test_a_100_kb_url_gets_414(service: ServiceProcess) -> None:
    url = f"{API}/visits/" + "a" * 100_000
    answer = send_request(service, f"GET {url} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert status_of(answer) == 414
    assert b'"error":"url_too_long"' in answer
    assert len(url) > MAX_URL_BYTES


def test_a_100_kb_header_gets_431(service: ServiceProcess) -> None:
    # 1 MB too: the server stops parsing long before the client stops sending, and its
    # lingering close keeps the kernel from resetting the connection over the answer.
    for size in (100_000, 1_000_000):
        header = b"X-Big: " + b"b" * size + b"\r\n"
        answer = send_request(service, b"GET /status HTTP/1.1\r\nHost: t\r\n" + header + b"\r\n")
        assert status_of(answer) == 431, size
        assert b'"error":"headers_too_large"' in answer


def test_100_kb_of_small_headers_gets_431(service: ServiceProcess) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % number for number in range(10_000))
    answer = send_request(service, b"GET /status HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
    assert status_of(answer) == 431


def test_a_head_that_never_ends_is_cut_off(service: ServiceProcess) -> None:
    """A head trickling in is refused once it passes the limit, not buffered until it ends."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        sent = 0
        while sent < 20 * MAX_HEAD_BYTES:
            if select.select([sock], [], [], 0.002)[0]:
                break  # the server answered: stop sending
            sock.sendall(b"s" * 1024)
            sent += 1024
        answer = read_answer(sock)
    assert status_of(answer) == 431
    assert sent < 4 * MAX_HEAD_BYTES


def test_a_visit_is_answered_without_reading_its_body(service: ServiceProcess) -> None:
    """Content-Length says 100 MB and 1 KB is sent: the 200 comes back at once."""
    head = f"POST {API}/visit/with-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n"
    with socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(head.encode() + b"x" * 1024)
        assert status_of(read_answer(sock)) == 200
    with httpx.Client(base_url=service.url) as client:
        assert client.get(f"{API}/visits/with-body").json()["visits"] == 1


def test_the_service_keeps_serving_after_hostile_requests(service: ServiceProcess) -> None:
    started = time.monotonic()
    for _ in range(3):
        send_request(
            service, b"GET /status HTTP/1.1\r\nHost: t\r\nX: " + b"x" * 50_000 + b"\r\n\r\n"
        )
    with httpx.Client(base_url=service.url) as client:
        assert client.post(f"{API}/visit/after").status_code == 200
        assert client.get(f"{API}/visits/after").json()["visits"] == 1
    assert time.monotonic() - started < ANSWER_TIMEOUT


def test_a_head_split_over_two_writes_is_refused_without_a_traceback(
    service: ServiceProcess,
) -> None:
    """The second read pushes the head over the limit: one answer, no second one."""
    head = b"GET /status HTTP/1.1\r\nHost: t\r\nX-Big: "
    cases = [
        # the second write completes a head that is too large
        (head + b"b" * 10_000, b"b" * 10_000 + b"\r\n\r\n", 431),
        # the second write alone passes the limit, and the head is still not complete
        (head + b"b" * 1_000, b"b" * 20_000, 431),
        # a target over the URL limit, in two pieces
        (f"GET {API}/visits/".encode() + b"a" * 5_000, b"a" * 5_000 + b" HTTP/1.1\r\n\r\n", 414),
    ]
    for first, second, expected in cases:
        with socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT) as sock:
            sock.sendall(first)
            time.sleep(0.1)  # two reads on the server
            sock.sendall(second)
            assert status_of(read_answer(sock)) == expected
    with httpx.Client(base_url=service.url) as client:
        assert client.get("/status").status_code == 200  # the log has caught up
    assert "Traceback" not in service.log()
    assert "Fatal error" not in service.log()


@pytest.mark.parametrize("size", [9 * 1024, 15 * 1024])
def test_a_target_over_8_kib_gets_414_and_is_not_counted(
    service: ServiceProcess, redis_nodes: list[RedisNodeProcess], size: int
) -> None:
    """Between the URL and the head limit: the target is checked on its own."""
    page = f"long-target-{size}"
    padding = "p" * (size - len(f"{API}/visit/{page}?pad="))
    long_target = f"{API}/visit/{page}?pad={padding}"
    assert MAX_URL_BYTES < len(long_target) < MAX_HEAD_BYTES
    answer = send_request(service, f"POST {long_target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    assert status_of(answer) == 414
    assert b'"error":"url_too_long"' in answer
    # The same page with a short target counts: the 414 alone was not counted.
    short = f"POST {API}/visit/{page}?pad=short HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    assert status_of(send_request(service, short)) == 200
    with httpx.Client(base_url=service.url) as client:
        assert client.get(f"{API}/visits/{page}").json()["visits"] == 1
    assert wait_stored(redis_nodes, Counter({page: 1})) == Counter({page: 1})


# --- the request head's deadline (HEAD_TIMEOUT_SECONDS) -------------------------------------


@pytest.fixture
def quick_timeout_service(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> ServiceProcess:
    return service_factory(redis_nodes, head_timeout_seconds=1)


def test_a_head_that_stalls_gets_408(quick_timeout_service: ServiceProcess) -> None:
    with socket.create_connection(
        ("127.0.0.1", quick_timeout_service.port), timeout=ANSWER_TIMEOUT
    ) as sock:
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\n")  # no blank line: never ends
        answer = read_answer(sock)
    assert status_of(answer) == 408
    assert b'"error":"request_timeout"' in answer
    assert b"connection: close" in answer.lower()
    assert "Traceback" not in quick_timeout_service.log()


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    quick_timeout_service: ServiceProcess,
) -> None:
    with socket.create_connection(
        ("127.0.0.1", quick_timeout_service.port), timeout=ANSWER_TIMEOUT
    ) as sock:
        assert sock.recv(1024) == b""


def test_a_trickle_does_not_extend_the_deadline(quick_timeout_service: ServiceProcess) -> None:
    """One byte every 0.2 s of a head that would take 20 s: cut off at the deadline."""
    head = b"GET /status HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 60 + b"\r\n\r\n"
    with socket.create_connection(
        ("127.0.0.1", quick_timeout_service.port), timeout=ANSWER_TIMEOUT
    ) as sock:
        sent = 0
        while sent < len(head) and not select.select([sock], [], [], 0.2)[0]:
            sock.sendall(head[sent : sent + 1])
            sent += 1
        answer = read_answer(sock)
    assert status_of(answer) == 408
    assert sent < len(head)  # the head never completed


def test_a_kept_alive_connection_has_a_deadline_for_its_next_head(
    quick_timeout_service: ServiceProcess,
) -> None:
    """Any byte cancels uvicorn's keep-alive timeout; it starts the head deadline instead."""
    with socket.create_connection(
        ("127.0.0.1", quick_timeout_service.port), timeout=ANSWER_TIMEOUT
    ) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_of(read_answer(sock)) == 200
        sock.sendall(b"GET /sta")
        answer = read_answer(sock)
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # the first answer's body may follow it
    assert status_of(answer[answer.index(b"HTTP/1.1 ") :]) == 408


def test_an_idle_kept_alive_connection_is_closed_by_the_keep_alive_timeout(
    service: ServiceProcess,
) -> None:
    """Between requests uvicorn's keep-alive timeout (5 s) governs, not the head deadline."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status_of(read_answer(sock)) == 200
        sock.settimeout(5 + ANSWER_TIMEOUT)
        while chunk := sock.recv(65536):
            assert b"HTTP/1.1 " not in chunk  # the rest of the body, no second answer


# --- how many connections a worker holds (MAX_CONNECTIONS, the open-file limit) --------------


def test_idle_sockets_past_max_connections_are_closed_and_clients_still_served(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    """The longest-waiting connections make room; a client that sends at once is served."""
    service = service_factory(redis_nodes, max_connections=20, head_timeout_seconds=60)
    with idle_sockets(service, 50) as idle:
        assert count_closed(idle, 30) >= 30  # long before their head deadline
        with httpx.Client(base_url=service.url, timeout=ANSWER_TIMEOUT) as client:
            for _ in range(5):
                assert client.post(f"{API}/visit/crowded").status_code == 200
        assert wait_stored(redis_nodes, Counter(crowded=5)) == Counter(crowded=5)
        assert closed_connections(service, "evicted") >= 30
    assert closed_connections(service, "max_connections") == 0  # no connection was busy


def test_idle_sockets_past_the_open_file_limit_leave_room_for_clients_and_nodes(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    """300 idle sockets against 256 descriptors: visits are still answered and stored.

    The service's node connections are dropped while the sockets are held, so it has
    to open new ones then: the descriptors they need were reserved.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1024:  # this test process holds the 300 sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    service = service_factory(redis_nodes, open_files=(256, 256), redis_pool_size=16)
    assert "MAX_CONNECTIONS lowered from 1024 to 80" in service.log()  # 256 - 3 x 16 - 128
    pages = ["fd-limit-a", "fd-limit-b", "fd-limit-c"]
    with idle_sockets(service, 300) as idle:
        assert count_closed(idle, 300 - 80) >= 300 - 80
        for node in redis_nodes:
            with redis.Redis(port=node.port) as admin:
                admin.client_kill_filter(_type="normal", skipme=True)
        with httpx.Client(base_url=service.url, timeout=ANSWER_TIMEOUT) as client:
            for number in range(30):
                assert client.post(f"{API}/visit/{pages[number % 3]}").status_code == 200
        expected = Counter(dict.fromkeys(pages, 10))
        assert wait_stored(redis_nodes, expected) == expected
        assert all(wait_all_nodes_healthy(service).values())
    assert "Too many open files" not in service.log()


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    redis_nodes: list[RedisNodeProcess], service_factory: ServiceFactory
) -> None:
    hard = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    service = service_factory(redis_nodes, open_files=(200, hard))
    limits = Path(f"/proc/{service.pid}/limits").read_text().splitlines()
    open_files = next(line for line in limits if line.startswith("Max open files"))
    assert open_files.split()[3:5] == [str(hard), str(hard)]


SETTING_KEYS = {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize(
    ("command", "exit_code"),
    [(["-m", "app", "serve"], 2), (["-m", "uvicorn", "app.main:app"], 1)],
    ids=["serve", "uvicorn"],
)
def test_an_open_file_limit_without_room_stops_the_start_with_one_line(
    redis_nodes: list[RedisNodeProcess], tmp_path: Path, command: list[str], exit_code: int
) -> None:
    """150 descriptors cannot hold 3 node pools of 100 and the files: refused, not clamped."""
    env = {key: value for key, value in os.environ.items() if key.upper() not in SETTING_KEYS}
    env.update(
        REDIS_NODES=node_urls(redis_nodes),
        DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(REPO_ROOT),
    )
    result = subprocess.run(
        [sys.executable, *command, "--port", "1"],  # refused before it binds
        cwd=tmp_path,
        env=env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (150, 150)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == exit_code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "RLIMIT_NOFILE 150" in result.stderr
    assert "REDIS_POOL_SIZE" in result.stderr
