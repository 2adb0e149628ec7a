"""The answers' timestamps: the seed's format, and right across second boundaries."""

from __future__ import annotations

from datetime import UTC, datetime

from visit_counter.core.timestamps import TimestampClock


def test_a_timestamp_is_what_datetime_would_write_for_the_same_instant() -> None:
    instants = [1795490725.0, 1795490725.000001, 1795490725.5, 1795490725.999999, 1795490726.25]
    readings = iter(instants)
    clock = TimestampClock(lambda: next(readings))

    written = [clock.now() for _ in instants]

    expected = [
        datetime.fromtimestamp(instant, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for instant in instants
    ]
    # Floats carry microseconds only approximately: allow the last digit to differ by one.
    for mine, theirs in zip(written, expected, strict=True):
        assert mine[:20] == theirs[:20], "the second, formatted again when it changes"
        assert abs(int(mine[20:26]) - int(theirs[20:26])) <= 1
        assert mine.endswith("Z")
    assert written[-1].startswith(expected[-1][:19])


def test_the_real_clock_reads_now() -> None:
    read = datetime.fromisoformat(TimestampClock().now())

    assert abs((datetime.now(UTC) - read).total_seconds()) < 1
