"""Visitor ids for analytics: who came back today, without storing who anyone is.

A visitor id is 16 hex characters (64 bits) of BLAKE2b keyed with the day's salt, over the
client's address and User-Agent. The same browser at the same address gets the same id all
day, a different one the next day, and the address itself is never stored: not in the id,
not in this object.

The salt of a UTC day is HMAC-SHA256(VISITOR_SALT_SECRET, "YYYY-MM-DD"). Every worker and
every instance holding the same secret computes the same salt for the same day with no
coordination (no shared store, no clock beyond the UTC date), so a visitor keeps one id
across them. Only the current day's salt is held, in memory; past salts are never kept.

What that protects, and what it does not:
- Without the secret, an id cannot be linked to an address, not even by trying all 2^32
  IPv4 addresses: the salt is a 256-bit key. Nor can ids of different days be linked.
- With the secret, anyone can recompute the salt of any day, past or future, and then test
  guessed addresses and User-Agents against stored ids. Keep VISITOR_SALT_SECRET as secret
  as ADMIN_TOKEN. Replacing it (or removing it) makes every earlier id unlinkable for good.
- VISITOR_SALT_SECRET empty (the default): each process draws a random secret when it
  starts and forgets it when it stops. Past ids then cannot be recomputed by anyone, but
  the same visitor gets a different id in each worker (`--workers N`), in each instance and
  after every restart, so visitors are overcounted. Set it whenever more than one process
  serves the same site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, date, datetime

from visit_counter.core.config import Settings

# 16 hex characters. Two of a million visitors in one day share an id with odds ~1 in 37 million.
ID_BYTES = 8
RANDOM_SECRET_BYTES = 32
# The string encoding of the inputs: UTF-8, keeping lone surrogates (a header decoded oddly)
# distinct instead of failing.
TEXT_ENCODING = "utf-8"
TEXT_ERRORS = "surrogatepass"


class VisitorIds:
    """Computes visitor ids; holds the secret and the current day's salt, nothing else."""

    def __init__(self, secret: str = "") -> None:
        """`secret` empty: a random one for this object (see the module docstring)."""
        self._configured = bool(secret)
        self._secret = (
            secret.encode(TEXT_ENCODING, TEXT_ERRORS)
            if secret
            else secrets.token_bytes(RANDOM_SECRET_BYTES)
        )
        # (UTC day, its salt), replaced in one assignment so no reader pairs a day with
        # another day's salt.
        self._day_salt: tuple[date, bytes] | None = None

    def __repr__(self) -> str:
        kind = "configured" if self._configured else "random per process"
        return f"VisitorIds(secret={kind})"

    @property
    def shared_between_processes(self) -> bool:
        """True when the secret was configured, so other processes with it give the same ids."""
        return self._configured

    def visitor_id(self, client_host: str, user_agent: str, now: datetime | None = None) -> str:
        """The id of (`client_host`, `user_agent`) on `now`'s UTC day (default: today).

        `now` must be timezone-aware: a naive datetime could mean any day near midnight.
        """
        digest = hashlib.blake2b(
            _message(client_host, user_agent),
            key=self._salt_of(_utc_day(now)),
            digest_size=ID_BYTES,
        )
        return digest.hexdigest()

    def _salt_of(self, day: date) -> bytes:
        held = self._day_salt
        if held is not None and held[0] == day:
            return held[1]
        salt = hmac.digest(self._secret, day.isoformat().encode(), hashlib.sha256)
        self._day_salt = (day, salt)  # the previous day's salt is dropped, never kept
        return salt


def _utc_day(now: datetime | None) -> date:
    if now is None:
        return datetime.now(UTC).date()
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).date()


def _message(client_host: str, user_agent: str) -> bytes:
    # The host's length first, so no (host, User-Agent) pair reads as another.
    host = client_host.encode(TEXT_ENCODING, TEXT_ERRORS)
    return len(host).to_bytes(4, "big") + host + user_agent.encode(TEXT_ENCODING, TEXT_ERRORS)


def visitor_ids_for(settings: Settings) -> VisitorIds:
    """The ids VISITOR_SALT_SECRET asks for (empty: a random secret for this process)."""
    return VisitorIds(settings.visitor_salt_secret.get_secret_value())
