"""Idempotency keys as clients send them: what is accepted, and the 422 for the rest."""

from __future__ import annotations

import pytest

from visit_counter.core.errors import InvalidParameterError
from visit_counter.core.idempotency import MAX_KEY_LENGTH, idempotency_key


@pytest.mark.parametrize(
    "raw",
    ["0f8fad5b-d9cb-469f-a165-70867728950e", "k", "a" * MAX_KEY_LENGTH, "v1:abc_DEF.9~!"],
)
def test_printable_keys_up_to_the_limit_are_accepted_as_they_are(raw: str) -> None:
    assert idempotency_key(raw) == raw
    assert idempotency_key(raw.encode()) == raw, "a raw header value reads the same"


def test_no_key_is_none() -> None:
    assert idempotency_key(None) is None


@pytest.mark.parametrize(
    "raw",
    ["", "a" * (MAX_KEY_LENGTH + 1), "has space", "tab\there", "caf\u00e9", "new\nline"],
    ids=["empty", "too-long", "space", "tab", "non-ascii", "newline"],
)
def test_other_keys_are_a_clear_422(raw: str) -> None:
    with pytest.raises(InvalidParameterError, match="Idempotency-Key must be 1 to 128 printable"):
        idempotency_key(raw)
