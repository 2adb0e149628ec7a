"""The audit log: every reset, set and import, with when, which page, the count before and
after, and which client asked.

An entry is written by the same script that changes the count, on the page's node (a
stream, `vc:audit`; on a Redis Cluster one per bucket, `vc:audit:{b<n>}`), so no change
is ever made without its entry, nor an entry without its change. Each stream keeps about
the last `MAX_ENTRIES` entries (XADD MAXLEN ~). Reads merge every node's (or bucket's)
newest entries by time.

During a move a page is reset on its old owner and then on its new one; the entry is
written with the second, its `old` adding up both (the part the mover has in flight at
that moment is not in it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

AUDIT_KEY = "vc:audit"
MAX_ENTRIES = 10_000  # per stream, about (MAXLEN ~)

# Lua, shared by the ring's and the cluster's reset scripts. After the page was reset: its
# new value, and its audit entry. ARGV from `first`: [value, count on owners reset before
# this one, max entries, then the entry's field and value pairs (none: no entry)]. `old`:
# the count this script deleted.
SET_AND_AUDIT_LUA = """
local function set_and_audit(page_key, top, audit, page, old, first)
  local value = tonumber(ARGV[first])
  if value > 0 then
    redis.call('SET', page_key, value)
    redis.call('ZADD', top, value, page)
  end
  if #ARGV > first + 2 then
    local entry = {}
    for i = first + 3, #ARGV do
      entry[#entry + 1] = ARGV[i]
    end
    entry[#entry + 1] = 'page'
    entry[#entry + 1] = page
    entry[#entry + 1] = 'old'
    entry[#entry + 1] = string.format('%.0f', old + tonumber(ARGV[first + 1]))
    entry[#entry + 1] = 'new'
    entry[#entry + 1] = string.format('%.0f', value)
    redis.call('XADD', audit, 'MAXLEN', '~', ARGV[first + 2], '*', unpack(entry))
  end
end
"""


@dataclass(frozen=True, slots=True)
class PageChange:
    """What a reset leaves on the page, and what it records in the audit log."""

    value: int = 0  # the count after: 0 for a reset, an admin's for a set or an import
    earlier: int = 0  # the page's count on owners reset before this one (during a move)
    action: str = ""  # "reset", "set" or "import"; "" writes no entry
    client: str = ""  # the address of the client that asked
    import_id: str = ""

    def script_args(self) -> list[str | int]:
        """The ARGV tail `SET_AND_AUDIT_LUA` reads."""
        args: list[str | int] = [self.value, self.earlier, MAX_ENTRIES]
        if self.action:
            at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            args += ("at", at, "action", self.action, "client", self.client)
            if self.import_id:
                args += ("import_id", self.import_id)
        return args


NO_CHANGE = PageChange()  # a reset to 0 with no audit entry (a test's, or a mover's)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: str
    action: str
    page_id: str
    old_visits: int
    new_visits: int
    client: str
    import_id: str | None = None
    detail: str | None = None  # an import's summary: what it did to how many pages

    @classmethod
    def of(cls, fields: Mapping[bytes | str, bytes | str]) -> AuditEntry:
        """From a stream entry's fields."""
        text = {_text(name): _text(value) for name, value in fields.items()}
        return cls(
            at=text["at"],
            action=text["action"],
            page_id=text["page"],
            old_visits=int(text["old"]),
            new_visits=int(text["new"]),
            client=text.get("client", ""),
            import_id=text.get("import_id") or None,
            detail=text.get("detail") or None,
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
