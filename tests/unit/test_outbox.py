"""NodeOutbox: staging order, resend-unchanged, merging, and pending arithmetic."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.services.batch import Batch, PendingKeys, PendingVisitors
from visit_counter.services.outbox import NodeOutbox, Seal

NODE = "redis://n1:6379"
WRITER = "writer-a"
SEALED_HOUR = 495_000


class Sealer:
    """Stands in for Shipper._seal_for: one seq counter for every node, epochs per page."""

    def __init__(self, writer: str = WRITER) -> None:
        self.writer = writer
        self.seq = 0
        self.epochs: dict[str, int] = {}
        self.sealed: list[Batch] = []

    def for_node(self, node: str) -> Seal:
        def seal(queued: dict[str, int], keys: PendingKeys, visitors: PendingVisitors) -> Batch:
            self.seq += 1
            batch = Batch(
                writer=self.writer,
                seq=self.seq,
                node=node,
                increments={page: (n, self.epochs.get(page, 0)) for page, n in queued.items()},
                keys={page: tuple(sorted(page_keys)) for page, page_keys in keys.items()},
                sealed_hour=SEALED_HOUR,
                visitors={page: tuple(sorted(ids)) for page, ids in visitors.items()},
            )
            self.sealed.append(batch)
            return batch

        return seal


class FakeJournal:
    """Offsets -> JSON lines, as on disk; reads parse them back and are recorded."""

    def __init__(self) -> None:
        self.batches: dict[int, Batch] = {}
        self.lines: dict[int, str] = {}
        self.reads: list[int] = []
        self._next = 0

    def append(self, batch: Batch) -> int:
        offset = self._next
        self.batches[offset] = batch
        self.lines[offset] = batch.to_json()
        self._next += len(self.lines[offset]) + 1
        return offset

    def read(self, offset: int) -> Batch:
        self.reads.append(offset)
        return Batch.from_json(self.lines[offset])


def make_batch(seq: int, increments: dict[str, tuple[int, int]], writer: str = WRITER) -> Batch:
    return Batch(writer=writer, seq=seq, node=NODE, increments=increments)


def test_a_new_outbox_is_empty_and_has_nothing_to_send() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()

    assert outbox.empty
    assert outbox.next_batch(sealer.for_node(NODE), journal.read) is None
    assert sealer.sealed == []
    assert journal.reads == []
    assert (outbox.pages_in_memory, outbox.visits_in_memory) == (0, 0)


def test_add_merges_into_the_queue() -> None:
    outbox = NodeOutbox(NODE, WRITER)

    outbox.add({"a": 1, "b": 2})
    outbox.add({"a": 3, "c": 1})

    assert outbox.queued == {"a": 4, "b": 2, "c": 1}
    assert (outbox.pages_in_memory, outbox.visits_in_memory) == (3, 7)
    assert not outbox.empty


def test_a_key_queued_twice_is_one_visit_and_rides_in_the_sealed_batch() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.add({"a": 3}, {"a": {"k1", "k2"}})  # two keyed visits and an unkeyed one
    outbox.add({"a": 2, "b": 1}, {"a": {"k2", "k3"}, "b": {"k1"}})  # k2 again (a retry)

    assert outbox.queued == {"a": 4, "b": 1}
    batch = outbox.next_batch(Sealer().for_node(NODE), FakeJournal().read)

    assert batch is not None
    assert batch.increments == {"a": (4, 0), "b": (1, 0)}
    assert batch.keys == {"a": ("k1", "k2", "k3"), "b": ("k1",)}
    assert (outbox.queued, outbox.queued_keys) == ({}, {})
    outbox.add({"c": 2}, {"c": {"k9"}})
    assert (outbox.pages_in_memory, outbox.entries_in_memory) == (3, 8), "3 pages and 5 keys"


def test_a_visitor_queued_twice_is_held_once_and_rides_in_the_sealed_batch() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.add({"a": 2}, visitors={"a": {"v1", "v2"}})
    outbox.add({"a": 1, "b": 1}, visitors={"a": {"v2"}, "b": {"v1"}})  # v2 came back

    assert outbox.queued == {"a": 3, "b": 1}, "visitors never change the counts"
    assert outbox.entries_in_memory == 2 + 3, "2 pages and 3 visitor ids"
    batch = outbox.next_batch(Sealer().for_node(NODE), FakeJournal().read)

    assert batch is not None
    assert batch.visitors == {"a": ("v1", "v2"), "b": ("v1",)}
    assert batch.sealed_hour == SEALED_HOUR
    assert outbox.queued_visitors == {}
    assert Batch.from_json(batch.to_json()) == batch, "they survive the journal's format"
    assert batch.rerouted(lambda page: page.upper(), 2)[0].visitors == {"a": ("v1", "v2")}


def test_forget_drops_a_pages_queued_visits_keys_and_visitors() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.add({"a": 1, "b": 1}, {"a": {"k"}}, {"a": {"v"}, "b": {"w"}})
    outbox.forget("a")

    assert (outbox.queued, outbox.queued_keys) == ({"b": 1}, {})
    assert outbox.queued_visitors == {"b": {"w"}}


def test_keys_survive_the_journal_format_and_follow_their_pages_when_rerouted() -> None:
    batch = Batch(
        writer=WRITER,
        seq=4,
        node=NODE,
        increments={"a": (2, 1), "b": (1, 0), "c": (5, 0)},
        version=3,
        keys={"a": ("k1", "k2"), "c": ("k3",)},
    )
    assert Batch.from_json(batch.to_json()) == batch
    assert "keys" not in make_batch(1, {"a": (1, 0)}).to_json(), "unkeyed lines stay as they were"

    parts = batch.rerouted({"a": "n1", "b": "n2", "c": "n2"}.__getitem__, 4)

    assert {part.node: dict(part.keys) for part in parts} == {
        "n1": {"a": ("k1", "k2")},
        "n2": {"c": ("k3",)},
    }
    assert batch.pending_keys() == {"a": {"k1", "k2"}, "c": {"k3"}}


def test_batches_go_out_inflight_then_spilled_oldest_first_then_queued() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    seal = sealer.for_node(NODE)

    outbox.add({"a": 1})
    first = outbox.next_batch(seal, journal.read)  # becomes inflight
    older = journal.append(make_batch(90, {"s1": (2, 0)}, writer="dead"))
    newer = journal.append(make_batch(91, {"s2": (3, 0)}, writer="dead"))
    outbox.spilled.extend([older, newer])
    outbox.add({"b": 5})

    sent = []
    while (batch := outbox.next_batch(seal, journal.read)) is not None:
        sent.append(batch)
        outbox.acknowledge()

    assert sent[0] is first
    assert sent[1] == journal.batches[older]
    assert sent[2] == journal.batches[newer]
    assert dict(sent[3].increments) == {"b": (5, 0)}
    assert journal.reads == [older, newer]
    assert [batch.seq for batch in sealer.sealed] == [first.seq, sent[3].seq]
    assert outbox.empty
    assert not outbox.spilled


def test_the_queue_is_not_sealed_while_spilled_batches_wait() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    offset = journal.append(make_batch(1, {"s": (1, 0)}))
    outbox.spilled.append(offset)
    outbox.add({"q": 1})

    batch = outbox.next_batch(sealer.for_node(NODE), journal.read)

    assert batch == journal.batches[offset]
    assert outbox.inflight_offset == offset
    assert sealer.sealed == []
    assert outbox.queued == {"q": 1}


def test_inflight_is_resent_unchanged_until_acknowledged() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    seal = sealer.for_node(NODE)
    outbox.add({"a": 1, "b": 2})

    first = outbox.next_batch(seal, journal.read)
    assert first is not None
    snapshot = (first.writer, first.seq, dict(first.increments))
    outbox.add({"a": 10, "c": 1})  # new visits while the send is out
    retry = outbox.next_batch(seal, journal.read)  # a failed send: try again

    assert retry is first
    assert (retry.writer, retry.seq, dict(retry.increments)) == snapshot
    assert len(sealer.sealed) == 1
    assert outbox.queued == {"a": 10, "c": 1}

    assert outbox.acknowledge() is first
    assert outbox.inflight is None
    following = outbox.next_batch(seal, journal.read)
    assert following is not None
    assert following.seq > first.seq
    assert dict(following.increments) == {"a": (10, 0), "c": (1, 0)}


def test_acknowledging_a_spilled_batch_drops_its_offset_only() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    offsets = [journal.append(make_batch(seq, {f"p{seq}": (1, 0)})) for seq in (1, 2)]
    outbox.spilled.extend(offsets)

    outbox.next_batch(sealer.for_node(NODE), journal.read)
    acknowledged = outbox.acknowledge()

    assert acknowledged == journal.batches[offsets[0]]
    assert list(outbox.spilled) == [offsets[1]]
    assert outbox.inflight_offset is None


def test_acknowledging_a_sealed_batch_leaves_spilled_offsets_alone() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    outbox.add({"a": 1})
    outbox.next_batch(sealer.for_node(NODE), journal.read)
    offset = journal.append(make_batch(50, {"s": (1, 0)}))
    outbox.spilled.append(offset)  # spilled while the inflight batch was out

    outbox.acknowledge()

    assert list(outbox.spilled) == [offset]


def test_seal_queued_takes_the_queue_and_leaves_inflight_alone() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    seal = sealer.for_node(NODE)
    assert outbox.seal_queued(seal) is None
    assert sealer.sealed == []

    outbox.add({"a": 1})
    inflight = outbox.next_batch(seal, journal.read)
    outbox.add({"b": 2, "c": 3})
    sealed = outbox.seal_queued(seal)

    assert sealed is not None
    assert dict(sealed.increments) == {"b": (2, 0), "c": (3, 0)}
    assert outbox.queued == {}
    assert outbox.inflight is inflight
    assert outbox.visits_in_memory == 1


def test_memory_counts_cover_inflight_and_queued() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    outbox.add({"a": 2, "b": 3})
    outbox.next_batch(sealer.for_node(NODE), journal.read)
    outbox.add({"c": 4})
    outbox.spilled.append(journal.append(make_batch(99, {"d": (100, 0)})))

    assert outbox.visits_in_memory == 9
    assert outbox.pages_in_memory == 3


def test_release_forgets_a_failed_batch_from_disk_and_rereads_it_next_time() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    offset = journal.append(make_batch(7, {"s": (2, 0)}))
    outbox.spilled.append(offset)
    outbox.add({"q": 1})
    failed = outbox.next_batch(sealer.for_node(NODE), journal.read)

    outbox.release()

    assert outbox.inflight is None
    assert outbox.inflight_offset is None
    assert list(outbox.spilled) == [offset]
    assert outbox.visits_in_memory == 1
    retry = outbox.next_batch(sealer.for_node(NODE), journal.read)
    assert retry == failed
    assert journal.reads == [offset, offset]
    assert sealer.sealed == []


def test_release_keeps_a_failed_batch_that_exists_only_in_memory() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    outbox.add({"a": 1})
    failed = outbox.next_batch(sealer.for_node(NODE), journal.read)

    outbox.release()

    assert outbox.inflight is failed
    assert outbox.next_batch(sealer.for_node(NODE), journal.read) is failed


def test_an_inflight_batch_written_to_disk_goes_out_before_older_spills() -> None:
    outbox = NodeOutbox(NODE, WRITER)
    sealer, journal = Sealer(), FakeJournal()
    seal = sealer.for_node(NODE)
    outbox.add({"a": 1})
    inflight = outbox.next_batch(seal, journal.read)
    assert inflight is not None
    outbox.add({"b": 2})
    later = outbox.seal_queued(seal)
    assert later is not None
    later_offset = journal.append(later)
    outbox.spilled.append(later_offset)

    inflight_offset = journal.append(inflight)
    outbox.inflight_written_to(inflight_offset)

    assert outbox.inflight is None
    assert outbox.visits_in_memory == 0
    assert list(outbox.spilled) == [inflight_offset, later_offset]
    sent = []
    while (batch := outbox.next_batch(seal, journal.read)) is not None:
        sent.append(batch)
        outbox.acknowledge()
    assert sent == [inflight, later]
    assert [batch.seq for batch in sent] == sorted(batch.seq for batch in sent)


def outbox_with(
    inflight: Batch | None, queued: dict[str, int] | None = None, spilled: bool = False
) -> NodeOutbox:
    outbox = NodeOutbox(NODE, WRITER)
    outbox.inflight = inflight
    outbox.queued = dict(queued or {})
    if spilled:
        outbox.spilled.append(0)
    return outbox


@pytest.mark.parametrize(
    ("inflight", "queued", "epoch", "applied_seq", "expected"),
    [
        pytest.param(None, {"p": 3}, 0, 0, 3, id="queued-only"),
        pytest.param(make_batch(5, {"p": (4, 0)}), {}, 0, 0, 4, id="inflight-only"),
        pytest.param(make_batch(5, {"p": (4, 0)}), {"p": 3}, 0, 0, 7, id="inflight-and-queued"),
        # A tag below the newest reset known here: that reset came after those visits.
        pytest.param(make_batch(5, {"p": (4, 1)}), {"p": 3}, 2, 0, 3, id="inflight-old-tag"),
        pytest.param(make_batch(5, {"p": (4, 1)}), {"p": 3}, 1, 0, 7, id="inflight-same-epoch"),
        # A tag above it (a floor: the node's reset count read at start, batch.py): kept.
        pytest.param(make_batch(5, {"p": (4, 3)}), {"p": 3}, 1, 0, 7, id="inflight-floor-tag"),
        pytest.param(make_batch(5, {"p": (4, 0)}), {"p": 3}, 0, 4, 7, id="seq-above-applied"),
        pytest.param(make_batch(5, {"p": (4, 0)}), {"p": 3}, 0, 5, 3, id="seq-equals-applied"),
        pytest.param(make_batch(5, {"p": (4, 0)}), {"p": 3}, 0, 9, 3, id="seq-below-applied"),
        pytest.param(make_batch(5, {"q": (4, 0)}), {"p": 3}, 0, 0, 3, id="page-not-inflight"),
        pytest.param(make_batch(5, {"q": (4, 0)}), {}, 0, 0, 0, id="nothing-for-page"),
    ],
)
def test_pending_for(
    inflight: Batch | None, queued: dict[str, int], epoch: int, applied_seq: int, expected: int
) -> None:
    outbox = outbox_with(inflight, queued)

    assert outbox.pending_for("p", epoch=epoch, applied_seq=applied_seq) == expected


def test_pending_for_does_not_count_spilled_batches_still_on_disk() -> None:
    outbox = outbox_with(None, {"p": 2}, spilled=True)

    assert outbox.pending_for("p", epoch=0, applied_seq=0) == 2


PAGES = [f"page{i}" for i in range(8)]
NODES = ["redis://n1:6379", "redis://n2:6379", "redis://n3:6379"]


class SwapThenSend(RuleBasedStateMachine):
    """VisitCounter's bookkeeping without I/O: a buffer swapped into per-node outboxes,
    batches sent one at a time, acknowledged or failed (release()), and an unreachable
    node's memory moved to a journal (inflight first, then the sealed queue), as
    VisitCounter._distribute, _drain and _spill do."""

    def __init__(self) -> None:
        super().__init__()
        self.ring = ConsistentHashRing(NODES, virtual_nodes=10)
        self.sealer = Sealer()
        self.journal = FakeJournal()
        self.outboxes = {node: NodeOutbox(node, WRITER) for node in NODES}
        self.buffer: dict[str, int] = {}
        self.increments: Counter[str] = Counter()
        self.acknowledged: Counter[str] = Counter()
        self.handed_out: dict[tuple[str, int], tuple[str, dict[str, tuple[int, int]], Batch]] = {}
        self.last_sent_seq = dict.fromkeys(NODES, 0)
        self.must_resend: dict[str, tuple[str, int]] = {}
        self.sending: set[str] = set()  # nodes with a send under way (a running drain)

    def nodes_sending(self) -> list[str]:
        return sorted(self.sending)

    @rule(page=st.sampled_from(PAGES), times=st.integers(min_value=1, max_value=3))
    def increment(self, page: str, times: int) -> None:
        for _ in range(times):
            self.buffer[page] = self.buffer.get(page, 0) + 1
            self.increments[page] += 1

    @rule()
    def distribute(self) -> None:
        swapped, self.buffer = self.buffer, {}
        by_owner: dict[str, dict[str, int]] = {}
        for page, count in swapped.items():
            by_owner.setdefault(self.ring.owner(page), {})[page] = count
        for node, increments in by_owner.items():
            self.outboxes[node].add(increments)

    @rule(node=st.sampled_from(NODES))
    def spill(self, node: str) -> None:
        outbox = self.outboxes[node]
        inflight = outbox.inflight
        if inflight is not None and outbox.inflight_offset is None:
            if node in self.sending:
                return  # being sent right now; VisitCounter spills after the attempt
            outbox.inflight_written_to(self.journal.append(inflight))
        batch = outbox.seal_queued(self.sealer.for_node(node))
        if batch is not None:
            outbox.spilled.append(self.journal.append(batch))

    @rule(node=st.sampled_from(NODES))
    def next_batch(self, node: str) -> None:
        if node in self.sending:
            return  # one drain per node at a time
        outbox = self.outboxes[node]
        before = outbox.inflight
        batch = outbox.next_batch(self.sealer.for_node(node), self.journal.read)
        if before is not None:
            assert batch is before, "a batch already out was replaced before its ack"
        if node in self.must_resend:
            assert batch is not None
            assert (batch.writer, batch.seq) == self.must_resend.pop(node)
        if batch is None:
            assert outbox.empty
            return
        assert batch.node == node
        key = (batch.writer, batch.seq)
        if key in self.handed_out:
            # Resent (perhaps re-read from disk): byte for byte what went out first.
            assert (batch.node, dict(batch.increments)) == self.handed_out[key][:2]
        else:
            # A writer's seqs must reach each node in increasing order (batch.py relies on it).
            assert batch.seq > self.last_sent_seq[node]
            self.last_sent_seq[node] = batch.seq
            self.handed_out[key] = (batch.node, dict(batch.increments), batch)
        self.sending.add(node)

    @precondition(lambda self: bool(self.sending))
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.nodes_sending()))
        self.sending.discard(node)
        batch = self.outboxes[node].acknowledge()
        for page, (count, _) in batch.increments.items():
            self.acknowledged[page] += count

    @precondition(lambda self: bool(self.sending))
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(self.nodes_sending()))
        self.sending.discard(node)
        inflight = self.outboxes[node].inflight
        assert inflight is not None
        self.outboxes[node].release()
        self.must_resend[node] = (inflight.writer, inflight.seq)

    @invariant()
    def every_increment_is_in_exactly_one_place(self) -> None:
        accounted: Counter[str] = Counter(self.acknowledged)
        accounted.update(self.buffer)
        on_disk_only = 0
        for outbox in self.outboxes.values():
            accounted.update(outbox.queued)
            if outbox.inflight is not None:
                accounted.update(
                    {page: count for page, (count, _) in outbox.inflight.increments.items()}
                )
            for offset in outbox.spilled:
                if offset != outbox.inflight_offset:
                    batch = self.journal.batches[offset]
                    accounted.update({page: c for page, (c, _) in batch.increments.items()})
                    on_disk_only += batch.visits
        assert accounted == self.increments

        in_memory = sum(self.buffer.values()) + sum(
            box.visits_in_memory for box in self.outboxes.values()
        )
        acknowledged = sum(self.acknowledged.values())
        assert acknowledged + in_memory + on_disk_only == sum(self.increments.values())

    @invariant()
    def no_batch_changes_after_it_was_handed_out(self) -> None:
        for (writer, seq), (node, increments, batch) in self.handed_out.items():
            assert (batch.writer, batch.seq, batch.node) == (writer, seq, node)
            assert dict(batch.increments) == increments


SwapThenSend.TestCase.settings = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    stateful_step_count=40,
)
TestSwapThenSend = SwapThenSend.TestCase


def test_an_unreadable_spilled_batch_is_dropped_and_the_next_one_is_sent() -> None:
    outbox = NodeOutbox("node", WRITER)
    outbox.spilled.extend([10, 20])
    later = make_batch(7, {"p": (2, 0)})

    def read(offset: int) -> Batch:
        if offset == 10:
            raise ValueError("damaged record")
        return later

    with pytest.raises(ValueError, match="damaged"):
        outbox.next_batch(lambda queued: make_batch(9, {}), read)
    assert outbox.drop_unreadable() == 10
    assert outbox.next_batch(lambda queued: make_batch(9, {}), read) is later
    assert outbox.acknowledge() is later
    assert outbox.empty


def test_pending_for_counts_rerouted_batches_not_sent_yet() -> None:
    outbox = outbox_with(None, {"p": 1})
    outbox.sealed.append(make_batch(3, {"p": (2, 0), "q": (5, 0)}, writer="w>node-b"))
    outbox.sealed.append(make_batch(4, {"p": (4, 0)}, writer="w>node-b"))
    assert outbox.pending_for("p", epoch=0, applied_seq=0) == 7
    assert outbox.pages_in_memory == 1 + 3
    assert outbox.visits_in_memory == 1 + 11
    assert outbox.next_batch(
        lambda queued: make_batch(9, {}), lambda offset: make_batch(0, {})
    ) == make_batch(3, {"p": (2, 0), "q": (5, 0)}, writer="w>node-b")
