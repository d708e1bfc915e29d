"""Awareness across instances: the merge of other instances' entries (pure), their
decoding, and two ``Rooms`` on one real SQLite file relaying through the store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import msgpack
import pytest

from crdt import codec, keys
from crdt.codec import Awareness, AwarenessEntry
from crdt.history import DocRef, History
from crdt.kv import Engine
from crdt.kv.base import Transaction
from server import awareness
from server.awareness import (
    TIMEOUT_MS,
    Entry,
    States,
    decode_entries,
    decode_header,
    encode_header,
    encode_state,
    merge,
)
from server.metrics import Metrics
from server.quotas import Limits, Quotas
from server.rooms import Room, Rooms
from server.session import Relay, Session
from server.testing import until

NOW = 1_800_000_000_000
ADA = '{"user":"ada"}'
BOB = '{"user":"bob"}'


# --- merge ------------------------------------------------------------------------------


def test_a_remote_state_is_taken_and_reported() -> None:
    states: States = {}
    seen: dict[str, States] = {}
    changes = merge(states, set(), seen, {"b": Entry(NOW, 1, {7: (3, ADA)})}, NOW)
    assert changes == [AwarenessEntry(7, 3, ADA)]
    assert states == {7: (3, ADA)}
    assert seen == {"b": {7: (3, ADA)}}
    # The same entry read again changes nothing.
    assert merge(states, set(), seen, {"b": Entry(NOW + 10, 1, {7: (3, ADA)})}, NOW + 10) == []


def test_an_entry_older_than_the_timeout_is_ignored() -> None:
    states: States = {}
    stale = {"b": Entry(NOW - TIMEOUT_MS - 1, 1, {7: (3, ADA)})}
    assert merge(states, set(), {}, stale, NOW) == []
    assert states == {}
    fresh = {"b": Entry(NOW - TIMEOUT_MS, 1, {7: (3, ADA)})}
    assert merge(states, set(), {}, fresh, NOW) == [AwarenessEntry(7, 3, ADA)]


def test_an_entry_that_loses_a_client_yields_its_removal() -> None:
    states: States = {}
    seen: dict[str, States] = {}
    merge(states, set(), seen, {"b": Entry(NOW, 1, {7: (3, ADA), 8: (1, BOB)})}, NOW)
    changes = merge(states, set(), seen, {"b": Entry(NOW + 50, 1, {8: (1, BOB)})}, NOW + 50)
    assert changes == [AwarenessEntry(7, 4, "null")]
    assert states == {8: (1, BOB)}


def test_an_instance_whose_entry_expires_takes_its_clients_away() -> None:
    states: States = {}
    seen: dict[str, States] = {}
    merge(states, set(), seen, {"b": Entry(NOW, 1, {7: (3, ADA)})}, NOW)
    later = NOW + TIMEOUT_MS + 1  # b crashed: its entry was never renewed
    assert merge(states, set(), seen, {"b": Entry(NOW, 1, {7: (3, ADA)})}, later) == [
        AwarenessEntry(7, 4, "null")
    ]
    assert states == {} and seen == {}


def test_local_clients_and_newer_clocks_are_left_alone() -> None:
    states: States = {5: (9, BOB), 7: (10, ADA)}
    seen: dict[str, States] = {}
    entries = {"b": Entry(NOW, 1, {5: (20, ADA), 7: (4, BOB)})}
    # 5 is a client of this instance's own connection; 7 is known with a newer clock.
    assert merge(states, {5}, seen, entries, NOW) == []
    assert states == {5: (9, BOB), 7: (10, ADA)}
    # b drops both: neither is removed (local / updated since b had it).
    assert merge(states, {5}, seen, {"b": Entry(NOW, 1, {})}, NOW) == []
    assert states == {5: (9, BOB), 7: (10, ADA)}


def test_a_client_that_moved_to_another_instance_is_not_removed() -> None:
    states: States = {}
    seen: dict[str, States] = {}
    merge(states, set(), seen, {"b": Entry(NOW, 1, {7: (3, ADA)})}, NOW)
    moved = {"b": Entry(NOW, 1, {}), "c": Entry(NOW, 1, {7: (3, ADA)})}
    assert merge(states, set(), seen, moved, NOW) == []
    assert states == {7: (3, ADA)}


# --- decoding ----------------------------------------------------------------------------


def test_entries_decode_and_bad_rows_are_skipped() -> None:
    space = keys.pack(("d", "site", 1), keys.tenant_prefix(1))
    rows = sorted(
        [
            (keys.awareness_entry(space, "b"), encode_header(NOW, 4)),
            (keys.awareness_client(space, "b", 7), encode_state(3, ADA)),
            (keys.awareness_client(space, "b", 8), b"\xc1"),  # not msgpack
            (keys.awareness_client(space, "b", 9), msgpack.packb(["x", ADA])),
            (keys.awareness_client(space, "c", 1), encode_state(1, BOB)),  # no header
            (keys.awareness_entry(space, "d"), msgpack.packb({"v": 99, "ms": 1, "gen": 1})),
        ]
    )
    assert decode_entries(rows, space) == {"b": Entry(NOW, 4, {7: (3, ADA)})}


def test_awareness_keys_sit_apart_from_the_history() -> None:
    space = keys.pack(("d", "site", 1), keys.tenant_prefix(1))
    lo, hi = keys.awareness_range(space)
    for key in (keys.awareness_entry(space, "b"), keys.awareness_client(space, "b", 2**40)):
        assert lo <= key < hi
    for other in ("u", "s", "t", "head", "awv"):
        assert not lo <= keys.pack((other,), space) < hi
    assert not lo <= keys.awareness_bump(space) < hi
    assert keys.unpack_awareness(keys.awareness_client(space, "b", 2**40), space) == ("b", 2**40)
    assert keys.unpack_awareness(keys.awareness_entry(space, "b"), space) == ("b", None)
    with pytest.raises(ValueError):
        keys.unpack_awareness(keys.pack(("head",), space), space)


# --- two instances in one process, one real SQLite file -----------------------------------


class Peer:
    def __init__(self, peer_id: int) -> None:
        self.id = peer_id
        self.states: dict[int, tuple[int, str]] = {}

    def send(self, frame: bytes) -> None:
        message = codec.decode(frame)
        if isinstance(message, Awareness):
            for e in codec.decode_awareness(message.payload):
                known = self.states.get(e.client_id)
                if known is None or e.clock >= known[0]:
                    self.states[e.client_id] = (e.clock, e.state)

    def alive(self) -> dict[int, int]:
        return {c: clock for c, (clock, s) in self.states.items() if s != "null"}


class Connections:
    """A real session per peer on ``room``; :meth:`send` passes an awareness frame through
    the peer's session and relays it as the server's link does."""

    def __init__(self, room: Room, peers: tuple[Peer, ...]) -> None:
        self.room = room
        quotas = Quotas(Limits(1000, 100_000, 10, 10, 10))
        self.sessions = {
            p.id: Session(room, tenant="acme", can_write=True, quotas=quotas) for p in peers
        }

    def send(self, peer: Peer, *entries: AwarenessEntry) -> None:
        frame = codec.encode(Awareness(codec.encode_awareness(entries)))
        for action in self.sessions[peer.id].receive_frame(frame, 0.0):
            assert isinstance(action, Relay)
            self.room.relay(peer.id, action.payload, action.entries, action.own)


@pytest.fixture
async def one_room(engines: tuple[Engine, Engine]) -> AsyncIterator[tuple[Rooms, DocRef]]:
    """Rooms on a real store (instance ``a``) and a document to join, closed after."""
    history = History(engines[0])
    rooms = Rooms(history, Metrics(), instance="a")
    try:
        yield rooms, await history.doc("acme", "site", "a.txt", create=True)
    finally:
        await rooms.close()


async def test_a_room_removes_with_a_connection_only_the_clients_it_controls(
    one_room: tuple[Rooms, DocRef],
) -> None:
    """Real sessions on a real room: b echoes a's state (as y-websocket does); the
    echo is not b's, and a newer clock on another connection takes a client over."""
    rooms, ref = one_room
    pa, pb, pc = Peer(1), Peer(2), Peer(3)
    room = await rooms.join(ref, pa)
    await rooms.join(ref, pb)
    await rooms.join(ref, pc)
    published: list[dict[int, int]] = []
    room.awareness_changed = lambda: published.append(dict(room.local))
    connections = Connections(room, (pa, pb, pc))
    send, sessions = connections.send, connections.sessions

    send(pa, AwarenessEntry(1001, 1, ADA))
    send(pb, AwarenessEntry(1001, 1, ADA))  # b's echo
    assert room.local == {1001: pa.id} and published == [{1001: pa.id}]
    rooms.leave(room, pb, sessions[pb.id].awareness_clients)
    assert pc.alive() == {1001: 1}
    # a's client comes back on c with a newer clock (a's socket not yet closed).
    send(pc, AwarenessEntry(1001, 2, BOB))
    assert room.local == {1001: pc.id}
    rooms.leave(room, pa, sessions[pa.id].awareness_clients)
    assert pc.alive() == {1001: 2} and room.states == {1001: (2, BOB)}
    rooms.leave(room, pc, sessions[pc.id].awareness_clients)
    assert room.local == {} and room.states == {}


async def test_a_late_frame_or_a_foreign_removal_leaves_a_taken_over_client_alone(
    one_room: tuple[Rooms, DocRef],
) -> None:
    """c takes a's client over with a newer clock; a late frame of a's (an older clock
    than the room's) does not take it back, and another connection's removal of it is
    ignored: a leaving, or b's removal, must not erase c's live state (both did, found
    in a review)."""
    rooms, ref = one_room
    pa, pb, pc, watcher = Peer(1), Peer(2), Peer(3), Peer(4)
    room = await rooms.join(ref, pa)
    for peer in (pb, pc, watcher):
        await rooms.join(ref, peer)
    connections = Connections(room, (pa, pb, pc))
    send, sessions = connections.send, connections.sessions

    send(pa, AwarenessEntry(1001, 1, ADA))
    send(pc, AwarenessEntry(1001, 3, BOB))  # taken over
    send(pa, AwarenessEntry(1001, 2, ADA))  # a late frame of a's
    assert room.local == {1001: pc.id} and room.states == {1001: (3, BOB)}
    send(pb, AwarenessEntry(1001, 4, "null"))  # b removes a client c controls
    assert room.states == {1001: (3, BOB)} and watcher.alive() == {1001: 3}
    rooms.leave(room, pa, sessions[pa.id].awareness_clients)
    assert room.local == {1001: pc.id} and watcher.alive() == {1001: 3}
    send(pc, AwarenessEntry(1001, 4, "null"))  # its controller removes it
    assert room.local == {} and room.states == {} and watcher.alive() == {}


async def test_a_state_at_the_rooms_clock_from_another_connection_changes_nothing(
    one_room: tuple[Rooms, DocRef],
) -> None:
    """b sends a's client at the clock the room holds, with another state: y-protocols
    peers ignore an entry at the clock they have, so the room does too (it stored it, and
    handed joiners and query-awareness answers a state its peers never had). Nor does
    such an entry take control: a's late frame at the clock c took the client over
    with leaves it c's."""
    rooms, ref = one_room
    pa, pb, pc, watcher = Peer(1), Peer(2), Peer(3), Peer(4)
    room = await rooms.join(ref, pa)
    for peer in (pb, pc, watcher):
        await rooms.join(ref, peer)
    send = Connections(room, (pa, pb, pc)).send

    send(pa, AwarenessEntry(1001, 5, ADA))
    send(pb, AwarenessEntry(1001, 5, BOB))  # same clock, another state
    assert room.states == {1001: (5, ADA)} and room.local == {1001: pa.id}
    assert watcher.states == {1001: (5, ADA)}
    payload = room.awareness_payload()
    assert payload is not None
    assert list(codec.decode_awareness(payload)) == [AwarenessEntry(1001, 5, ADA)]

    send(pc, AwarenessEntry(1001, 6, BOB))  # c takes the client over
    send(pa, AwarenessEntry(1001, 6, ADA))  # a's frame at that clock: not a's again
    assert room.states == {1001: (6, BOB)} and room.local == {1001: pc.id}
    send(pc, AwarenessEntry(1001, 6, ADA))  # its controller, same clock: as on peers
    assert room.states == {1001: (6, BOB)} and watcher.states == {1001: (6, BOB)}


async def test_a_state_not_newer_than_the_rooms_removal_is_answered_with_it(
    one_room: tuple[Rooms, DocRef],
) -> None:
    """a's connection closes: its client is removed at clock 6. Back on a new connection
    (d), the client sends its state at clock 5 again, as y-websocket does after a
    reconnect: the peers ignore it (they hold 6), so d alone is sent the removal (at 6,
    to which y-protocols answers with its state at 7); at 7 nothing is sent back."""
    rooms, ref = one_room
    pa, pd, watcher = Peer(1), Peer(2), Peer(3)
    room = await rooms.join(ref, pa)
    await rooms.join(ref, watcher)
    connections = Connections(room, (pa, pd))
    send, sessions = connections.send, connections.sessions

    send(pa, AwarenessEntry(1001, 5, ADA))
    rooms.leave(room, pa, sessions[pa.id].awareness_clients)
    assert watcher.states == {1001: (6, "null")}
    await rooms.join(ref, pd)
    send(pd, AwarenessEntry(1001, 5, ADA))
    assert pd.states[1001] == (6, "null")  # the relayed state, then the removal
    assert watcher.alive() == {}
    send(pd, AwarenessEntry(1001, 7, ADA))  # y-protocols' answer
    assert pd.states[1001] == (7, ADA) and watcher.alive() == {1001: 7}
    assert room.removed == {}


async def test_an_echo_is_not_relayed_and_news_is(one_room: tuple[Rooms, DocRef]) -> None:
    """y-websocket clients send back every state they receive: relayed, each echo went to
    every peer again (about N x N frames per change in a room of N). A frame that brings
    the room nothing is dropped; a newer clock, a new client or a removal is relayed."""
    rooms, ref = one_room
    frames: list[int] = []

    class Counting(Peer):
        def send(self, frame: bytes) -> None:
            frames.append(self.id)
            super().send(frame)

    pa, pb, watcher = Counting(1), Counting(2), Counting(3)
    room = await rooms.join(ref, pa)
    for peer in (pb, watcher):
        await rooms.join(ref, peer)
    connections = Connections(room, (pa, pb))

    def send(peer: Peer, *entries: AwarenessEntry) -> int:
        frames.clear()
        connections.send(peer, *entries)
        return len(frames)

    assert send(pa, AwarenessEntry(1001, 1, ADA)) == 3  # new: to every peer
    assert send(pb, AwarenessEntry(1001, 1, ADA)) == 0  # b's echo
    assert send(pb, AwarenessEntry(1001, 1, ADA), AwarenessEntry(1002, 1, BOB)) == 3
    assert send(pa, AwarenessEntry(1001, 2, ADA)) == 3  # a renewal: a newer clock
    assert send(pb, AwarenessEntry(1001, 1, ADA)) == 0  # stale
    assert send(pa, AwarenessEntry(1001, 2, "null")) == 3  # its removal
    assert send(pb, AwarenessEntry(1001, 2, "null")) == 0  # the echo of the removal
    assert watcher.alive() == {1002: 1}


async def test_two_instances_relay_through_the_store_coalesced(
    engines: tuple[Engine, Engine],
) -> None:
    metrics_a, metrics_b = Metrics(), Metrics()
    history_a, history_b = History(engines[0]), History(engines[1])
    rooms_a = Rooms(history_a, metrics_a, instance="a")
    rooms_b = Rooms(history_b, metrics_b, instance="b")
    ref_a = await history_a.doc("acme", "site", "a.txt", create=True)
    ref_b = await history_b.doc("acme", "site", "a.txt")
    try:
        pa, pb = Peer(1), Peer(2)
        room_a = await rooms_a.join(ref_a, pa)
        room_b = await rooms_b.join(ref_b, pb)
        for clock in range(1, 201):  # a cursor moving: 200 messages in a burst
            state = json.dumps({"cursor": clock})
            entries = (AwarenessEntry(1001, clock, state),)
            room_a.relay(pa.id, codec.encode_awareness(entries), entries, (1001,))
        await until(lambda: pb.alive().get(1001) == 200)
        assert metrics_a.awareness_publishes.get() < 20  # coalesced, not one per message
        assert metrics_b.awareness_remote.get() >= 1
        assert 1001 in room_b.states and 1001 not in room_b.local

        rooms_b.leave(room_b, pb, [])
        pc = Peer(3)  # a joiner on b gets a's client from the room (remote state)
        room_b = await rooms_b.join(ref_b, pc)
        payload = room_b.awareness_payload()  # what the session sends on open
        assert payload is not None
        pc.send(codec.encode(Awareness(payload)))
        assert pc.alive() == {1001: 200}

        rooms_a.leave(room_a, pa, [1001])  # a's connection closes
        await until(lambda: 1001 not in pc.alive())
        assert pc.states[1001] == (201, "null")
        # Nothing of a's remains in the store, and nothing was written to the history.
        lo, hi = keys.awareness_range(ref_a.space)
        assert await engines[1].read(lambda tr: tr.get_range(lo, hi)) == []
        assert await history_b.updates(ref_b) == []
    finally:
        await rooms_a.close()
        await rooms_b.close()


async def test_a_crashed_instances_clients_vanish_and_live_entries_are_renewed(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(awareness, "TIMEOUT_MS", 400)
    monkeypatch.setattr(awareness, "EXPIRY_CHECK", 0.05)
    monkeypatch.setattr(awareness, "RENEW_EVERY", 0.1)
    history_a, history_b = History(engines[0]), History(engines[1])
    rooms_a = Rooms(history_a, Metrics(), instance="a")
    rooms_b = Rooms(history_b, Metrics(), instance="b")
    ref = await history_a.doc("acme", "site", "a.txt", create=True)
    try:
        pa, pb = Peer(1), Peer(2)
        room_a = await rooms_a.join(ref, pa)
        await rooms_b.join(ref, pb)
        entries = (AwarenessEntry(1001, 1, ADA),)
        room_a.relay(pa.id, codec.encode_awareness(entries), entries, (1001,))
        # A ghost: an entry of an instance that died without clearing it.
        ms = int(time.time() * 1000)

        def ghost(tr: Transaction) -> None:
            tr.set(keys.awareness_entry(ref.space, "ghost"), encode_header(ms, 1))
            tr.set(keys.awareness_client(ref.space, "ghost", 666), encode_state(1, BOB))
            tr.add(keys.awareness_bump(ref.space), 1)

        await engines[1].transact(ghost)
        await until(lambda: pb.alive() == {1001: 1, 666: 1})
        # The ghost is never renewed: gone after the timeout. a's client is renewed
        # (its header's ms moves on) and stays.
        await until(lambda: 666 not in pb.alive(), timeout=3.0)
        assert pb.states[666] == (2, "null")
        header = keys.awareness_entry(ref.space, "a")

        async def published_ms() -> int:
            raw = await engines[1].read(lambda tr: tr.get(header))
            assert raw is not None
            return decode_header(raw)[0]

        first = await published_ms()
        await asyncio.sleep(0.6)  # longer than the timeout
        assert pb.alive() == {1001: 1}
        assert await published_ms() > first
    finally:
        await rooms_a.close()
        await rooms_b.close()


async def test_an_instance_alone_writes_no_awareness_until_another_one_comes(
    engines: tuple[Engine, Engine],
) -> None:
    """A single server shares its clients' awareness with nobody, so it writes none to
    the store; the moment a second instance registers, the first one publishes what it
    has, and leaving the registry makes the other stop again."""
    metrics_a = Metrics()
    history_a, history_b = History(engines[0]), History(engines[1])
    rooms_a = Rooms(history_a, metrics_a, instance="a")
    rooms_b = Rooms(history_b, Metrics(), instance="b")
    ref = await history_a.doc("acme", "site", "a.txt", create=True)
    lo, hi = keys.awareness_range(ref.space)
    try:
        pa = Peer(1)
        room_a = await rooms_a.join(ref, pa)
        entries = (AwarenessEntry(1001, 1, ADA),)
        room_a.relay(pa.id, codec.encode_awareness(entries), entries, (1001,))
        await asyncio.sleep(0.3)  # several publishing intervals
        assert metrics_a.awareness_publishes.get() == 0
        assert await engines[0].read(lambda tr: tr.get_range(lo, hi)) == []
        assert not rooms_a.awareness.others
        link = rooms_a.awareness._links[ref.space]
        assert link.follower is None  # alone: no task and no watch per room either

        pb = Peer(2)
        await rooms_b.join(ref, pb)  # a second instance: a learns it through the registry
        await until(lambda: pb.alive() == {1001: 1})
        assert rooms_a.awareness.others and metrics_a.awareness_publishes.get() >= 1
        assert link.follower is not None and not link.follower.done()
        await rooms_b.close()  # b leaves the registry: a is alone again and clears
        await until(lambda: not rooms_a.awareness.others)
        await until(lambda: metrics_a.awareness_publishes.get() >= 2)
        assert await engines[0].read(lambda tr: tr.get_range(lo, hi)) == []
    finally:
        await rooms_a.close()
        await rooms_b.close()
