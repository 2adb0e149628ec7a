"""`/dashboard` in process: the login that trades ADMIN_TOKEN for a session cookie, what that
cookie opens, logging out, the page without a token, and a page that loads nothing from
anywhere else. The page itself runs in a browser in tests/browser/test_dashboard.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from tests.conftest import SettingsFactory
from visit_counter.core.dashboard_session import COOKIE_NAME, session_value
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
TOKEN = "s3cret-admin-token-for-tests-0123"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
URL = re.compile(r"https?://[^\s\"'<>)]+")
# The one URL the page's files may hold: the SVG namespace's name, which is never fetched.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture
def client(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> Iterator[TestClient]:
    settings = make_settings(redis_nodes, admin_token=TOKEN, dashboard_popular_threshold=7)
    with TestClient(create_app(settings), follow_redirects=False) as test_client:
        yield test_client


def log_in(client: TestClient, token: str = TOKEN, url: str = "/dashboard/login") -> str:
    """POST the login form; return the answer's Set-Cookie header (empty when none)."""
    response = client.post(url, content=f"token={token}", headers=FORM)
    cookie: str = response.headers.get("set-cookie", "")
    return cookie


def session(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={value}"}


def test_logging_in_sets_an_httponly_strict_cookie_and_logging_out_drops_it(
    client: TestClient,
) -> None:
    login_form = client.get("/dashboard")
    assert login_form.status_code == 401
    assert 'name="token"' in login_form.text
    assert 'id="dashboard"' not in login_form.text

    response = client.post("/dashboard/login", content=f"token={TOKEN}", headers=FORM)

    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard"
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "path", "max-age"} <= attributes
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    assert re.search(r"samesite=strict", cookie, re.IGNORECASE)
    assert re.search(r"path=/(;|$)", cookie, re.IGNORECASE)
    assert TOKEN not in cookie
    page = client.get("/dashboard")  # the client's jar sends the cookie back
    assert page.status_code == 200
    assert 'id="dashboard"' in page.text
    assert 'data-popular="7"' in page.text
    assert "/dashboard/logout" in page.text

    logout = client.post("/dashboard/logout")

    assert logout.status_code == 303
    assert logout.headers["location"] == "/dashboard"
    dropped = logout.headers["set-cookie"]
    assert re.match(rf'{COOKIE_NAME}=("")?;', dropped)
    assert re.search(r"max-age=0", dropped, re.IGNORECASE)
    assert client.get("/dashboard").status_code == 401

    over_https = log_in(client, url="https://testserver/dashboard/login")
    assert re.search(r";\s*secure(;|$)", over_https, re.IGNORECASE)


def test_a_wrong_token_gets_the_form_again_and_no_cookie(client: TestClient) -> None:
    for wrong in ("wrong-token-wrong-token", TOKEN[:-1], f"{TOKEN}x", ""):
        response = client.post("/dashboard/login", content=f"token={wrong}", headers=FORM)
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert 'name="token"' in response.text
        assert "not the admin token" in response.text
        if wrong:
            assert wrong not in response.text  # never echoed
    for body, headers in (
        (f"token={TOKEN}&token={TOKEN}", FORM),  # two tokens: neither is taken
        (f"token={TOKEN}", {"Content-Type": "text/plain"}),
        ("token=" + "x" * 5000, FORM),
    ):
        response = client.post("/dashboard/login", content=body, headers=headers)
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
    assert client.get("/dashboard").status_code == 401


def test_the_cookie_opens_the_admin_routes_and_a_wrong_or_old_one_does_not(
    client: TestClient,
) -> None:
    good = session_value(SecretStr(TOKEN))
    old = session_value(SecretStr("the-token-before-this-one-0123"))
    client.post(f"{API}/visit/kept")

    detail = client.get("/status", headers=session(good)).json()
    assert detail["redis_status"]["healthy_nodes"] == 3
    assert client.get(f"{API}/metrics", headers=session(good)).status_code == 200
    assert client.get("/dashboard", headers=session(good)).status_code == 200

    for value in (old, good[:-1], good.upper(), TOKEN, ""):
        assert client.get("/status", headers=session(value)).json() == {"status": "healthy"}
        assert client.delete(f"{API}/visits/kept", headers=session(value)).status_code == 401
        assert client.get("/dashboard", headers=session(value)).status_code == 401
    # A request the browser marks as sent by another origin may not use it.
    foreign = {**session(good), "Sec-Fetch-Site": "same-site"}
    assert client.delete(f"{API}/visits/kept", headers=foreign).status_code == 401
    assert client.get(f"{API}/visits/kept").json()["visits"] == 1  # nothing was reset
    same_origin = {**session(good), "Sec-Fetch-Site": "same-origin"}
    assert client.delete(f"{API}/visits/kept", headers=same_origin).status_code == 200

    bearer = client.get("/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200  # the bearer header opens the page too
    assert 'id="dashboard"' in bearer.text


def test_without_a_token_the_page_is_open_and_there_is_no_login(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    with TestClient(create_app(make_settings(redis_nodes)), follow_redirects=False) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200
        assert 'id="dashboard"' in page.text
        assert 'data-popular="1000"' in page.text  # the default threshold
        assert "logout" not in page.text
        assert 'name="token"' not in page.text
        login = client.post("/dashboard/login", content=f"token={TOKEN}", headers=FORM)
        assert login.status_code in (404, 405)
        assert "set-cookie" not in login.headers


def test_the_page_loads_nothing_from_another_origin(client: TestClient) -> None:
    login_form = client.get("/dashboard").text
    log_in(client)
    page = client.get("/dashboard")
    policy = page.headers["content-security-policy"]
    for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert directive in policy
    assert page.headers["cache-control"] == "no-store"
    assets = re.findall(r'(?:src|href)="(/dashboard/[^"]+)"', page.text)
    assert sorted(asset.split("?")[0] for asset in assets) == [
        "/dashboard/dashboard.css",
        "/dashboard/dashboard.js",
    ]
    served = {"page": page.text, "login form": login_form}
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200
        served[asset] = response.text
    for name, text in served.items():
        assert set(URL.findall(text)) <= {SVG_NAMESPACE}, name
