"""Hostile requests against the real server: oversized URLs and headers get a 4xx, at once.

Raw sockets, so the client sends exactly the bytes meant (httpx would refuse some),
against uvicorn with the protocol the Dockerfile and `serve` use
(app/core/http_limits.py). A 5xx, a reset without an answer, or a hang fails.
"""

from __future__ import annotations

import select
import socket
import time

import httpx
import pytest

from app.core.embedded_nodes import RedisNodeProcess
from app.core.http_limits import MAX_HEAD_BYTES, MAX_URL_BYTES
from tests.conftest import ServiceFactory
from tests.support.service import ServiceProcess

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
