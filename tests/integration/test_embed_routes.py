"""What web pages use: CORS, the pixel, the badge, /count.js, ?return=count, and crawlers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import SettingsFactory
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
SITE = "https://blog.example"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> Iterator[ClientFactory]:
    clients: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        client = TestClient(create_app(make_settings(redis_nodes, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client(cors_allow_origins=SITE)


def visits(client: TestClient, page: str) -> int:
    count: int = client.get(f"{API}/visits/{page}").json()["visits"]
    return count


def test_a_preflight_from_a_listed_origin_gets_204_with_methods_and_headers(
    client: TestClient,
) -> None:
    response = client.options(
        f"{API}/visit/home",
        headers={"Origin": SITE, "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SITE
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Idempotency-Key" in response.headers["access-control-allow-headers"]
    assert response.headers["vary"] == "Origin"


def test_an_origin_not_on_the_list_gets_no_allow_origin(client: TestClient) -> None:
    preflight = client.options(
        f"{API}/visit/home",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 403
    assert preflight.json()["error"] == "cors_origin_not_allowed"
    response = client.get(f"{API}/visits/home", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", f"{API}/visit/home", 200),  # the pure-ASGI fast path
        ("GET", f"{API}/visits/home", 200),
        ("POST", f"{API}/visit/a%00b", 422),  # errors too
        ("GET", "/no/such/route", 404),
        ("GET", "/count.js", 200),
    ],
)
def test_every_answer_to_a_listed_origin_carries_the_headers(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = client.request(method, path, headers={"Origin": SITE})
    assert response.status_code == status
    assert response.headers["access-control-allow-origin"] == SITE
    assert response.headers["access-control-allow-credentials"] == "true"


def test_any_origin_with_a_star_and_never_credentials(make_client: ClientFactory) -> None:
    client = make_client(cors_allow_origins="*")
    response = client.post(f"{API}/visit/home", headers={"Origin": "https://any.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


def test_cors_off_by_default_leaves_preflights_unanswered(make_client: ClientFactory) -> None:
    client = make_client()
    response = client.options(
        f"{API}/visit/home", headers={"Origin": SITE, "Access-Control-Request-Method": "POST"}
    )
    assert response.status_code == 405
    assert "access-control-allow-origin" not in response.headers


def test_the_pixel_counts_and_answers_a_transparent_gif_never_cached(client: TestClient) -> None:
    response = client.get(f"{API}/pixel/blog/post.gif", headers={"User-Agent": CHROME})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store"
    assert response.content.startswith(b"GIF89a\x01\x00\x01\x00")
    assert visits(client, "blog/post") == 1
    assert client.get(f"{API}/pixel/blog/post.png").status_code == 422


def test_the_badge_reads_unless_asked_to_count(client: TestClient) -> None:
    counter = client.app_state["runtime"].counter
    for _ in range(1234):
        counter.record_visit("readme")
    badge = client.get(f"{API}/badge/readme.svg?label=views&color=green")
    assert badge.status_code == 200
    assert badge.headers["content-type"] == "image/svg+xml"
    assert badge.headers["cache-control"] == "no-cache, no-store, must-revalidate"
    assert "<title>views: 1,234</title>" in badge.text
    assert 'fill="#97ca00"' in badge.text
    assert visits(client, "readme") == 1234
    counted = client.get(f"{API}/badge/readme.svg?count=true", headers={"User-Agent": CHROME})
    assert "<title>visits: 1,235</title>" in counted.text


def test_a_badge_escapes_its_label_and_refuses_a_bad_colour(client: TestClient) -> None:
    badge = client.get(f"{API}/badge/x.svg", params={"label": '<b>"hi"</b>'})
    assert "<b>" not in badge.text
    assert "&lt;b&gt;" in badge.text
    refused = client.get(f"{API}/badge/x.svg?color=url(javascript:1)")
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid_parameter"


def test_count_js_is_small_cached_and_knows_the_api_prefix(client: TestClient) -> None:
    response = client.get("/count.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert len(response.content) < 2048
    assert b'"/api/v1/counter/visit/"' in response.content
    assert b"__API_PREFIX__" not in response.content


def test_return_count_answers_the_seed_body_with_the_count(client: TestClient) -> None:
    client.post(f"{API}/visit/counted")
    response = client.post(f"{API}/visit/counted?return=count")
    body = response.json()
    assert list(body) == ["status", "message", "page_id", "timestamp", "visits"]
    assert body["visits"] == 2
    plain = client.post(f"{API}/visit/counted?utm=x").json()  # another query: seed body
    assert "visits" not in plain


def test_a_crawler_browser_is_answered_but_not_counted_and_servers_always_are(
    client: TestClient,
) -> None:
    as_bot = {"User-Agent": GOOGLEBOT, "Origin": SITE}
    assert client.post(f"{API}/visit/landing", headers=as_bot).status_code == 200
    assert client.post(f"{API}/visit/landing?return=count", headers=as_bot).status_code == 200
    assert client.get(f"{API}/pixel/landing.gif", headers={"User-Agent": GOOGLEBOT}).is_success
    assert visits(client, "landing") == 0
    client.post(f"{API}/visit/landing", headers={"User-Agent": "curl/8.5.0"})  # a server
    client.post(f"{API}/visit/landing", headers={"User-Agent": CHROME, "Origin": SITE})
    assert visits(client, "landing") == 2
    metrics = client.get(f"{API}/metrics").json()["metrics"]
    assert metrics["bots_rejected"] == 3
    assert "pagevisits_bots_rejected_total 3.0" in client.get("/metrics").text


def test_count_bots_turns_the_filter_off(make_client: ClientFactory) -> None:
    client = make_client(count_bots=True)
    client.post(f"{API}/visit/landing", headers={"User-Agent": GOOGLEBOT, "Origin": SITE})
    assert visits(client, "landing") == 1


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
        "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
        "github-camo (876de43e)",
    ],
)
def test_mail_and_readme_image_proxies_count_as_the_people_they_fetch_for(
    client: TestClient, user_agent: str
) -> None:
    assert client.get(f"{API}/pixel/mail.gif", headers={"User-Agent": user_agent}).is_success
    client.get(f"{API}/badge/mail.svg?count=true", headers={"User-Agent": user_agent})
    assert visits(client, "mail") == 2
