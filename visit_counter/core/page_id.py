"""Page ids: URL paths (or any name) made into one canonical id, else a clear 422.

Every route that takes a page id (`…/visit/{page_id}`, `…/visits/{page_id}`, the
pixel and the badge) takes the rest of the path, slashes included, so a site
can count `location.pathname` as it is. The id is, in this order:

1. decoded: the server has already percent-decoded the path (`blog%2Fpost` is
   `blog/post`, `caf%C3%A9` is `café`); a `?` or `#` that arrives encoded ends
   the id (a query or fragment is never part of it);
2. NFC-normalised, so the two ways to spell `é` are one page;
3. runs of `/` made one; the leading `/` dropped (optional); the trailing `/`
   dropped too unless PAGE_ID_TRAILING_SLASH=keep, so `/blog/` and `/blog` do
   not split; the site root (`/`, sent as `…/visit/%2F`) is the id `/`;
4. refused (422) when empty, longer than 512 characters (as sent, or once
   canonical: up to 2,048 bytes of UTF-8), holding a control character (Unicode
   category Cc), or holding a `.` or `..` segment.

An id made only of letters, digits and `._~:-` (every id release 1 accepted) is
left as it is, so its placement and key never change; the hot path checks for
that first and skips the rest.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection

from visit_counter.core.errors import InvalidPageIdError

MAX_PAGE_ID_LENGTH = 512  # characters (code points), as JSON Schema's maxLength counts
ROOT_PAGE_ID = "/"
PAGE_ID_RULES = (
    f"a URL path or name of at most {MAX_PAGE_ID_LENGTH} characters, without control "
    "characters or '.'/'..' segments"
)
_CHARACTERS = r"[^\x00-\x1f\x7f-\x9f]"  # not Cc (ECMA-262 and Python alike)
_DOT_SEGMENT = r"^[^?#]*(^|/)\.{1,2}(/|[?#]|$)"


def page_id_schema(suffix: str = "") -> dict[str, object]:
    """The rules as JSON Schema for the OpenAPI document (what a client may send), with a
    file suffix after the id for the pixel and the badge."""
    return {
        "minLength": 1 + len(suffix),
        "maxLength": MAX_PAGE_ID_LENGTH + len(suffix),
        "pattern": f"^{_CHARACTERS}+{re.escape(suffix)}$",
        "not": {"pattern": _DOT_SEGMENT},
    }


_PLAIN = re.compile(r"[A-Za-z0-9._~:-]{1,256}")  # release 1's ids: canonical as they are
_PLAIN_LINES = re.compile(r"(?:[A-Za-z0-9._~:-]{1,256}\n)*")  # `_PLAIN` ids, one per line
_SLASHES = re.compile(r"/{2,}")


def normalize_page_id(raw: str, *, keep_trailing_slash: bool = False) -> str:
    """The canonical id of `raw` (see the module docstring); InvalidPageIdError if none."""
    if _PLAIN.fullmatch(raw) is not None and raw not in (".", ".."):
        return raw
    if not raw:
        raise InvalidPageIdError("page id must not be empty")
    if len(raw) > MAX_PAGE_ID_LENGTH:
        raise InvalidPageIdError(
            f"page id is {len(raw)} characters long; the limit is {MAX_PAGE_ID_LENGTH}"
        )
    text = raw.split("?", 1)[0].split("#", 1)[0]
    text = _SLASHES.sub("/", unicodedata.normalize("NFC", text))
    text = text.removeprefix("/")
    if not keep_trailing_slash:
        text = text.removesuffix("/")
    if not text:
        return ROOT_PAGE_ID
    if any(unicodedata.category(char) == "Cc" for char in text):
        raise InvalidPageIdError("page id must not hold control characters")
    if any(segment in (".", "..") for segment in text.split("/")):
        raise InvalidPageIdError("page id must not hold '.' or '..' segments")
    if len(text) > MAX_PAGE_ID_LENGTH:  # NFC lengthened it
        raise InvalidPageIdError(
            f"page id is {len(text)} characters long; the limit is {MAX_PAGE_ID_LENGTH}"
        )
    return text


def all_canonical(page_ids: Collection[str]) -> bool:
    """Whether every id is a plain one, canonical as it is: one regex pass for them all
    (batch ingest), where `normalize_page_id` would be one call per id. False says
    nothing: ask `normalize_page_id` then."""
    if "." in page_ids or ".." in page_ids:
        return False
    return _PLAIN_LINES.fullmatch("\n".join(page_ids) + "\n") is not None


def validate_page_id(page_id: str) -> str:
    """`page_id` itself when it is canonical (e.g. read back from a journal), else 422."""
    canonical = normalize_page_id(page_id, keep_trailing_slash=True)
    if canonical != page_id:
        raise InvalidPageIdError(f"page id {page_id!r} is not canonical ({canonical!r})")
    return page_id
