"""union_count refuses what is not a Redis HLL string, says why, and counts nothing as 0.

The values are built by hand from the format in redis/redis src/hyperloglog.c: a 16-byte
header ("HYLL", encoding 0 dense / 1 sparse, 3 unused bytes, 8 bytes of cached cardinality)
then 12288 bytes of 6-bit registers (dense) or ZERO / XZERO / VAL opcodes that cover exactly
16384 registers (sparse). Agreement with a real server is tests/integration/test_hll_union.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from visit_counter.analytics.hll import HllFormatError, union_count

SPARSE = b"HYLL\x01\x00\x00\x00" + bytes(8)
DENSE = b"HYLL\x00\x00\x00\x00" + bytes(8)
XZERO_ALL = b"\x7f\xff"  # 01xxxxxx yyyyyyyy: 0x3fff + 1 = 16384 zero registers
XZERO_16383 = b"\x7f\xfe"
VAL_3_ONCE = b"\x88"  # 1vvvvvxx: value 0b00010 + 1 = 3, run 0b00 + 1 = 1

EMPTY_SPARSE = SPARSE + XZERO_ALL  # what PFADD makes for a new key
EMPTY_DENSE = DENSE + bytes(12288)


def test_no_values_count_zero() -> None:
    assert union_count([]) == 0


def test_only_empty_hlls_count_zero() -> None:
    assert union_count([EMPTY_SPARSE, EMPTY_DENSE, EMPTY_SPARSE]) == 0


def test_one_register_set_counts_one_in_either_encoding() -> None:
    sparse = SPARSE + VAL_3_ONCE + XZERO_16383
    dense = DENSE + bytes([3]) + bytes(12287)  # register 0 is the low 6 bits of byte 0
    assert union_count([sparse]) == union_count([dense]) == 1
    assert union_count([sparse, dense, EMPTY_SPARSE]) == 1


def test_values_may_come_from_a_generator() -> None:
    def values() -> Iterator[bytes]:
        yield EMPTY_SPARSE
        yield SPARSE + VAL_3_ONCE + XZERO_16383

    assert union_count(values()) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(b"", "no 16-byte 'HYLL' header", id="empty-string"),
        pytest.param(b"HYLL\x01\x00\x00", "no 16-byte 'HYLL' header", id="short-header"),
        pytest.param(b"HYLX" + EMPTY_SPARSE[4:], "no 16-byte 'HYLL' header", id="wrong-magic"),
        pytest.param(b"hyll" + EMPTY_SPARSE[4:], "no 16-byte 'HYLL' header", id="lowercase-magic"),
        pytest.param(b"HYLL\x02" + EMPTY_SPARSE[5:], "unknown HLL encoding byte 2", id="enc-2"),
        pytest.param(b"HYLL\xff" + EMPTY_DENSE[5:], "unknown HLL encoding byte 255", id="enc-raw"),
        pytest.param(EMPTY_DENSE[:-1], "12287 register bytes, expected 12288", id="dense-short"),
        pytest.param(EMPTY_DENSE + b"\x00", "12289 register bytes", id="dense-long"),
        pytest.param(DENSE, "0 register bytes", id="dense-no-registers"),
        pytest.param(SPARSE, "cover 0 of 16384 registers", id="sparse-no-opcodes"),
        pytest.param(SPARSE + XZERO_16383, "cover 16383 of 16384", id="sparse-short"),
        pytest.param(SPARSE + XZERO_ALL + b"\x00", "run past 16384", id="sparse-zero-past"),
        pytest.param(SPARSE + XZERO_ALL + VAL_3_ONCE, "run past 16384", id="sparse-val-past"),
        pytest.param(SPARSE + XZERO_16383 + b"\x8b", "run past 16384", id="val-run-4-past"),
        pytest.param(SPARSE + XZERO_ALL + XZERO_ALL, "run past 16384", id="sparse-xzero-past"),
        pytest.param(SPARSE + XZERO_16383 + b"\x40", "inside an XZERO", id="truncated-xzero"),
        pytest.param(
            DENSE + b"\xff" * 12288, "a dense register holds a value above 51", id="regs-63"
        ),
    ],
)
def test_malformed_values_are_refused_with_the_reason(value: bytes, message: str) -> None:
    with pytest.raises(HllFormatError, match=message):
        union_count([EMPTY_SPARSE, value])


def test_the_error_names_which_value_is_bad() -> None:
    with pytest.raises(HllFormatError, match=r"value #2: "):
        union_count([EMPTY_SPARSE, EMPTY_DENSE, b"not an hll at all"])


def test_a_missing_key_is_refused_not_counted() -> None:
    """GET of a missing key is None; skipping it is the caller's decision, not a silent 0."""
    with pytest.raises(HllFormatError, match="expected bytes, got NoneType"):
        union_count([EMPTY_SPARSE, None])  # type: ignore[list-item]


def test_the_error_is_a_value_error() -> None:
    assert issubclass(HllFormatError, ValueError)
