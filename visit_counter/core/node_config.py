"""Node settings that silently lose counts: an evicting memory policy, no persistence.

Pure: `config_warnings` judges values already read from a node (see
`RedisManager`), so the rule is tested without a server and applied to the
compose file's command line as well as to live nodes.

Our keys (`visits:*`, `vc:*`) never have a TTL, so the `volatile-*` policies
never evict them (a full node refuses writes instead, and the flush is retried);
`noeviction` likewise. Any other policy (`allkeys-*`) may delete a count.
A node with neither AOF nor RDB snapshots loses every count when it restarts.
"""

from __future__ import annotations

SAFE_POLICY_PREFIXES = ("noeviction", "volatile-")
UNKNOWN = "configuration unknown"


def config_warnings(
    maxmemory_policy: str | None, aof_enabled: bool | None, save: str | None
) -> list[str]:
    """What in a node's configuration can lose counts; empty when nothing can.

    None stands for a value the node would not tell (CONFIG disabled or renamed):
    the result then says the configuration is unknown instead of guessing.
    """
    warnings: list[str] = []
    if maxmemory_policy is None:
        warnings.append(f"{UNKNOWN}: maxmemory-policy cannot be read (CONFIG unavailable)")
    elif not maxmemory_policy.startswith(SAFE_POLICY_PREFIXES):
        warnings.append(
            f"maxmemory-policy {maxmemory_policy} can evict counts "
            "(use noeviction or a volatile-* policy)"
        )
    rdb_enabled = None if save is None else bool(save.strip())
    if aof_enabled or rdb_enabled:
        pass  # one of them is on: enough
    elif aof_enabled is False and rdb_enabled is False:
        warnings.append(
            "no persistence: AOF and RDB snapshots are both off, a restart loses every count"
        )
    else:
        warnings.append(f"{UNKNOWN}: persistence cannot be read (CONFIG or INFO unavailable)")
    return warnings
