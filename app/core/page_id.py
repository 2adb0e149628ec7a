"""Page id validation, shared by every route that takes a page id."""

from __future__ import annotations

import re

from app.core.errors import InvalidPageIdError

MAX_PAGE_ID_LENGTH = 256
PAGE_ID_CHARACTERS = "letters, digits and . _ - ~ :"
PAGE_ID_REGEX = r"[A-Za-z0-9._~:-]{1,256}"  # also the OpenAPI `pattern` of page id parameters
_VALID = re.compile(PAGE_ID_REGEX)


def validate_page_id(page_id: str) -> str:
    """Return `page_id` if it is 1-256 safe characters, else raise InvalidPageIdError."""
    if _VALID.fullmatch(page_id) is not None:
        return page_id
    if not page_id:
        raise InvalidPageIdError("page id must not be empty")
    if len(page_id) > MAX_PAGE_ID_LENGTH:
        raise InvalidPageIdError(
            f"page id is {len(page_id)} characters long; the limit is {MAX_PAGE_ID_LENGTH}"
        )
    raise InvalidPageIdError(f"page id may only contain {PAGE_ID_CHARACTERS}")
