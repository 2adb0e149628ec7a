"""One-pass RESP packing sends exactly the bytes redis-py's own packing sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from visit_counter.core.resp import OnePassConnection, one_pass, pack_command

ARGUMENTS = st.lists(
    st.one_of(
        st.text(max_size=20),
        st.binary(max_size=20),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=30,
)
NAMES = st.sampled_from(["EVALSHA", "SET", "CONFIG GET", b"SCRIPT LOAD", b"HSET"])


def redis_py(*args: object) -> bytes:
    return b"".join(Connection().pack_command(*args))


@given(name=NAMES, arguments=ARGUMENTS)
def test_a_connection_packs_what_redis_py_packs(name: str | bytes, arguments: list[object]) -> None:
    assert b"".join(OnePassConnection().pack_command(name, *arguments)) == redis_py(
        name, *arguments
    )


def test_large_values_and_memoryviews_are_packed_whole() -> None:
    value = b"x" * 100_000
    args = ("SET", "key", memoryview(value), "y" * 7_000)
    assert b"".join(OnePassConnection().pack_command(*args)) == redis_py(*args)


def test_what_redis_py_refuses_is_refused() -> None:
    with pytest.raises(DataError):
        OnePassConnection().pack_command("SET", "key", None)


@given(arguments=st.lists(st.one_of(st.text(max_size=20), st.integers()), max_size=30))
def test_a_cluster_command_packs_as_redis_py_does(arguments: list[str | int]) -> None:
    command = ("EVALSHA", *arguments)
    assert pack_command(command) == redis_py(*command)


def test_each_redis_py_connection_class_has_its_one_pass_variant() -> None:
    for plain in (Connection, SSLConnection, UnixDomainSocketConnection):
        variant = one_pass(plain)
        assert variant is not plain
        assert issubclass(variant, plain)
    assert one_pass(OnePassConnection) is OnePassConnection
