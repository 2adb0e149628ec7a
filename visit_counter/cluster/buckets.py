"""Buckets: which pages are applied together, and the keys that travel with them.

A script may only touch keys of one hash slot. So each page belongs to one of
`BUCKETS` buckets (by murmur3 of its id), and every key of a bucket carries the
bucket's hash tag, `{b<n>}`: its pages' counts, the writers' applied marks for
them, their reset epochs, their idempotency keys. A batch is applied one bucket
at a time, each in one script call; when the cluster moves a slot to another
node (resharding), the marks, epochs and keys move with the counts they protect.

Why 1,024 buckets rather than one per page's own slot: a script call costs
four commands besides one INCRBY per page, so a flush of 10,000 pages costs
about 14,000 commands over 1,024 buckets, against 40,000 over the pages' ~7,000
distinct slots. 1,024 slots are still spread over any realistic number of
primaries; a cluster moves data by whole buckets.
"""

from __future__ import annotations

from collections.abc import Iterable

import mmh3

from visit_counter.admin.audit import AUDIT_KEY
from visit_counter.services.batch import IDEMPOTENCY_KEY_PREFIX, PAGE_KEY_PREFIX, TOP_KEY

BUCKETS = 1024


def bucket_of(page_id: str) -> int:
    return mmh3.hash(page_id, 0, signed=False) % BUCKETS


def bucket_tag(bucket: int) -> str:
    """`{b<n>}`: the hash tag every key of the bucket carries."""
    return f"{{b{bucket}}}"


def page_key(page_id: str) -> str:
    """`visits:{b<n>}:<page id>`: the ring's key name with the bucket's hash tag."""
    return f"{PAGE_KEY_PREFIX}{bucket_tag(bucket_of(page_id))}:{page_id}"


def idempotency_set_key(page_id: str) -> str:
    """`vc:idem:{b<n>}:<page id>`: the page's idempotency keys (see services/batch.py)."""
    return f"{IDEMPOTENCY_KEY_PREFIX}{bucket_tag(bucket_of(page_id))}:{page_id}"


def applied_key(bucket: int) -> str:
    """The hash of applied marks (writer|node -> seq) for the pages of `bucket`."""
    return f"vc:batches:{bucket_tag(bucket)}"


def top_key(bucket: int) -> str:
    """`vc:top:{b<n>}`: the bucket's pages scored by their counts (see TOP_KEY)."""
    return f"{TOP_KEY}:{bucket_tag(bucket)}"


def audit_key(bucket: int) -> str:
    """`vc:audit:{b<n>}`: the audit log of the bucket's pages (visit_counter/admin/audit.py)."""
    return f"{AUDIT_KEY}:{bucket_tag(bucket)}"


def epochs_key(bucket: int) -> str:
    """The hash of reset epochs (page -> epoch) for the pages of `bucket`."""
    return f"vc:epochs:{bucket_tag(bucket)}"


def group_by_bucket(pages: Iterable[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for page_id in pages:
        groups.setdefault(bucket_of(page_id), []).append(page_id)
    return groups
