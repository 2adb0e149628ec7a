"""The dashboard's session cookie: what a browser holds instead of ADMIN_TOKEN.

`POST /dashboard/login` exchanges the token for this cookie once, and every admin check
(`require_admin`, `has_admin_access`) accepts it beside the bearer header. Its value is
derived from the token, never the token itself: HMAC-SHA256 of a fixed label keyed with
the token, in hex. So the service keeps no session state (every worker and instance
agrees on the value without sharing anything), a stolen cookie does not reveal the token
or open anything the token does not, and changing ADMIN_TOKEN logs every browser out.
Logging out removes the browser's copy; a copied value stays good until the token changes,
as a copied token would.

The cookie is ignored on requests a browser marks as coming from another origin
(`Sec-Fetch-Site: cross-site` or `same-site`): SameSite=Strict keeps other sites' requests
from carrying it, and this keeps a page on a sibling origin (say a blog listed in
CORS_ALLOW_ORIGINS, whose requests may carry credentials) from using it either.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from pydantic import SecretStr

COOKIE_NAME = "visit_counter_dashboard"
# Changing the label invalidates every cookie issued, as changing the token does.
_LABEL = b"visit-counter dashboard session v1"
_FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})


def session_value(token: SecretStr) -> str:
    """The cookie's value for this token (the token must be set)."""
    key = token.get_secret_value().encode("ascii")  # Settings allows printable ASCII only
    return hmac.new(key, _LABEL, hashlib.sha256).hexdigest()


def session_matches(cookie: str | None, token: SecretStr) -> bool:
    """Whether `cookie` is the session value of `token`, compared in constant time.

    False when no token is set: without one there are no sessions (and none needed).
    """
    if not token.get_secret_value() or cookie is None:
        return False
    return hmac.compare_digest(cookie.encode("utf-8"), session_value(token).encode("ascii"))


def session_cookie_of(cookies: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The session cookie this request may use, or None (absent, or sent by another origin)."""
    if headers.get("sec-fetch-site", "").lower() in _FOREIGN_FETCH_SITES:
        return None
    return cookies.get(COOKIE_NAME)
