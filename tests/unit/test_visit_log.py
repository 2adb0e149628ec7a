"""The per-visit log (JOURNAL_VISITS): segment files, rotation, reading, deletion. Real files."""

from __future__ import annotations

import errno
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.child import run_python
from visit_counter.services.visit_log import (
    SegmentCounts,
    SegmentRead,
    VisitLog,
    read_segment,
    segments_of,
)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def log(directory: Path) -> Iterator[VisitLog]:
    visit_log = VisitLog(directory, "w1")
    yield visit_log
    visit_log.close(remove=False)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return False
        raise
    return True


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def clean(counts: SegmentCounts) -> SegmentRead:
    """What reading a segment without damage gives."""
    return SegmentRead(counts, damage=())


def write_segment(directory: Path, name: str, text: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


# -- writing -------------------------------------------------------------------


def test_open_creates_the_directory_and_the_segment_file(directory: Path, log: VisitLog) -> None:
    log.open(1)

    assert names(directory) == ["w1.visits.1"]
    assert log.path(1) == directory / "w1.visits.1"
    assert log.path(1).read_bytes() == b""


def test_each_visit_is_one_line_with_an_epoch_suffix_only_when_non_zero(log: VisitLog) -> None:
    log.open(1)

    log.append("home", 0)
    log.append("blog:post~1", 0)
    log.append("home", 3)
    log.append("home", 0)

    assert log.path(1).read_text() == "home\nblog:post~1\nhome 3\nhome\n"


def test_rotation_sends_later_visits_to_the_next_segment_only(
    directory: Path, log: VisitLog
) -> None:
    log.open(1)
    log.append("a", 0)
    log.append("b", 2)
    first_fd = log._fd

    log.open(2)
    assert first_fd is not None
    assert not is_open(first_fd), "the previous segment's descriptor was closed, not leaked"
    log.append("c", 0)
    log.open(3)
    log.append("a", 0)
    log.append("a", 0)

    assert names(directory) == ["w1.visits.1", "w1.visits.2", "w1.visits.3"]
    assert log.path(1).read_text() == "a\nb 2\n"
    assert log.path(2).read_text() == "c\n"
    assert log.path(3).read_text() == "a\na\n"


def test_reopening_a_segment_appends_rather_than_truncates(log: VisitLog) -> None:
    log.open(4)
    log.append("a", 0)
    log.open(4)
    log.append("b", 0)

    assert log.path(4).read_text() == "a\nb\n"


def test_append_needs_an_open_segment(log: VisitLog) -> None:
    with pytest.raises(AssertionError, match="not open"):
        log.append("home", 0)


# -- reading -------------------------------------------------------------------


def test_read_segment_counts_visits_per_page(directory: Path) -> None:
    path = write_segment(directory, "w1.visits.1", "home\nblog\nhome\nhome\nabout 2\nabout 2\n")

    assert read_segment(path) == clean({"home": (3, 0), "blog": (1, 0), "about": (2, 2)})


def test_read_segment_of_an_empty_file_is_empty(directory: Path) -> None:
    assert read_segment(write_segment(directory, "w1.visits.1")) == clean({})


def test_read_segment_keeps_only_the_newest_epoch_per_page(directory: Path) -> None:
    # Before the reset (epoch 0) three visits, after it (epoch 2) two; a line still
    # tagged with an older epoch after that is dropped, and a newer epoch restarts again.
    lines = [
        "promo", "promo", "other", "promo",
        "promo 2", "promo 1", "promo 2", "promo",
        "other 1", "other 4", "other 4", "other 4", "other 3",
    ]  # fmt: skip
    path = write_segment(directory, "w1.visits.1", "".join(line + "\n" for line in lines))

    assert read_segment(path) == clean({"promo": (2, 2), "other": (3, 4)})


def test_read_segment_skips_a_torn_last_line(directory: Path) -> None:
    path = write_segment(directory, "w1.visits.1", "home\nblog\nhome\nblo")

    assert read_segment(path) == clean({"home": (2, 0), "blog": (1, 0)}), "not damage"


def test_read_segment_skips_a_torn_line_that_carries_an_epoch(directory: Path) -> None:
    path = write_segment(directory, "w1.visits.1", "home\nhome 5")

    # A torn "home 5" must neither count nor restart the page at epoch 5.
    assert read_segment(path) == clean({"home": (1, 0)}), "not damage"


@pytest.mark.parametrize(
    "bad",
    [
        b"home x\n",
        b"home 1 k2 x\n",  # a key holds no space: a fourth field is damage
        b"home -2\n",  # -1 is a tag (UNKNOWN_TAG); no other negative is
        b"\x00\x00\x00\n",
        b"cafe\xcc\x81\n",  # NFD: not a canonical page id
        b"\xff\xfe\n",
        b"\n",
    ],
    ids=["epoch", "four-fields", "negative", "nul", "not-nfc", "not-utf8", "empty"],
)
def test_an_unreadable_line_in_the_middle_is_damage(directory: Path, bad: bytes) -> None:
    path = write_segment(directory, "w1.visits.1")
    path.write_bytes(b"home\nblog 2\n" + bad + b"home\n")

    read = read_segment(path)

    assert read.counts == {"home": (2, 0), "blog": (1, 2)}, "the readable lines still count"
    assert [(line.offset, line.length, line.torn) for line in read.damage] == [
        (12, len(bad), False)
    ]


def test_a_torn_tail_no_visit_line_starts_with_is_damage(directory: Path) -> None:
    # A write() cut short leaves the start of a visit line; NULs or a bad epoch are not that.
    for tail in (b"\x00\x00\x00\x00", b"home 1x", b"x" * 2100):
        path = write_segment(directory, "w1.visits.1")
        path.write_bytes(b"home\n" + tail)

        read = read_segment(path)

        assert read.counts == {"home": (1, 0)}
        assert [(line.offset, line.length, line.torn) for line in read.damage] == [
            (5, len(tail), True)
        ], tail


SHORT_VISIT_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from visit_counter.services.visit_log import VisitLog

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    log = VisitLog(Path(sys.argv[1]), "w1")
    log.open(1)
    log.append("first", 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The disk fills up mid-line: the kernel takes only the first 3 bytes.
    resource.setrlimit(resource.RLIMIT_FSIZE, (log.path(1).stat().st_size + 3, hard))
    try:
        log.append("second", 0)
    except OSError as exc:
        print("refused:", exc)
    else:
        print("acknowledged")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    log.append("third", 0)
    log.close(remove=False)
    """
)


def test_a_short_write_refuses_the_visit_and_leaves_no_partial_line(directory: Path) -> None:
    # Left in place, "sec" would run into the next line and count a visit to "secthird".
    child = run_python(SHORT_VISIT_WRITE, str(directory))
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("refused: short write"), child.stdout

    assert (directory / "w1.visits.1").read_text() == "first\nthird\n"


def test_what_the_log_writes_reads_back_as_counts(log: VisitLog) -> None:
    log.open(7)
    for page_id, epoch in [("a", 0), ("b", 1), ("a", 0), ("b", 1), ("b", 1), ("c", 0)]:
        log.append(page_id, epoch)

    assert read_segment(log.path(7)) == clean({"a": (2, 0), "b": (3, 1), "c": (1, 0)})


def test_path_ids_with_spaces_and_percent_signs_read_back_as_written(log: VisitLog) -> None:
    pages = ["blog/a b", "100% sure 5", "caf\u00e9/%20", "/", "x 12"]
    log.open(3)
    for page_id in pages:
        log.append(page_id, 0)
        log.append(page_id, 4)  # a reset heard of: only these count

    assert read_segment(log.path(3)) == clean(dict.fromkeys(pages, (1, 4)))


def test_keyed_visits_read_back_with_their_keys_and_a_repeated_key_counts_once(
    log: VisitLog,
) -> None:
    log.open(2)
    log.append("a", 0, "k1")
    log.append("a", 0)
    log.append("a", 0, "k1")  # a repeat that reached the log (another path): one visit
    log.append("b 1", 3, "uuid-0f:1")
    log.append("a", 0, "k2")

    assert log.path(2).read_text().splitlines()[0] == "a 0 k1", "the tag is written with a key"
    assert read_segment(log.path(2)) == SegmentRead(
        {"a": (3, 0), "b 1": (1, 3)}, damage=(), keys={"a": {"k1", "k2"}, "b 1": {"uuid-0f:1"}}
    )


def test_a_newer_epoch_drops_the_keys_read_before_it(directory: Path) -> None:
    path = write_segment(directory, "w1.visits.1", "home 0 k1\nhome 2 k2\nhome 0 k3\n")

    assert read_segment(path) == SegmentRead({"home": (1, 2)}, damage=(), keys={"home": {"k2"}})


def test_a_torn_keyed_line_is_skipped_not_damage(directory: Path) -> None:
    path = write_segment(directory, "w1.visits.1", "home 0 k1\nhome 0 k")

    assert read_segment(path) == SegmentRead({"home": (1, 0)}, damage=(), keys={"home": {"k1"}})


def test_a_batch_of_visits_is_one_write_of_lines_that_read_back_with_their_counts(
    log: VisitLog,
) -> None:
    log.open(5)
    log.append_many([("home", 0, 7, None), ("100% sure", 2, 1, None), ("blog", 0, 3, "req-1")])
    log.append_many([("blog", 0, 3, "req-1"), ("home", 0, 1, "k")])  # the request again

    lines = log.path(5).read_text().splitlines()
    assert lines[:3] == ["%n 7 home 0", "100%25%20sure 2", "%n 3 blog 0 req-1"]
    assert read_segment(log.path(5)) == SegmentRead(
        {"home": (8, 0), "100% sure": (1, 2), "blog": (3, 0)},
        damage=(),
        keys={"blog": {"req-1\x1f3"}, "home": {"k"}},
    )


@pytest.mark.parametrize("torn", ["%n", "%n 1", "%n 12 ho", "%n 12 home 0 re"])
def test_a_torn_batch_line_is_skipped_not_damage(directory: Path, torn: str) -> None:
    path = write_segment(directory, "w1.visits.1", f"%n 2 home 0\n{torn}")

    assert read_segment(path) == clean({"home": (2, 0)})


@pytest.mark.parametrize("bad", [b"%n 0 home 0\n", b"%n x home 0\n", b"%n 3 home\n"])
def test_a_malformed_batch_line_is_damage(directory: Path, bad: bytes) -> None:
    path = write_segment(directory, "w1.visits.1")
    path.write_bytes(b"home\n" + bad)

    read = read_segment(path)
    assert read.counts == {"home": (1, 0)}
    assert [line.offset for line in read.damage] == [5]


# -- listing, deleting, closing ------------------------------------------------


def test_segments_of_orders_numerically_and_ignores_other_files(directory: Path) -> None:
    for number in (10, 2, 9, 1, 11, 100):
        write_segment(directory, f"w1.visits.{number}")
    write_segment(directory, "w1.visits.tmp")
    write_segment(directory, "w1.visits.")
    write_segment(directory, "w1.jsonl")
    write_segment(directory, "w10.visits.3")  # another writer whose name starts alike
    write_segment(directory, "w2.visits.5")

    found = list(segments_of(directory, "w1"))

    assert [number for number, _ in found] == [1, 2, 9, 10, 11, 100]
    assert [path.name for _, path in found] == [f"w1.visits.{n}" for n in (1, 2, 9, 10, 11, 100)]


def test_segments_of_an_unknown_writer_is_empty(directory: Path) -> None:
    write_segment(directory, "w1.visits.1")

    assert list(segments_of(directory, "nobody")) == []


def test_delete_through_removes_older_segments_and_keeps_later_ones(
    directory: Path, log: VisitLog
) -> None:
    for number in range(1, 6):
        log.open(number)
        log.append(f"page{number}", 0)
    write_segment(directory, "w2.visits.1", "other\n")

    log.delete_through(2)

    assert names(directory) == ["w1.visits.3", "w1.visits.4", "w1.visits.5", "w2.visits.1"]
    assert log.path(3).read_text() == "page3\n"


def test_delete_through_never_removes_the_open_segment(directory: Path, log: VisitLog) -> None:
    for number in (9, 10, 11):
        log.open(number)
    log.append("late", 0)

    log.delete_through(11)  # everything covered, but segment 11 still takes visits
    log.append("later", 0)

    assert names(directory) == ["w1.visits.11"]
    assert log.path(11).read_text() == "late\nlater\n"

    log.delete_through(50)
    assert names(directory) == ["w1.visits.11"]


def test_delete_through_counts_numerically(directory: Path, log: VisitLog) -> None:
    for number in (2, 9, 10, 12):
        log.open(number)

    log.delete_through(9)  # "10" sorts before "9" as text; it must survive

    assert names(directory) == ["w1.visits.10", "w1.visits.12"]


def test_close_with_remove_deletes_every_segment_of_this_writer_only(directory: Path) -> None:
    log = VisitLog(directory, "w1")
    for number in (1, 2, 3):
        log.open(number)
        log.append("home", 0)
    write_segment(directory, "w2.visits.1", "other\n")
    write_segment(directory, "w1.jsonl")

    log.close(remove=True)

    assert log._fd is None
    assert names(directory) == ["w1.jsonl", "w2.visits.1"]
    with pytest.raises(AssertionError, match="not open"):
        log.append("home", 0)


def test_close_without_remove_keeps_the_segments_for_the_next_start(directory: Path) -> None:
    log = VisitLog(directory, "w1")
    log.open(1)
    log.append("home", 0)
    log.open(2)
    log.append("blog", 1)
    fd = log._fd

    log.close(remove=False)
    log.close(remove=False)  # closing twice is harmless

    assert log._fd is None
    assert fd is not None
    assert not is_open(fd)
    assert names(directory) == ["w1.visits.1", "w1.visits.2"]
    assert [read_segment(path) for _, path in segments_of(directory, "w1")] == [
        clean({"home": (1, 0)}),
        clean({"blog": (1, 1)}),
    ]
