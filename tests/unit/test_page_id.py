"""Page id validation: 1-256 characters from a URL-safe set, else a clear 422."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.errors import CounterError, InvalidPageIdError
from app.core.page_id import validate_page_id

ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~:-"
DETERMINISTIC = settings(derandomize=True, database=None, deadline=None)


@pytest.mark.parametrize(
    "page_id",
    [
        pytest.param("a", id="one-char"),
        pytest.param("home", id="word"),
        pytest.param("Blog_2024-01-01.v2~draft:7", id="every-punctuation"),
        pytest.param("0", id="digit"),
        pytest.param("x" * 256, id="256-chars"),
        pytest.param(":" * 256, id="256-punctuation"),
    ],
)
def test_accepts_safe_ids_up_to_256_characters(page_id: str) -> None:
    assert validate_page_id(page_id) == page_id


@pytest.mark.parametrize(
    ("page_id", "fragments"),
    [
        pytest.param("", ["empty"], id="empty"),
        pytest.param("x" * 257, ["257", "256"], id="257-chars"),
        pytest.param("x" * 10_000, ["10000", "256"], id="very-long"),
        pytest.param("a b", ["may only contain", "letters, digits"], id="space"),
        pytest.param(" ", ["may only contain"], id="only-space"),
        pytest.param("a/b", ["may only contain"], id="slash"),
        pytest.param("../etc", ["may only contain"], id="traversal"),
        pytest.param("caf\u00e9", ["may only contain"], id="unicode-letter"),
        pytest.param("\u0661\u0662", ["may only contain"], id="unicode-digits"),
        pytest.param("100%", ["may only contain"], id="percent"),
        pytest.param("a%2Fb", ["may only contain"], id="percent-encoded"),
        pytest.param("page\n", ["may only contain"], id="trailing-newline"),
        pytest.param("a\x00b", ["may only contain"], id="nul"),
        pytest.param("a?b=c", ["may only contain"], id="query"),
    ],
)
def test_rejects_bad_ids_with_a_message_saying_what_is_wrong(
    page_id: str, fragments: list[str]
) -> None:
    with pytest.raises(InvalidPageIdError) as caught:
        validate_page_id(page_id)

    error = caught.value
    assert isinstance(error, CounterError)
    assert error.status_code == 422
    assert error.code == "invalid_page_id"
    assert error.message == str(error)
    for fragment in fragments:
        assert fragment in error.message


def test_the_character_message_lists_every_allowed_punctuation_mark() -> None:
    with pytest.raises(InvalidPageIdError) as caught:
        validate_page_id("a b")

    for mark in "._-~:":
        assert mark in caught.value.message


@DETERMINISTIC
@given(st.text(alphabet=ALLOWED, min_size=1, max_size=256))
def test_any_id_from_the_safe_alphabet_is_accepted(page_id: str) -> None:
    assert validate_page_id(page_id) == page_id


@DETERMINISTIC
@given(
    st.text(alphabet=ALLOWED, max_size=100),
    st.characters().filter(lambda char: char not in ALLOWED),
    st.text(alphabet=ALLOWED, max_size=100),
)
def test_any_id_with_one_unsafe_character_is_rejected(prefix: str, bad: str, suffix: str) -> None:
    with pytest.raises(InvalidPageIdError) as caught:
        validate_page_id(prefix + bad + suffix)
    assert caught.value.status_code == 422
