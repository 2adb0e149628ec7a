"""The cardinality of the union of Redis HyperLogLogs that live on different servers.

Why: a page's visitors of one day are a HyperLogLog (`PFADD`) on each ring node that took
some of its visits. The nodes are independent servers, not a cluster, so `PFMERGE` cannot
combine them without first copying keys onto one node (a write, on a read path). Instead the
service reads each raw value with `GET` and `union_count` computes here what `PFCOUNT` of
their `PFMERGE` would answer: the same registers (the maximum of each register over all the
values) and the same estimator give the same integer.

Format facts, from redis/redis `src/hyperloglog.c` (unchanged from 5.0 to 7.x):

- Header, 16 bytes: `b"HYLL"`, one encoding byte (0 dense, 1 sparse; anything else is not an
  HLL), 3 unused bytes, 8 bytes of cached cardinality (ignored: it is only a cache).
- 2**14 = 16384 registers (HLL_P = 14), each holding a run length of 1..HLL_Q + 1 = 51.
- Dense: exactly 12288 bytes of 6-bit registers, packed little-endian: register i is bits
  6*i .. 6*i + 5 of the byte string read as one little-endian number (HLL_DENSE_GET_REGISTER),
  so every 3 bytes hold 4 registers.
- Sparse: opcodes that must cover exactly 16384 registers (else Redis answers "Corrupted
  HLL object"): ZERO `00xxxxxx` = xxxxxx + 1 zero registers; XZERO `01xxxxxx yyyyyyyy` =
  (xxxxxx << 8 | yyyyyyyy) + 1 zero registers; VAL `1vvvvvxx` = xx + 1 registers of value
  vvvvv + 1.
- Estimator (`hllCount`, Ertl, arXiv:1702.01284): from the histogram of register values,
  z = m * tau((m - h[51]) / m), then for j = 50 .. 1: z = (z + h[j]) / 2, then
  z += m * sigma(h[0] / m); answer llround(alpha_inf * m * m / z), alpha_inf = 0.5 / ln 2.
  The arithmetic below is the C code's, in the same order, in IEEE doubles.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

__all__ = ["HllFormatError", "union_count"]

_MAGIC = b"HYLL"
_HEADER_BYTES = 16
_DENSE, _SPARSE = 0, 1
_P = 14
_Q = 64 - _P
_REGISTERS = 1 << _P
_DENSE_BYTES = _REGISTERS * 6 // 8
_ALPHA_INF = 0.721347520444481703680

# Registers are kept one per byte in a big int ("lanes"); values are < 64, so bit 6 of every
# lane is free for a branch-free lane-wise maximum over the whole HLL at once.
_LANE_BIT6 = int.from_bytes(b"\x40" * _REGISTERS, "little")
_LANE_BIT0 = int.from_bytes(b"\x01" * _REGISTERS, "little")

# Byte tables for unpacking dense registers; per 3 bytes b0 b1 b2 the 4 registers are
# b0 & 63, b0 >> 6 | (b1 & 15) << 2, b1 >> 4 | (b2 & 3) << 4, and b2 >> 2.
_LOW6 = bytes(b & 0x3F for b in range(256))
_HIGH2 = bytes(b >> 6 for b in range(256))
_LOW4_UP2 = bytes((b & 0x0F) << 2 for b in range(256))
_HIGH4 = bytes(b >> 4 for b in range(256))
_LOW2_UP4 = bytes((b & 0x03) << 4 for b in range(256))
_HIGH6 = bytes(b >> 2 for b in range(256))

# Sparse VAL opcode 1vvvvvxx -> its xx + 1 registers of value vvvvv + 1 (None: not a VAL).
_VAL_FILL = [
    bytes(((op >> 2 & 0x1F) + 1,)) * ((op & 3) + 1) if op & 0x80 else None for op in range(256)
]


class HllFormatError(ValueError):
    """A value is not a valid Redis HyperLogLog string."""


def union_count(values: Iterable[bytes]) -> int:
    """What `PFCOUNT` answers for the `PFMERGE` of these raw HLL values (0 for none)."""
    return registers_count(union_registers(values))


def union_registers(values: Iterable[bytes]) -> int:
    """The registers of the union of these raw HLL values, packed one per byte into an int:
    what `registers_count` counts and `max_registers` merges further, so a union of unions
    decodes every value once."""
    lanes = 0
    for number, value in enumerate(values):
        lanes = _lane_max(lanes, int.from_bytes(_registers(value, number), "little"))
    return lanes


def max_registers(a: int, b: int) -> int:
    """The union of two `union_registers` results."""
    return _lane_max(a, b)


def registers_count(lanes: int) -> int:
    """What `PFCOUNT` answers for a sketch with these registers (`union_registers`)."""
    registers = lanes.to_bytes(_REGISTERS, "little")
    histogram = [registers.count(v) for v in range(_Q + 2)]
    if sum(histogram) != _REGISTERS:  # never written by PFADD; hllCount would skip it silently
        raise HllFormatError(f"a dense register holds a value above {_Q + 1}")
    return _estimate(histogram)


def _registers(value: bytes, number: int) -> bytes:
    """The 16384 registers of one raw value, one byte each, in register order."""
    if not isinstance(value, bytes | bytearray):
        raise HllFormatError(f"value #{number}: expected bytes, got {type(value).__name__}")
    if len(value) < _HEADER_BYTES or value[:4] != _MAGIC:
        raise HllFormatError(f"value #{number}: not a Redis HLL (no 16-byte 'HYLL' header)")
    encoding, body = value[4], bytes(value[_HEADER_BYTES:])
    if encoding == _DENSE:
        if len(body) != _DENSE_BYTES:
            raise HllFormatError(
                f"value #{number}: dense HLL with {len(body)} register bytes, "
                f"expected {_DENSE_BYTES}"
            )
        return _dense_registers(body)
    if encoding == _SPARSE:
        return _sparse_registers(body, number)
    raise HllFormatError(f"value #{number}: unknown HLL encoding byte {encoding}")


def _dense_registers(body: bytes) -> bytes:
    b0, b1, b2 = body[0::3], body[1::3], body[2::3]
    registers = bytearray(_REGISTERS)
    registers[0::4] = b0.translate(_LOW6)
    registers[1::4] = _bit_or(b0.translate(_HIGH2), b1.translate(_LOW4_UP2))
    registers[2::4] = _bit_or(b1.translate(_HIGH4), b2.translate(_LOW2_UP4))
    registers[3::4] = b2.translate(_HIGH6)
    return bytes(registers)


def _bit_or(left: bytes, right: bytes) -> bytes:
    both = int.from_bytes(left, "little") | int.from_bytes(right, "little")
    return both.to_bytes(len(left), "little")


def _sparse_registers(body: bytes, number: int) -> bytes:
    registers = bytearray(_REGISTERS)
    index = position = 0
    while position < len(body):
        opcode = body[position]
        fill = _VAL_FILL[opcode]
        if fill is not None:  # VAL 1vvvvvxx
            run = len(fill)
            registers[index : index + run] = fill
            position += 1
        elif opcode & 0x40:  # XZERO 01xxxxxx yyyyyyyy
            if position + 1 == len(body):
                raise HllFormatError(f"value #{number}: sparse HLL ends inside an XZERO opcode")
            run = ((opcode & 0x3F) << 8 | body[position + 1]) + 1
            position += 2
        else:  # ZERO 00xxxxxx
            run = (opcode & 0x3F) + 1
            position += 1
        index += run
        if index > _REGISTERS:
            raise HllFormatError(
                f"value #{number}: sparse HLL opcodes run past {_REGISTERS} registers "
                f"(opcode ending at byte {_HEADER_BYTES + position})"
            )
    if index != _REGISTERS:
        raise HllFormatError(
            f"value #{number}: sparse HLL opcodes cover {index} of {_REGISTERS} registers"
        )
    return bytes(registers)


def _lane_max(a: int, b: int) -> int:
    """Lane-wise max: a lane of (a | 64) - b keeps bit 6 iff a >= b, and never borrows."""
    a_wins = (((a | _LANE_BIT6) - b) >> 6) & _LANE_BIT0
    return b ^ ((a ^ b) & ((a_wins << 6) - a_wins))


def _estimate(histogram: list[int]) -> int:
    m = float(_REGISTERS)
    z = m * _tau((m - histogram[_Q + 1]) / m)
    for j in range(_Q, 0, -1):
        z += histogram[j]
        z *= 0.5
    z += m * _sigma(histogram[0] / m)
    estimate = _ALPHA_INF * m * m / z
    whole = math.floor(estimate)  # llroundl: halves round away from zero
    return whole + 1 if estimate - whole >= 0.5 else whole


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_prime = z
        z += x * y
        y += y
        if z_prime == z:
            return z


def _tau(x: float) -> float:
    if x in (0.0, 1.0):
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_prime = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y  # float ** is C pow(), as in hllTau
        if z_prime == z:
            return z / 3.0
