"""union_count of raw HLLs read with GET answers what a real server's PFCOUNT answers for
their PFMERGE: HLLs are built with PFADD on the session's independent nodes (sparse, dense
by size, dense by PFDEBUG TODENSE), their raw values are copied onto one reference node, and
that node merges and counts them.

At small counts Redis is exact in registers, not in elements: below ~128 non-zero registers
its estimator answers the number of non-zero registers, so two visitors hashed to the same
register count once (21 distinct elements can give 20). With fewer than 100 distinct
elements the answer is therefore the server's count of non-zero registers, at most the
number of distinct elements.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visit_counter.analytics.hll import HllFormatError, union_count
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.integration

DETERMINISTIC = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

Spec = tuple[int, int, int, bool]  # first element, how many, step, force dense

hll_specs = st.lists(
    st.tuples(
        st.integers(0, 30_000),
        st.sampled_from([0, 1, 7, 60, 400, 1_000, 2_000, 5_000, 15_000]),
        st.integers(1, 3),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)
salts = st.integers(0, 2**32)


@pytest.fixture
def clients(redis_nodes: list[RedisNodeProcess]) -> Iterator[list[redis.Redis]]:
    opened = [redis.Redis(port=node.port) for node in redis_nodes]
    yield opened
    for client in opened:
        client.close()


def pfdebug(client: redis.Redis, subcommand: str, key: str) -> Any:
    return client.execute_command("PFDEBUG", subcommand, key)  # type: ignore[no-untyped-call]


def elements(salt: int, first: int, count: int, step: int = 1) -> list[str]:
    return [f"{salt}:visitor-{i}" for i in range(first, first + count * step, step)]


def build_raws(clients: list[redis.Redis], salt: int, specs: list[Spec]) -> list[bytes]:
    """One HLL per spec, spread over the nodes as the ring would; their raw GET values."""
    raws = []
    for number, (first, count, step, dense) in enumerate(specs):
        client = clients[number % len(clients)]
        key = f"uv:{salt}:{number}"
        client.delete(key)
        client.pfadd(key, *elements(salt, first, count, step))
        if dense:
            pfdebug(client, "TODENSE", key)
        raw = client.get(key)
        assert isinstance(raw, bytes)
        raws.append(raw)
    return raws


def merged_on_server(reference: redis.Redis, raws: list[bytes]) -> tuple[int, list[int]]:
    """PFCOUNT of the PFMERGE of the raw values on one server, and the merge's registers."""
    keys = [f"ref:{number}" for number in range(len(raws))]
    reference.delete("ref:merged", *keys)
    reference.mset(dict(zip(keys, raws, strict=True)))
    reference.pfmerge("ref:merged", *keys)
    registers = pfdebug(reference, "GETREG", "ref:merged")
    return reference.pfcount("ref:merged"), registers


@settings(DETERMINISTIC, max_examples=60)
@given(salt=salts, specs=hll_specs)
def test_union_count_is_pfcount_of_pfmerge(
    clients: list[redis.Redis], salt: int, specs: list[Spec]
) -> None:
    raws = build_raws(clients, salt, specs)
    expected, _ = merged_on_server(clients[0], raws)
    assert union_count(raws) == expected


def test_the_examples_cover_both_encodings(clients: list[redis.Redis]) -> None:
    """PFADD alone makes sparse values of small sets and dense ones of large sets."""
    small, large = build_raws(clients, 7, [(0, 400, 1, False), (0, 15_000, 1, False)])
    assert (small[4], large[4]) == (1, 0)
    assert union_count([small, large]) == merged_on_server(clients[0], [small, large])[0]


@settings(DETERMINISTIC, max_examples=30)
@given(
    salt=salts,
    specs=st.lists(
        st.tuples(st.integers(0, 98), st.integers(0, 40), st.just(1), st.booleans()),
        min_size=1,
        max_size=4,
    ),
)
def test_fewer_than_100_visitors_count_as_the_registers_they_set(
    clients: list[redis.Redis], salt: int, specs: list[Spec]
) -> None:
    specs = [(first, min(count, 99 - first), 1, dense) for first, count, _, dense in specs]
    distinct = len({i for first, count, _, _ in specs for i in range(first, first + count)})
    raws = build_raws(clients, salt, specs)
    expected, registers = merged_on_server(clients[0], raws)
    set_registers = sum(1 for value in registers if value)
    assert union_count(raws) == expected == set_registers <= distinct


def dense_value(registers: list[int]) -> bytes:
    """A dense HLL string: register i is bits 6i..6i+5, little-endian (HLL_DENSE_SET_REGISTER);
    the top bit of the cached cardinality marks the cache invalid."""
    packed = sum(value << (6 * index) for index, value in enumerate(registers))
    return b"HYLL\x00\x00\x00\x00" + bytes(7) + b"\x80" + packed.to_bytes(12288, "little")


@settings(DETERMINISTIC, max_examples=8)
@given(seed=st.integers(0, 2**32), filled=st.sampled_from([0.001, 0.05, 0.5, 1.0]))
def test_registers_too_high_for_sparse_or_pfadd_count_as_on_the_server(
    clients: list[redis.Redis], seed: int, filled: float
) -> None:
    """Values 33..51 (beyond a sparse VAL, and beyond what test-sized PFADDs reach) in every
    position of the 3-byte groups, merged with real PFADD values."""
    rng = random.Random(seed)
    registers = [rng.randint(1, 51) if rng.random() < filled else 0 for _ in range(16384)]
    crafted = dense_value(registers)
    clients[0].set("crafted", crafted)
    assert pfdebug(clients[0], "GETREG", "crafted") == registers
    raws = [crafted, *build_raws(clients, seed, [(0, 300, 1, False), (0, 6_000, 1, False)])]
    assert union_count(raws) == merged_on_server(clients[0], raws)[0]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"HYLX\x01\x00\x00\x00" + bytes(8) + b"\x7f\xff", id="wrong-magic"),
        pytest.param(b"HYLL\x02\x00\x00\x00" + bytes(8) + b"\x7f\xff", id="encoding-2"),
        pytest.param(b"HYLL\x00\x00\x00\x00" + bytes(8 + 12287), id="dense-truncated"),
        pytest.param(b"HYLL\x01\x00\x00\x00" + bytes(8) + b"\x7f\xff\x88", id="sparse-past-end"),
        pytest.param(b"HYLL\x01\x00\x00\x00" + bytes(8) + b"\x7f\xfe", id="sparse-short"),
    ],
)
def test_values_the_server_refuses_are_refused(clients: list[redis.Redis], value: bytes) -> None:
    clients[0].set("bad", value)
    with pytest.raises(redis.ResponseError):
        clients[0].pfmerge("merged", "bad")
    with pytest.raises(HllFormatError):
        union_count([value])
