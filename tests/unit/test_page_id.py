"""Page ids: URL paths made canonical (decoded, NFC, slashes), else a clear 422."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from visit_counter.core.errors import CounterError, InvalidPageIdError
from visit_counter.core.page_id import MAX_PAGE_ID_LENGTH, normalize_page_id, validate_page_id

RELEASE_1 = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~:-"
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    ("raw", "page_id"),
    [
        pytest.param("home", "home", id="word"),
        pytest.param("Blog_2024-01-01.v2~draft:7", "Blog_2024-01-01.v2~draft:7", id="punctuation"),
        pytest.param("blog/2026/hello", "blog/2026/hello", id="path"),
        pytest.param("/blog/2026/hello", "blog/2026/hello", id="leading-slash"),
        pytest.param("blog/2026/hello/", "blog/2026/hello", id="trailing-slash"),
        pytest.param("blog//2026///hello", "blog/2026/hello", id="repeated-slashes"),
        pytest.param("/", "/", id="root"),
        pytest.param("//", "/", id="root-twice"),
        pytest.param("caf\u00e9", "caf\u00e9", id="nfc"),
        pytest.param("cafe\u0301", "caf\u00e9", id="nfd-made-nfc"),
        pytest.param("blog/post?utm=x", "blog/post", id="query-dropped"),
        pytest.param("blog/post#top", "blog/post", id="fragment-dropped"),
        pytest.param("a b/100%", "a b/100%", id="space-and-percent"),
        pytest.param("\u65e5\u672c/\u8a9e", "\u65e5\u672c/\u8a9e", id="cjk"),
        pytest.param("x" * MAX_PAGE_ID_LENGTH, "x" * MAX_PAGE_ID_LENGTH, id="512-characters"),
        pytest.param("\u00e9" * 512, "\u00e9" * 512, id="1024-bytes-of-utf8"),
        pytest.param("a..b/.c/d.", "a..b/.c/d.", id="dots-inside-segments"),
    ],
)
def test_paths_become_one_canonical_id(raw: str, page_id: str) -> None:
    assert normalize_page_id(raw) == page_id
    assert validate_page_id(page_id) == page_id


def test_the_trailing_slash_is_kept_when_asked() -> None:
    assert normalize_page_id("/blog/", keep_trailing_slash=True) == "blog/"
    assert normalize_page_id("/blog", keep_trailing_slash=True) == "blog"
    assert normalize_page_id("/", keep_trailing_slash=True) == "/"


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("x" * (MAX_PAGE_ID_LENGTH + 1), "513 characters", id="513-characters"),
        pytest.param("/" * 600 + "a", "601 characters", id="too-long-as-sent"),
        pytest.param("a\x85b", "control characters", id="c1-control"),
        pytest.param("a\x00b", "control characters", id="nul"),
        pytest.param("page\n", "control characters", id="newline"),
        pytest.param("a\x7fb", "control characters", id="del"),
        pytest.param("..", "'.' or '..' segments", id="dot-dot"),
        pytest.param(".", "'.' or '..' segments", id="dot"),
        pytest.param("../etc/passwd", "'.' or '..' segments", id="traversal"),
        pytest.param("blog/./post", "'.' or '..' segments", id="dot-segment"),
    ],
)
def test_rejects_bad_ids_with_a_message_saying_what_is_wrong(raw: str, fragment: str) -> None:
    with pytest.raises(InvalidPageIdError) as caught:
        normalize_page_id(raw)

    error = caught.value
    assert isinstance(error, CounterError)
    assert error.status_code == 422
    assert error.code == "invalid_page_id"
    assert fragment in error.message


@DETERMINISTIC
@given(st.text(alphabet=RELEASE_1, min_size=1, max_size=256).filter(lambda s: s not in {".", ".."}))
def test_every_release_1_id_keeps_its_spelling(page_id: str) -> None:
    """Its placement on the ring and its key depend on the spelling: it must not change."""
    assert normalize_page_id(page_id) == page_id


@DETERMINISTIC
@given(st.text(min_size=1, max_size=80))
def test_the_same_path_always_maps_to_the_same_id(raw: str) -> None:
    """Canonical is a fixed point: an id, sent again (any spelling of it), is itself."""
    try:
        page_id = normalize_page_id(raw)
    except InvalidPageIdError:
        return
    assert normalize_page_id(page_id) == page_id
    assert normalize_page_id("/" + unicodedata.normalize("NFD", page_id) + "/") == page_id
    assert validate_page_id(page_id) == page_id
    assert len(page_id) <= MAX_PAGE_ID_LENGTH


def test_validate_refuses_an_id_that_is_not_canonical() -> None:
    with pytest.raises(InvalidPageIdError, match="not canonical"):
        validate_page_id("/blog/")
