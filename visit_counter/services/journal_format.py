"""One journal record per line, with a checksum, so damage is found instead of guessed at.

A record is one line of bytes:

    <crc> <json>\\n      e.g.  5b1d0c3e {"writer":"h-41-9f2c","seq":3,"node":"redis://...","inc":{...}}

`<crc>` is the CRC-32 (zlib's, as in gzip) of the exact UTF-8 bytes of `<json>`,
written as 8 lowercase hex digits; one space separates it from the JSON; the
newline ends the record. A flipped bit anywhere in the JSON (a digit that still
parses, say) fails the check, and so does a record cut short. Computing it costs
one `zlib.crc32` per journal write, next to an fsync.

Files written before records had checksums hold bare JSON lines. A line that
starts with `{` is read as that old format, unchecked, as before, so a journal
left by the previous release still replays.

A damaged line may end with an intact record glued behind it (a lost newline, or
a cut-off write the next record was appended to): `split_damaged` finds such a
record by its checksum, so it is not lost with the damage in front of it.
"""

from __future__ import annotations

import re
import zlib

_CHECKSUM_DIGITS = 8
_HEX = frozenset(b"0123456789abcdef")
_RECORD_START = re.compile(rb"[0-9a-f]{8} \{")
_BATCH_HEAD = re.compile(rb'"writer":"([^"]{1,200})","seq":([0-9]{1,19}),"node":"([^"]{0,500})(")?')
_ACK = re.compile(rb'"ack":\s*\[\s*"([^"]{1,200})"\s*,\s*([0-9]{1,19})\s*,\s*"([^"]{1,500})"')
_COUNT_EPOCH = re.compile(rb":\[([0-9]{1,19}),[0-9]{1,19}\]")


class DamagedRecordError(ValueError):
    """A line that is not a whole record with a matching checksum."""


def encode_record(json_text: str) -> bytes:
    """The line for a record: checksum, space, JSON, newline."""
    body = json_text.encode()
    return b"%08x %b\n" % (zlib.crc32(body), body)


def record_text(raw: bytes) -> str:
    """The JSON text of one line (its newline may be missing), checksum verified.

    Old lines (no checksum, starting with `{`) come back unchecked.
    Raises DamagedRecordError for anything else.
    """
    line = raw[:-1] if raw.endswith(b"\n") else raw
    if line.startswith(b"{"):
        return _decode(line)
    if (
        len(line) <= _CHECKSUM_DIGITS + 1
        or line[_CHECKSUM_DIGITS] != ord(" ")
        or not _HEX.issuperset(line[:_CHECKSUM_DIGITS])
    ):
        raise DamagedRecordError("no checksum")
    body = line[_CHECKSUM_DIGITS + 1 :]
    if zlib.crc32(body) != int(line[:_CHECKSUM_DIGITS], 16):
        raise DamagedRecordError("checksum mismatch")
    return _decode(body)


def split_damaged(raw: bytes) -> tuple[int, str | None]:
    """For a damaged line: how many leading bytes are lost, and the intact record after them.

    Only a record with a valid checksum that runs to the end of the line is taken
    (never an old-format one: nothing would vouch for it); else the whole line is lost.
    """
    for match in _RECORD_START.finditer(raw, 1):
        try:
            return match.start(), record_text(raw[match.start() :])
        except DamagedRecordError:
            continue
    return len(raw), None


def describe_damaged(raw: bytes) -> tuple[str, int | None]:
    """Best effort, from the bytes as they are: what a damaged line seems to have held.

    Returns a description ("batch <writer>/<seq> for <node>", "acknowledgement of
    batch ...", "unrecognisable") and the visits its increments add up to as
    written (None when none could be made out). Nothing here is verified.
    """
    head = _BATCH_HEAD.search(raw)
    if head is not None:
        writer, seq, node = (part.decode(errors="replace") for part in head.groups()[:3])
        node += "" if head.group(4) else "..."  # cut short
        counts = _COUNT_EPOCH.findall(raw, head.end())
        visits = sum(int(count) for count in counts) if counts else None
        return f"batch {writer}/{seq} for {node}", visits
    ack = _ACK.search(raw)
    if ack is not None:
        writer, seq, node = (part.decode(errors="replace") for part in ack.groups())
        return f"acknowledgement of batch {writer}/{seq} for {node}", None
    return "unrecognisable", None


def _decode(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError as exc:
        raise DamagedRecordError("not UTF-8") from exc
