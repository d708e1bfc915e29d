"""The outbox sends local updates merged, and drops them only once acknowledged."""

from __future__ import annotations

from pycrdt import Doc, Text

from client.outbox import Outbox, Pending
from crdt.history import update_hash
from crdt.versionstamp import Versionstamp


def vs(n: int) -> Versionstamp:
    return Versionstamp(n.to_bytes(12, "big"))


def local_updates(count: int) -> tuple[Doc[Text], list[bytes]]:
    doc: Doc[Text] = Doc()
    text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for i in range(count):
        text.insert(len(text), f"{i},")
    return doc, updates


def test_many_updates_travel_as_one_merged_send() -> None:
    doc, updates = local_updates(1000)
    outbox = Outbox()
    for i, update in enumerate(updates):
        outbox.add(vs(i + 1), update)
    send = outbox.take()
    assert send is not None and send.count == 1000 and send.last == vs(1000)
    assert send.hash == update_hash(send.update)
    replica: Doc[Text] = Doc()
    replica.apply_update(send.update)
    assert str(replica.get("content", type=Text)) == str(doc.get("content", type=Text))
    assert outbox.take() is None  # everything is in flight
    assert len(outbox) == 1000 and outbox.unsent == 0


def test_sends_are_bounded_and_acks_move_the_cursor_in_order() -> None:
    _, updates = local_updates(10)
    outbox = Outbox(max_updates=4)
    for i, update in enumerate(updates):
        outbox.add(vs(i + 1), update)
    first, second, third = outbox.take(), outbox.take(), outbox.take()
    assert first and second and third
    assert [s.count for s in (first, second, third)] == [4, 4, 2]
    assert outbox.ack(second.hash, vs(100)) is None  # out of order: nothing dropped yet
    assert len(outbox) == 10
    assert outbox.ack(first.hash, vs(99)) == vs(8)  # both acknowledged: cursor after 8
    assert len(outbox) == 2 and outbox.cursor == vs(8)
    assert outbox.ack(b"\x00" * 16, vs(101)) is None  # unknown hash
    assert outbox.ack(third.hash, vs(102)) == vs(10)
    assert len(outbox) == 0


def test_reset_resends_what_was_in_flight() -> None:
    _, updates = local_updates(3)
    outbox = Outbox()
    for i, update in enumerate(updates):
        outbox.add(vs(i + 1), update)
    before = outbox.take()
    assert before is not None
    outbox.reset()  # the connection dropped before the ack
    again = outbox.take()
    assert again is not None and again.update == before.update  # same bytes: idempotent
    assert outbox.ack(before.hash, vs(9)) == vs(3)


def test_a_cursor_from_the_state_skips_acknowledged_updates() -> None:
    _, updates = local_updates(3)
    pending = [Pending(vs(i + 1), u) for i, u in enumerate(updates)]
    outbox = Outbox(vs(2), pending)
    assert len(outbox) == 1
    send = outbox.take()
    assert send is not None and send.update == updates[2]  # a single update goes as is


def test_adding_an_update_twice_or_an_acknowledged_one_does_nothing() -> None:
    _, updates = local_updates(2)
    outbox = Outbox(vs(1))
    outbox.add(vs(1), updates[0])  # already acknowledged
    outbox.add(vs(2), updates[1])
    outbox.add(vs(2), updates[1])  # re-added after a partly failed append
    assert len(outbox) == 1


def test_it_tells_a_server_that_lacks_more_than_the_outbox_and_sends_it_all_at_once() -> None:
    """The updates 0-4 were acknowledged, 5-9 wait. A server whose state vector holds
    0-4 lacks only the outbox; one restored to a state before 3 lacks more: then one
    send carries all it lacks, and its ack moves the cursor over the whole outbox."""
    doc, updates = local_updates(10)
    outbox = Outbox(vs(5), [Pending(vs(i + 1), u) for i, u in enumerate(updates)])
    assert len(outbox) == 5
    server: Doc[Text] = Doc()
    for update in updates[:5]:
        server.apply_update(update)
    assert outbox.covers(doc.get_update(server.get_state()))
    restored: Doc[Text] = Doc()
    for update in updates[:3]:
        restored.apply_update(update)
    missing = doc.get_update(restored.get_state())
    assert not outbox.covers(missing)
    send = outbox.take_all(missing)
    assert send is not None and send.count == 5 and send.update == missing
    assert outbox.take() is None and outbox.take_all(missing) is None
    assert outbox.ack(send.hash, vs(50)) == vs(10) and len(outbox) == 0


def test_last_is_the_last_local_update_acknowledged_or_not() -> None:
    _, updates = local_updates(3)
    assert Outbox().last is None  # no local update at all
    assert Outbox(vs(5)).last == vs(5)  # all acknowledged: the cursor
    outbox = Outbox(vs(5))
    for i, update in enumerate(updates):
        outbox.add(vs(i + 6), update)
    assert outbox.last == vs(8)
    send = outbox.take()
    assert send is not None
    outbox.ack(send.hash, vs(100))
    assert len(outbox) == 0 and outbox.last == vs(8)


def test_an_update_the_server_stored_first_is_acknowledged_unless_others_wait() -> None:
    """A new file's ``Create``: recorded after the server stored it, it moves the cursor
    at once; behind updates still waiting, it is sent in its turn (found stored)."""
    _, (first, second) = local_updates(2)
    outbox = Outbox(vs(1))
    outbox.add_stored(vs(3), first)
    assert outbox.cursor == vs(3) and len(outbox) == 0 and outbox.take() is None
    outbox.add(vs(4), second)
    outbox.add_stored(vs(5), first)
    assert outbox.cursor == vs(3) and len(outbox) == 2
