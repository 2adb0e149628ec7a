"""Idempotency keys: a client's name for one visit, so a retried request counts once (G10).

A key comes in the `Idempotency-Key` header, or, for `navigator.sendBeacon`, which
cannot set headers, in the `idempotency_key` query parameter (the snippet sends a
new one per page load). It rides with its visit to the page's node, where the
batch script records it in the page's key set and drops the visit if the key was
there already (`visit_counter/services/batch.py`). Nothing about keys is looked up on the
hot path: a repeat is only known once it reaches the node, so answering it never
waits on Redis.
"""

from __future__ import annotations

import re

from visit_counter.core.errors import InvalidParameterError

MAX_KEY_LENGTH = 128
HEADER = "Idempotency-Key"
QUERY_PARAMETER = "idempotency_key"
KEY_RULES = f"1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces (a UUID fits)"
# Printable ASCII without space: a key is written unescaped in the visit log's lines.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def key_schema() -> dict[str, object]:
    """The rules as JSON Schema, for the OpenAPI document (`idempotency_key` enforces them)."""
    return {
        "pattern": f"^[!-~]{{1,{MAX_KEY_LENGTH}}}$",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
    }


def idempotency_key(raw: str | bytes | None) -> str | None:
    """The key a request carries, or None; InvalidParameterError when it breaks the rules."""
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    if _KEY.fullmatch(text) is None:
        raise InvalidParameterError(f"{HEADER} must be {KEY_RULES}")
    return text
