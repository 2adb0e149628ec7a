"""What a read makes of an outbox that changed while the node's answer was on its way
(`NodeOutbox.read_mark` and `pending_at`): the answer and the pending part add up to
every visit queued, however the sends, the node's applies and the acknowledgements
interleave with the read; where the outbox cannot tell, it says so (None)."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from tests.unit.test_outbox import NODE, WRITER, Sealer, make_batch
from visit_counter.services.batch import Batch
from visit_counter.services.outbox import NodeOutbox


class FakeNode:
    """A node's count and applied hash, applying a writer's batches once, in seq order."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.applied: dict[str, int] = {}

    def apply(self, batch: Batch) -> int:
        """Apply `batch` unless it is a retry; the count of page p after it (the reply)."""
        if batch.seq > self.applied.get(batch.mark, 0):
            self.applied[batch.mark] = batch.seq
            for page_id, (count, _) in batch.increments.items():
                self.counts[page_id] = self.counts.get(page_id, 0) + count
        return self.counts.get("p", 0)

    def holds(self, batch: Batch) -> bool:
        return batch.seq <= self.applied.get(batch.mark, 0)


def never_spilled(offset: int) -> Batch:
    raise AssertionError("nothing is spilled here")


class Writer:
    """One process's side: visits queued, the inflight batch sent (the node applies it at
    once) and acknowledged once the node holds it, in any order the steps say."""

    def __init__(self) -> None:
        self.outbox = NodeOutbox(NODE, WRITER)
        self.node = FakeNode()
        self.sealer = Sealer()
        self.queued = {"p": 0, "q": 0}
        self.reply = 0  # page p's count in the reply to the last send

    def step(self, step: str) -> int | None:
        """Take one step; on an acknowledgement, page p's count the node replied."""
        outbox = self.outbox
        if step in self.queued:
            outbox.add({step: 1})
            self.queued[step] += 1
        elif step == "send":
            batch = outbox.next_batch(self.sealer.for_node(NODE), never_spilled)
            if batch is not None:
                self.reply = self.node.apply(batch)
        elif step == "ack" and outbox.inflight is not None and self.node.holds(outbox.inflight):
            outbox.acknowledge()
            return self.reply
        return None


STEPS = st.lists(st.sampled_from(["p", "q", "send", "ack"]), max_size=30)


@given(before=STEPS, while_asked=STEPS, while_answered=STEPS)
def test_the_answer_and_pending_add_up_to_every_visit_queued(
    before: list[str], while_asked: list[str], while_answered: list[str]
) -> None:
    writer = Writer()
    for step in before:
        writer.step(step)
    mark = writer.outbox.read_mark()  # the read is sent
    for step in while_asked:
        writer.step(step)
    answer = writer.node.counts.get("p", 0)  # the node runs it
    applied_seq = writer.node.applied.get(mark.field, 0)
    for step in while_answered:
        writer.step(step)  # the answer is on its way back
    pending = writer.outbox.pending_at("p", 0, mark, applied_seq)
    assert pending is not None
    assert answer + pending == writer.queued["p"]


@given(before=STEPS, while_asked=STEPS, while_answered=STEPS, after=STEPS)
def test_an_answer_cached_when_settled_adds_up_with_whatever_the_outbox_holds_later(
    before: list[str], while_asked: list[str], while_answered: list[str], after: list[str]
) -> None:
    """The cache holds a stored count, and a cache hit adds what the outbox holds then
    (`pending_for`, the batch being sent counted as not stored); an acknowledgement
    raises the entry to the count the node replied (`StoredCountCache.raise_to`). An
    answer `settled` says may be cached keeps that sum exact from then on."""
    writer = Writer()
    for step in before:
        writer.step(step)
    mark = writer.outbox.read_mark()
    for step in while_asked:
        writer.step(step)
    cached = writer.node.counts.get("p", 0)
    applied_seq = writer.node.applied.get(mark.field, 0)
    for step in while_answered:
        writer.step(step)
    assume(writer.outbox.settled(mark, applied_seq))
    writer.outbox.read_done()
    assert cached + writer.outbox.pending_for("p", 0, 0) == writer.queued["p"]
    for step in after:
        replied = writer.step(step)
        if replied is not None:
            cached = max(cached, replied)
        assert cached + writer.outbox.pending_for("p", 0, 0) == writer.queued["p"]


def test_an_answer_is_not_settled_once_a_batch_left_or_while_it_holds_the_one_being_sent() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(4, {"p": (3, 0)})
    mark = outbox.read_mark()
    assert outbox.settled(mark, applied_seq=3)  # the batch being sent is not in the answer
    assert not outbox.settled(mark, applied_seq=4)  # it is, and the outbox holds it still
    outbox.acknowledge()
    assert not outbox.settled(mark, applied_seq=4)  # it left after the mark


def test_a_batch_stored_after_the_answer_was_taken_is_still_pending() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(4, {"p": (3, 0)})
    mark = outbox.read_mark()
    outbox.acknowledge()  # the node applied it after it answered: applied seq 3
    assert outbox.pending_at("p", 0, mark, applied_seq=3) == 3
    assert outbox.pending_at("p", 0, mark, applied_seq=4) == 0  # applied before it answered


def test_a_reset_newer_than_a_stored_batch_leaves_its_visits_out() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(4, {"p": (3, 1)})
    mark = outbox.read_mark()
    outbox.acknowledge()
    assert outbox.pending_at("p", 2, mark, applied_seq=3) == 0


def test_the_field_asked_about_is_the_writers_own_unless_another_writers_batch_is_sent() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    assert outbox.read_mark().field == f"{WRITER}|{NODE}"
    outbox.inflight = make_batch(4, {"p": (1, 0)})
    assert outbox.read_mark().field == f"{WRITER}|{NODE}"
    outbox.inflight = make_batch(4, {"p": (1, 0)}, writer="w>node-b")
    assert outbox.read_mark().field == f"w>node-b|{NODE}"


def test_removals_that_are_not_stores_cannot_be_told_apart() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(4, {"p": (3, 0)})
    mark = outbox.read_mark()
    outbox.inflight_written_to(0)  # spilled to the journal: not in memory, not stored
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None

    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(4, {"p": (3, 0)})
    mark = outbox.read_mark()
    outbox.acknowledge(stored=False)  # refused, handed to other nodes
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None

    outbox = NodeOutbox(NODE, WRITER)
    outbox.add({"p": 2})
    mark = outbox.read_mark()
    outbox.spill_sealed(lambda batch: 0)  # nothing sealed: nothing removed
    assert outbox.pending_at("p", 0, mark, applied_seq=0) == 2
    assert outbox.seal_queued(Sealer().for_node(NODE)) is not None  # queue to the journal
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None


def test_another_writers_batch_sent_since_the_mark_cannot_be_told_apart() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    mark = outbox.read_mark()  # own field: nothing inflight
    outbox.inflight = make_batch(4, {"p": (3, 0)}, writer="w>node-b")
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None
    outbox.acknowledge()
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None


def test_more_removals_than_remembered_cannot_be_told_apart() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    mark = outbox.read_mark()
    for seq in range(1, 200):
        outbox.inflight = make_batch(seq, {"p": (1, 0)})
        outbox.acknowledge()
    assert outbox.pending_at("p", 0, mark, applied_seq=0) is None
    assert outbox.pending_at("p", 0, outbox.read_mark(), applied_seq=199) == 0


def test_batches_are_remembered_only_while_a_read_is_under_way() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = make_batch(1, {"p": (1, 0)})
    outbox.acknowledge()
    assert outbox.remembered == 0  # no read under way: the stored batch is let go

    first, second = outbox.read_mark(), outbox.read_mark()  # two reads overlap
    outbox.inflight = make_batch(2, {"p": (2, 0)})
    outbox.acknowledge()
    assert outbox.remembered == 1
    outbox.read_done()
    assert outbox.pending_at("p", 0, second, applied_seq=1) == 2  # still known to the other
    outbox.read_done()
    assert outbox.remembered == 0
    assert first.removals == second.removals
