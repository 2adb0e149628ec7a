"""The on-disk journal, with real files: append/read, truncation, close, orphan claims."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.child import run_python
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.services.batch import Batch
from visit_counter.services.journal import Journal, JournalError
from visit_counter.services.journal_format import encode_record
from visit_counter.services.quarantine import quarantined
from visit_counter.services.visit_log import VisitLog


class SplitRing:
    """Two nodes, split by the page id's first letter."""

    def owner(self, key: str) -> str:
        return "redis://a:6379" if key < "m" else "redis://b:6379"


def owner_of(version: int) -> SplitRing:
    """The ring at every topology version (these tests never change it)."""
    return SplitRing()


NODE_A = "redis://127.0.0.1:7070"
NODE_B = "redis://127.0.0.1:7071"


def make_batch(writer: str, seq: int, node: str = NODE_A, **counts: int) -> Batch:
    increments = {page: (count, 0) for page, count in (counts or {f"page{seq}": seq}).items()}
    return Batch(writer=writer, seq=seq, node=node, increments=increments)


def ack_line(batch: Batch) -> str:
    return json.dumps({"ack": [batch.writer, batch.seq, batch.node]})


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def journal(directory: Path) -> Iterator[Journal]:
    journal = Journal(directory, "live")
    journal.open()
    yield journal
    journal.close()


def test_append_and_read_back_by_offset(journal: Journal) -> None:
    batches = [
        make_batch("live", 1, home=3, about=1),
        make_batch("live", 2, NODE_B, blog=7),
        make_batch("live", 3, **{"caf:e~1": 2}),
    ]

    offsets = [journal.append(batch) for batch in batches]

    assert offsets[0] == 0
    assert offsets == sorted(set(offsets))
    assert [journal.read(offset) for offset in reversed(offsets)] == list(reversed(batches))
    assert journal.outstanding == 3


def test_reading_does_not_disturb_where_the_next_append_goes(journal: Journal) -> None:
    first = make_batch("live", 1)
    offset = journal.append(first)
    journal.read(offset)
    second_offset = journal.append(make_batch("live", 2))

    assert journal.read(offset) == first
    assert journal.read(second_offset) == make_batch("live", 2)


def test_acknowledging_everything_outstanding_truncates_the_file(journal: Journal) -> None:
    first, second = make_batch("live", 1), make_batch("live", 2)
    journal.append(first)
    journal.append(second)
    size_with_both = journal.path.stat().st_size

    journal.acknowledge(first)
    assert journal.outstanding == 1
    assert journal.path.stat().st_size > size_with_both  # an ack record, not a truncation

    journal.acknowledge(second)
    assert journal.outstanding == 0
    assert journal.path.stat().st_size == 0

    third = make_batch("live", 3)
    offset = journal.append(third)
    assert offset == 0
    assert journal.read(offset) == third


def test_acknowledging_an_unknown_batch_changes_nothing(journal: Journal) -> None:
    journal.append(make_batch("live", 1))
    size = journal.path.stat().st_size

    journal.acknowledge(make_batch("live", 99))
    journal.acknowledge(make_batch("live", 1, NODE_B))  # same writer and seq, other node

    assert journal.outstanding == 1
    assert journal.path.stat().st_size == size


def test_close_removes_a_file_with_nothing_outstanding(directory: Path) -> None:
    journal = Journal(directory, "w1")
    journal.open()
    batch = make_batch("w1", 1)
    journal.append(batch)
    journal.acknowledge(batch)

    journal.close()

    assert not journal.path.exists()
    assert list(directory.iterdir()) == []


def test_close_keeps_a_file_with_outstanding_batches(directory: Path) -> None:
    journal = Journal(directory, "w1")
    journal.open()
    kept = make_batch("w1", 2)
    journal.append(make_batch("w1", 1))
    journal.append(kept)
    journal.acknowledge(make_batch("w1", 1))

    journal.close()

    assert journal.path.exists()
    with pytest.raises(JournalError, match="not open"):
        journal.append(make_batch("w1", 3))
    successor = Journal(directory, "w2")
    successor.open()
    assert [batch for batch, _ in successor.claim_orphans(owner_of)] == [kept]
    successor.close()


def write_orphan(directory: Path, writer: str, lines: list[str], torn: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{writer}.jsonl"
    path.write_text("".join(line + "\n" for line in lines) + torn)
    return path


def test_claim_takes_unacknowledged_batches_from_a_dead_writer(
    directory: Path, journal: Journal
) -> None:
    acked = make_batch("dead", 1, NODE_A, home=2)
    kept_b = make_batch("dead", 2, NODE_B, about=5)
    kept_a = make_batch("dead", 3, NODE_A, home=1, blog=4)
    inherited = make_batch("older", 7, NODE_A, contact=1)  # claimed earlier by "dead"
    torn = make_batch("dead", 4, NODE_A, lost=1).to_json()[:-9]
    orphan = write_orphan(
        directory,
        "dead",
        [acked.to_json(), kept_b.to_json(), inherited.to_json(), ack_line(acked), kept_a.to_json()],
        torn=torn,
    )

    claimed = journal.claim_orphans(owner_of)

    batches = [batch for batch, _ in claimed]
    assert sorted(batches, key=lambda b: (b.writer, b.seq)) == [kept_b, kept_a, inherited]
    for batch, offset in claimed:
        assert journal.read(offset) == batch
    assert journal.outstanding == 3
    assert not orphan.exists()
    # The torn last line is damage (see journal.py): the file goes to the quarantine.
    assert sorted(path.name for path in directory.iterdir()) == ["live.jsonl", "quarantine"]
    assert [(item.writer, item.lines) for item in quarantined(directory)] == [("dead", 1)]


def test_claimed_batches_keep_writer_and_seq_through_a_second_claim(directory: Path) -> None:
    original = make_batch("dead", 41, NODE_B, home=3)
    write_orphan(directory, "dead", [original.to_json()])
    heir = Journal(directory, "heir")
    heir.open()
    heir.claim_orphans(owner_of)
    heir.close()  # dies in turn with the claimed batch outstanding

    last = Journal(directory, "last")
    last.open()
    claimed = last.claim_orphans(owner_of)
    last.close()

    assert [batch for batch, _ in claimed] == [original]
    assert (claimed[0][0].writer, claimed[0][0].seq) == ("dead", 41)


def test_acknowledging_claimed_batches_empties_the_new_file(
    directory: Path, journal: Journal
) -> None:
    lines = [make_batch("dead", seq).to_json() for seq in (1, 2)]
    write_orphan(directory, "dead", lines)
    claimed = journal.claim_orphans(owner_of)

    for batch, _ in claimed:
        journal.acknowledge(batch)

    assert journal.outstanding == 0
    assert journal.path.stat().st_size == 0


def test_an_empty_orphan_file_is_removed(directory: Path, journal: Journal) -> None:
    orphan = write_orphan(directory, "dead", [])

    assert journal.claim_orphans(owner_of) == []
    assert not orphan.exists()


LOCK_HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_a_live_writers_file_is_not_claimed_until_it_dies(
    directory: Path, journal: Journal
) -> None:
    batch = make_batch("alive", 1, home=9)
    orphan = write_orphan(directory, "alive", [batch.to_json()])
    content = orphan.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(orphan)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"

        assert journal.claim_orphans(owner_of) == []
        assert orphan.read_bytes() == content
        assert journal.outstanding == 0
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()

    # Once its writer is gone the very same file is claimable: the lock was the only reason.
    assert [claimed for claimed, _ in journal.claim_orphans(owner_of)] == [batch]
    assert not orphan.exists()


def test_writing_to_a_full_disk_raises_journal_error(directory: Path) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    directory.mkdir(parents=True)
    (directory / "full.jsonl").symlink_to("/dev/full")
    journal = Journal(directory, "full")
    journal.open()
    try:
        with pytest.raises(JournalError, match="cannot write journal"):
            journal.append(make_batch("full", 1))
        assert journal.outstanding == 0
    finally:
        journal.close()


def test_a_failed_fsync_leaves_no_record_that_a_later_claim_would_replay(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # VisitCounter._spill puts a batch's visits back in memory when append() raises, and
    # seals them again later under a new seq. The failed record must therefore not stay
    # in the file: a later claim would replay it and count those visits twice.
    journal = Journal(directory, "dead")
    journal.open()
    real_fsync = os.fsync
    calls = 0

    def failing_once(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    failed = make_batch("dead", 1, home=5)
    with pytest.raises(JournalError):
        journal.append(failed)
    resealed = make_batch("dead", 2, home=5, about=1)  # the same visits, sealed again
    journal.append(resealed)
    journal.close()  # the writer stops (or dies) with `resealed` outstanding
    monkeypatch.undo()

    heir = Journal(directory, "heir")
    heir.open()
    claimed = [batch for batch, _ in heir.claim_orphans(owner_of)]
    heir.close()

    assert claimed == [resealed]


SHORT_WRITE = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from visit_counter.services.batch import Batch
    from visit_counter.services.journal import Journal, JournalError

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    journal = Journal(Path(sys.argv[1]), "dead")
    journal.open()
    journal.append(Batch("dead", 1, "n", {"first": (1, 0)}))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # The disk fills up mid-record: the kernel writes only the first 20 bytes.
    resource.setrlimit(resource.RLIMIT_FSIZE, (journal.path.stat().st_size + 20, hard))
    try:
        journal.append(Batch("dead", 2, "n", {"second": (2, 0)}))
    except JournalError as exc:
        print("short write:", exc)
    else:
        sys.exit("expected a short write")
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    journal.append(Batch("dead", 3, "n", {"third": (3, 0)}))
    journal.close()
    """
)


def test_a_short_write_does_not_corrupt_the_next_record(directory: Path) -> None:
    # A real partial write (RLIMIT_FSIZE stands in for a nearly full disk), in a child
    # process so the limit cannot touch pytest's own files. Batch 3 was appended and
    # fsynced successfully, so it must survive a restart.
    child = run_python(SHORT_WRITE, str(directory))
    assert child.returncode == 0, child.stderr
    assert "short write" in child.stdout

    heir = Journal(directory, "heir")
    heir.open()
    claimed = sorted((batch.seq for batch, _ in heir.claim_orphans(owner_of)))
    heir.close()

    assert claimed == [1, 3]


def test_opening_a_file_another_process_holds_raises_journal_error(directory: Path) -> None:
    # STYLE.md habit 7: OS errors are translated at the boundary. open() lets the
    # BlockingIOError from flock escape (and leaks the descriptor it just opened).
    holder = Journal(directory, "same")
    holder.open()
    try:
        second = Journal(directory, "same")
        with pytest.raises(JournalError):
            second.open()
    finally:
        holder.close()


# -- claims with visit-log segments (JOURNAL_VISITS) ------------------------------


class RingAB:
    """Pages before "m" live on NODE_A, the rest on NODE_B."""

    def owner(self, key: str) -> str:
        return NODE_A if key < "m" else NODE_B


def owner_ab(version: int) -> RingAB:
    """The ring at every topology version (these tests never change it)."""
    return RingAB()


def write_segments(directory: Path, writer: str, segments: dict[int, list[str]]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, lines in segments.items():
        path = directory / f"{writer}.visits.{number}"
        path.write_text("".join(line + "\n" for line in lines))
        paths.append(path)
    return paths


def segment_batch(writer: str, seq: int, node: str, **increments: tuple[int, int]) -> Batch:
    return Batch(writer=writer, seq=seq, node=node, increments=increments)


DEAD_SEGMENTS = {
    2: ["apple", "apple", "pear", "banana 1"],
    3: ["banana 1", "zebra 2", "apple"],
    4: ["apple", "pear", "pear", "apple"],
    5: ["apple 1", "zebra", "zebra", "pear 3", "zebra"],
}


@pytest.mark.parametrize("journaled_acknowledged", [False, True], ids=["pending", "acked"])
def test_claim_turns_segments_into_batches_except_where_the_journal_covers_them(
    directory: Path, journal: Journal, journaled_acknowledged: bool
) -> None:
    # The dead writer had journaled a batch for A with seq 3 (node A was down at
    # flush 3), so segments 2 and 3 are in it for A; node B never had a journaled batch.
    journaled = make_batch("dead", 3, NODE_A, apple=4, banana=1)
    lines = [journaled.to_json()] + ([ack_line(journaled)] if journaled_acknowledged else [])
    orphan = write_orphan(directory, "dead", lines)
    segment_paths = write_segments(directory, "dead", DEAD_SEGMENTS)

    claimed = journal.claim_orphans(owner_ab)

    from_segments_for_a = [
        segment_batch("dead", 4, NODE_A, apple=(2, 0)),
        segment_batch("dead", 5, NODE_A, apple=(1, 1)),
    ]
    for_b = [
        segment_batch("dead", 2, NODE_B, pear=(1, 0)),
        segment_batch("dead", 3, NODE_B, zebra=(1, 2)),
        segment_batch("dead", 4, NODE_B, pear=(2, 0)),
        segment_batch("dead", 5, NODE_B, zebra=(3, 0), pear=(1, 3)),
    ]
    for_a = from_segments_for_a if journaled_acknowledged else [journaled, *from_segments_for_a]
    batches = [batch for batch, _ in claimed]
    assert batches == [*for_a, *for_b], "each node's batches, in seq order"
    for batch, offset in claimed:
        assert journal.read(offset) == batch
    assert journal.outstanding == len(for_a) + len(for_b)
    assert not orphan.exists()
    assert not any(path.exists() for path in segment_paths)
    assert [path.name for path in directory.iterdir()] == ["live.jsonl"]


def test_claim_takes_segments_of_a_writer_that_journaled_nothing(
    directory: Path, journal: Journal
) -> None:
    # The common crash: nodes all up, nothing ever journaled, the journal file empty.
    write_orphan(directory, "dead", [])
    write_segments(directory, "dead", {1: [], 9: ["apple", "pear"], 10: ["apple", "apple"]})
    write_segments(directory, "other", {1: ["apple"]})  # a live writer without a .jsonl yet

    claimed = [batch for batch, _ in journal.claim_orphans(owner_ab)]

    assert claimed == [
        segment_batch("dead", 9, NODE_A, apple=(1, 0)),
        segment_batch("dead", 10, NODE_A, apple=(2, 0)),
        segment_batch("dead", 9, NODE_B, pear=(1, 0)),
    ]
    assert sorted(path.name for path in directory.iterdir()) == ["live.jsonl", "other.visits.1"]


def test_claimed_segment_batches_survive_a_second_claim_unchanged(directory: Path) -> None:
    write_orphan(directory, "dead", [])
    write_segments(directory, "dead", {4: ["apple", "apple 2", "pear"]})
    heir = Journal(directory, "heir")
    heir.open()
    first = [batch for batch, _ in heir.claim_orphans(owner_ab)]
    heir.close()  # dies in turn with the claimed batches outstanding

    last = Journal(directory, "last")
    last.open()
    second = [batch for batch, _ in last.claim_orphans(owner_ab)]
    last.close()

    assert first == [
        segment_batch("dead", 4, NODE_A, apple=(1, 2)),
        segment_batch("dead", 4, NODE_B, pear=(1, 0)),
    ]
    assert second == first


def test_inherited_batches_do_not_cover_the_heirs_own_segments(
    directory: Path, journal: Journal
) -> None:
    # "heir" claimed batch 7 of "dead" (node A) into its journal, then took visits of
    # its own (segments 1 and 2) and crashed before flushing them. Seq 7 belongs to
    # "dead": it says nothing about which of heir's flushes are stored or journaled,
    # so heir's segments must all be replayed. (journal.py `_unacknowledged` takes the
    # highest seq per node over every writer's batches in the file.)
    inherited = make_batch("dead", 7, NODE_A, apple=5)
    write_orphan(directory, "heir", [inherited.to_json()])
    write_segments(directory, "heir", {1: ["apple", "pear"], 2: ["banana", "banana"]})

    claimed = [batch for batch, _ in journal.claim_orphans(owner_ab)]

    assert claimed == [
        inherited,
        segment_batch("heir", 1, NODE_A, apple=(1, 0)),
        segment_batch("heir", 2, NODE_A, banana=(2, 0)),
        segment_batch("heir", 1, NODE_B, pear=(1, 0)),
    ]


def test_a_live_writers_segments_are_not_claimed_until_it_dies(
    directory: Path, journal: Journal
) -> None:
    orphan = write_orphan(directory, "alive", [])
    segment_paths = write_segments(directory, "alive", {3: ["apple"], 4: ["pear", "pear"]})
    contents = [path.read_bytes() for path in segment_paths]
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(orphan)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"

        assert journal.claim_orphans(owner_ab) == []
        assert [path.read_bytes() for path in segment_paths] == contents
        assert orphan.exists()
        assert journal.outstanding == 0
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()

    assert [batch for batch, _ in journal.claim_orphans(owner_ab)] == [
        segment_batch("alive", 3, NODE_A, apple=(1, 0)),
        segment_batch("alive", 4, NODE_B, pear=(2, 0)),
    ]
    assert not any(path.exists() for path in segment_paths)


# -- checksums and damage ----------------------------------------------------------


def written_journal(directory: Path, writer: str, batches: list[Batch]) -> tuple[Path, list[int]]:
    """A journal as a writer of this release leaves it: every batch outstanding.

    Returns the file and each record's offset (the last one's end included).
    """
    writer_journal = Journal(directory, writer)
    writer_journal.open()
    offsets = [writer_journal.append(batch) for batch in batches]
    writer_journal.close()
    offsets.append(writer_journal.path.stat().st_size)
    return writer_journal.path, offsets


def claim(directory: Path, writer: str = "heir", owner: Callable[[str], str] = owner_of) -> Journal:
    heir = Journal(directory, writer)
    heir.open()
    heir.claim_orphans(owner)
    return heir


def claimed_batches(heir: Journal) -> list[Batch]:
    """What the claimer's own file now holds, read back through its public API."""
    return [heir.read(offset) for offset in offsets_of(heir.path)]


def offsets_of(path: Path) -> list[int]:
    offsets, offset = [], 0
    with path.open("rb") as handle:
        for raw in handle:
            offsets.append(offset)
            offset += len(raw)
    return offsets


def damage_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.ERROR and record.getMessage().startswith("journal damage")
    ]


THREE = [
    make_batch("dead", 1, NODE_A, home=3, about=1),
    make_batch("dead", 2, NODE_B, blog=27, news=100),
    make_batch("dead", 3, NODE_A, home=5, about=2),
]


def test_every_record_carries_the_crc32_of_its_json(journal: Journal) -> None:
    batch = make_batch("live", 1, home=3)

    journal.append(batch)

    body = batch.to_json().encode()
    assert journal.path.read_bytes() == b"%08x " % zlib.crc32(body) + body + b"\n"
    assert encode_record(batch.to_json()) == journal.path.read_bytes()


def test_a_journal_written_before_checksums_replays_as_before(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Today's release writes bare JSON lines: a file it left must still replay.
    acked = make_batch("old", 1, NODE_A, home=2)
    kept = [make_batch("old", 2, NODE_B, about=5), make_batch("old", 3, NODE_A, home=1)]
    lines = [acked.to_json(), kept[0].to_json(), ack_line(acked), kept[1].to_json()]
    orphan = write_orphan(directory, "old", lines)

    heir = claim(directory)

    in_order = sorted(kept, key=lambda b: (b.node, b.seq))
    assert claimed_batches(heir) == in_order
    assert heir.path.read_bytes() == b"".join(encode_record(b.to_json()) for b in in_order)
    assert not orphan.exists()
    assert quarantined(directory) == []
    assert heir.damaged_records == 0
    assert damage_errors(caplog) == []
    heir.close()


def test_a_flipped_digit_in_a_middle_record_is_caught_by_its_checksum(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, offsets = written_journal(directory, "dead", THREE)
    content = bytearray(path.read_bytes())
    digit = content.index(b'"news":[100,', offsets[1]) + len('"news":[')
    content[digit] = ord("7")  # 100 -> 700: still valid JSON, still a batch
    damaged = bytes(content)
    path.write_bytes(damaged)

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        heir = claim(directory)

    assert claimed_batches(heir) == [THREE[0], THREE[2]], "the intact batches, once each"
    assert heir.outstanding == 2
    assert not path.exists(), "moved, not left to be claimed again"
    (item,) = quarantined(directory)
    assert item.path.read_bytes() == damaged, "kept byte for byte"
    assert item.path.name == "dead.jsonl"
    assert item.path.parent.name.endswith("-dead")  # <found_at>-<writer>
    assert (item.writer, item.kind, item.lines) == ("dead", "journal", 1)
    assert item.bytes == offsets[2] - offsets[1]
    assert (heir.damaged_records, heir.damaged_bytes) == (1, item.bytes)
    (error,) = damage_errors(caplog)
    assert str(path) in error
    assert str(item.path) in error
    assert f"byte {offsets[1]} ({item.bytes} bytes)" in error
    assert f"batch dead/2 for {NODE_B} (727 visits as written)" in error
    heir.close()


def test_a_torn_last_record_is_damage_and_the_rest_replays(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The reproduction: the last line of a claimed file cut in half.
    path, offsets = written_journal(directory, "dead", THREE)
    cut = path.read_bytes().index(b'"about":[2', offsets[2]) + 3  # after "home":[5,0],
    with path.open("r+b") as handle:
        handle.truncate(cut)

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        heir = claim(directory)

    assert claimed_batches(heir) == [THREE[0], THREE[1]]
    (item,) = quarantined(directory)
    assert (item.lines, item.bytes) == (1, cut - offsets[2])
    (error,) = damage_errors(caplog)
    assert "torn last line" in error
    assert f"batch dead/3 for {NODE_A} (at least 5 visits as written)" in error
    heir.close()


def test_garbage_lines_cost_only_themselves(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, offsets = written_journal(directory, "dead", THREE)
    content = path.read_bytes()
    garbage = [b"\x00" * 40 + b"\n", b"\xff\xfe not utf-8 \xc3\x28\n", b"\n"]
    damaged = content[: offsets[1]] + garbage[0] + garbage[1] + content[offsets[1] :] + garbage[2]
    path.write_bytes(damaged)

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        heir = claim(directory)

    assert claimed_batches(heir) == [THREE[0], THREE[2], THREE[1]]
    (item,) = quarantined(directory)
    assert item.path.read_bytes() == damaged
    assert (item.lines, item.bytes) == (3, sum(len(line) for line in garbage))
    (error,) = damage_errors(caplog)
    assert "3 unreadable lines" in error
    assert "unrecognisable" in error
    heir.close()


def test_a_record_glued_behind_a_damaged_one_is_still_replayed(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A lost newline merges two lines. The first record's checksum fails; the second's,
    # found behind it, holds: only the first batch is lost.
    path, offsets = written_journal(directory, "dead", THREE)
    content = bytearray(path.read_bytes())
    content[offsets[1] - 1] = ord("x")
    path.write_bytes(bytes(content))

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        heir = claim(directory)

    assert claimed_batches(heir) == [THREE[2], THREE[1]]
    (item,) = quarantined(directory)
    assert (item.lines, item.bytes) == (1, offsets[1])
    (error,) = damage_errors(caplog)
    assert f"batch dead/1 for {NODE_A} (4 visits as written)" in error
    heir.close()


def test_a_damaged_acknowledgement_only_replays_its_batch_again(directory: Path) -> None:
    # Replaying an acknowledged batch is harmless (same writer and seq); losing one is not.
    writer_journal = Journal(directory, "dead")
    writer_journal.open()
    for batch in THREE:
        writer_journal.append(batch)
    writer_journal.acknowledge(THREE[0])
    writer_journal.close()
    content = writer_journal.path.read_bytes()
    ack_at = content.rindex(b'{"ack"')
    writer_journal.path.write_bytes(content[:ack_at] + b"X" + content[ack_at + 1 :])

    heir = claim(directory)

    assert sorted(claimed_batches(heir), key=lambda b: b.seq) == THREE
    (item,) = quarantined(directory)
    assert item.lines == 1
    heir.close()


def test_reading_back_a_damaged_record_of_ones_own_raises_journal_error(journal: Journal) -> None:
    offset = journal.append(make_batch("live", 1, home=12))
    content = bytearray(journal.path.read_bytes())
    content[content.index(b"12")] = ord("9")
    journal.path.write_bytes(bytes(content))

    with pytest.raises(JournalError, match="damaged"):
        journal.read(offset)


def test_quarantined_files_are_never_claimed_again(directory: Path) -> None:
    path, offsets = written_journal(directory, "dead", THREE)
    with path.open("r+b") as handle:
        handle.truncate(offsets[3] - 5)
    heir = claim(directory)
    heir.close()  # dies with the two intact batches outstanding

    last = claim(directory, "last")

    assert claimed_batches(last) == [THREE[0], THREE[1]], "once more, not the damaged one"
    assert last.damaged_records == 0
    assert len(quarantined(directory)) == 1
    last.close()


def test_a_file_that_cannot_be_quarantined_is_left_in_place_never_deleted(
    directory: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, offsets = written_journal(directory, "dead", THREE)
    with path.open("r+b") as handle:
        handle.truncate(offsets[3] - 5)
    damaged = path.read_bytes()
    (directory / "quarantine").write_text("in the way")  # mkdir fails: not a directory

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        heir = claim(directory)

    assert path.read_bytes() == damaged
    (error,) = damage_errors(caplog)
    assert "left for the next start" in error
    heir.close()
    (directory / "quarantine").unlink()

    last = claim(directory, "last")  # the next start tries again

    assert not path.exists()
    assert [item.path.read_bytes() for item in quarantined(directory)] == [damaged]
    assert {batch.seq for batch in claimed_batches(last)} == {1, 2}
    last.close()


def test_a_damaged_visit_log_segment_is_quarantined_and_its_readable_visits_replayed(
    directory: Path, journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    orphan = write_orphan(directory, "dead", [])
    clean_segment, damaged_segment = write_segments(
        directory, "dead", {2: ["apple", "pear"], 3: ["apple", "apple"]}
    )
    damaged = b"apple\nbanana x\n\xff\xfeapple\npear\nzebr"  # bad epoch, not UTF-8, torn tail
    damaged_segment.write_bytes(damaged)

    with caplog.at_level(logging.ERROR, logger="visit_counter.services.journal"):
        claimed = [batch for batch, _ in journal.claim_orphans(owner_ab)]

    assert claimed == [
        segment_batch("dead", 2, NODE_A, apple=(1, 0)),
        segment_batch("dead", 3, NODE_A, apple=(1, 0)),
        segment_batch("dead", 2, NODE_B, pear=(1, 0)),
        segment_batch("dead", 3, NODE_B, pear=(1, 0)),
    ]
    assert not orphan.exists()
    assert not clean_segment.exists()
    (item,) = quarantined(directory)
    assert (item.path.name, item.kind, item.lines) == ("dead.visits.3", "visit_log", 2)
    assert item.bytes == len(b"banana x\n\xff\xfeapple\n")
    assert item.path.read_bytes() == damaged
    (error,) = damage_errors(caplog)
    assert "dead.visits.3" in error
    assert "2 visit lines" in error


def test_segments_are_replayed_as_routed_at_their_topology_version(
    directory: Path, journal: Journal
) -> None:
    # Segment 1 was routed at version 1 (one node), segments 2 and 3 at version 4 (after
    # a move): each becomes batches for the owners and version of its own time.
    one_node = ConsistentHashRing(["redis://only:6379"], 10)
    write_orphan(directory, "gone", [])
    log = VisitLog(directory, "gone")
    log.open(1)
    log.mark_version(1, 1)
    log.append("apple", 0)
    log.open(2)
    log.mark_version(2, 4)
    log.append("apple", 0)
    log.append("zebra", 0)
    log.open(3)
    log.append("zebra", 0)
    log.close(remove=False)

    def ring_at(version: int) -> ConsistentHashRing | RingAB:
        return one_node if version < 4 else RingAB()

    claimed = {
        (b.seq, b.node): (b.version, dict(b.increments)) for b, _ in journal.claim_orphans(ring_at)
    }

    assert claimed == {
        (1, "redis://only:6379"): (1, {"apple": (1, 0)}),
        (2, NODE_A): (4, {"apple": (1, 0)}),
        (2, NODE_B): (4, {"zebra": (1, 0)}),
        (3, NODE_B): (4, {"zebra": (1, 0)}),
    }
    assert [path.name for path in directory.iterdir()] == ["live.jsonl"]
