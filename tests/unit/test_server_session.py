"""The connection state machine: messages in, actions out (no loop, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pycrdt import Doc, Text

from crdt import codec
from crdt.codec import (
    CREATED_MEANWHILE,
    Ack,
    AuthDenied,
    Awareness,
    AwarenessEntry,
    Base,
    Checked,
    Conflict,
    Create,
    Hello,
    QueryAwareness,
    Refused,
    SyncStep1,
    SyncStep2,
    SyncUpdate,
)
from crdt.errors import ProtocolError, StoreError
from crdt.history import Appended, update_hash
from crdt.versionstamp import ZERO, Versionstamp
from server.quotas import Limits, Quotas
from server.session import (
    MAX_AWARENESS_CLIENTS,
    MAX_AWARENESS_STATE,
    WEFT_VERSION,
    Action,
    BranchEnd,
    Close,
    Commit,
    Refusal,
    Relay,
    Send,
    SendFrame,
    Session,
    Wait,
)


@dataclass
class FakeRoom:
    size: int = 0
    inflight: int = 0  # Session counts its accepted, unapplied updates here
    awareness: bytes | None = None
    asked: list[bytes] = field(default_factory=list)
    cursor: Versionstamp | None = None
    known_deletions: bool = False  # what holds_deletions answers
    clocks: dict[int, int] = field(default_factory=dict)  # awareness clocks it holds

    def state_vector(self) -> bytes:
        return b"\x00"

    def sync_step2_frame(self, state_vector: bytes) -> bytes:
        Doc().get_update(state_vector)  # raises ValueError on a bad state vector
        self.asked.append(state_vector)
        return codec.encode(SyncStep2(b"\x00\x00"))

    def awareness_payload(self) -> bytes | None:
        return self.awareness

    def awareness_clock(self, client: int) -> int | None:
        return self.clocks.get(client)

    def holds_deletions(self, update: bytes) -> bool:
        return self.known_deletions


LIMITS = Limits(
    max_update_bytes=10_000,
    max_doc_bytes=50_000,
    updates_per_second=10,
    updates_burst=5,
    max_connections=10,
)


def session(
    room: FakeRoom | None = None, *, can_write: bool = True, weft: int = 0, wait: float = 1.0
) -> Session:
    return Session(
        room or FakeRoom(),
        tenant="acme",
        can_write=can_write,
        quotas=Quotas(LIMITS, max_wait=wait),
        weft=weft,
    )


def update(text: str = "hi") -> bytes:
    doc: Doc[Any] = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def vs(n: int) -> Versionstamp:
    return Versionstamp(n.to_bytes(12, "big"))


def messages(actions: list[Action]) -> list[object]:
    return [a.message for a in actions if isinstance(a, Send)]


def closes(actions: list[Action]) -> list[tuple[int, str]]:
    return [(a.code, a.reason) for a in actions if isinstance(a, Close)]


def commit_of(actions: list[Action]) -> Commit:
    (commit,) = [a for a in actions if isinstance(a, Commit)]
    return commit


# --- opening and sync ------------------------------------------------------------------


def test_open_sends_sync_step1_then_the_current_awareness() -> None:
    payload = codec.encode_awareness([AwarenessEntry(7, 1, "{}")])
    assert messages(session(FakeRoom(awareness=payload)).open()) == [
        SyncStep1(b"\x00"),
        Awareness(payload),
    ]


def test_a_weft_client_that_opted_in_gets_hello_first() -> None:
    assert messages(session(weft=1).open())[0] == Hello(WEFT_VERSION)
    assert WEFT_VERSION == 4
    assert not any(isinstance(m, Hello) for m in messages(session().open()))


def test_sync_step1_is_answered_with_sync_step2() -> None:
    room = FakeRoom()
    actions = session(room).receive(SyncStep1(b"\x00"), 0.0)
    assert actions == [SendFrame(codec.encode(SyncStep2(b"\x00\x00")))]
    assert room.asked == [b"\x00"]


def test_an_update_becomes_a_commit() -> None:
    data = update()
    for message in (SyncUpdate(data), SyncStep2(data)):
        commit = commit_of(session().receive(message, 1.0))
        assert (commit.update, commit.hash, commit.branch) == (data, update_hash(data), None)


def test_an_empty_update_is_ignored() -> None:
    assert session().receive(SyncStep2(b"\x00\x00"), 0.0) == []


def test_committed_updates_are_acked_for_weft_clients_only() -> None:
    data = update()
    appended = Appended(vs(1), False)
    weft = session(weft=True)
    assert messages(weft.committed(commit_of(weft.receive(SyncUpdate(data), 0.0)), appended)) == [
        Ack(update_hash(data), vs(1))
    ]
    plain = session()
    assert plain.committed(commit_of(plain.receive(SyncUpdate(data), 0.0)), appended) == []


def test_hello_opts_in_later_and_is_answered_once() -> None:
    s = session()
    assert messages(s.receive(Hello(1), 0.0)) == [Hello(WEFT_VERSION)]
    assert s.receive(Hello(1), 0.0) == []
    assert s.weft == 1


# --- refusals --------------------------------------------------------------------------


def test_read_only_updates_are_denied_and_nothing_is_committed() -> None:
    actions = session(can_write=False).receive(SyncUpdate(update()), 0.0)
    assert not [a for a in actions if isinstance(a, Commit | Close)]
    assert messages(actions) == [AuthDenied("read-only token: updates are not accepted")]
    assert Refusal("read_only") in actions


def test_read_only_weft_clients_also_get_refused_with_the_hash() -> None:
    data = update()
    sent = messages(session(can_write=False, weft=True).receive(SyncUpdate(data), 0.0))
    assert isinstance(sent[0], AuthDenied)
    assert sent[1] == Refused(update_hash(data), 4403, "read-only token: updates are not accepted")


def test_a_garbage_update_closes_with_1007() -> None:
    actions = session().receive(SyncUpdate(b"\x05garbage"), 0.0)
    assert closes(actions)[0][0] == 1007
    assert "does not decode" in closes(actions)[0][1]


def test_an_update_over_the_size_limit_closes_with_1009_and_refused() -> None:
    data = update("x" * 10_001)
    actions = session(weft=True).receive(SyncUpdate(data), 0.0)
    assert closes(actions)[0][0] == 1009
    assert [m.code for m in messages(actions) if isinstance(m, Refused)] == [1009]


def test_a_document_over_its_size_limit_closes_with_4413() -> None:
    actions = session(FakeRoom(size=49_990)).receive(SyncUpdate(update()), 0.0)
    assert closes(actions)[0][0] == 4413


def test_updates_in_flight_count_against_the_document_size_limit() -> None:
    """The room's size grows only once an update is applied: updates accepted and not
    applied yet, from this session or another one of the room, count too, until they
    land or are dropped."""
    room = FakeRoom(size=40_000)
    first, other = session(room), session(room)
    big = update("x" * 6_000)
    accepted = commit_of(first.receive(SyncUpdate(big), 0.0))
    assert room.inflight == len(big)
    assert closes(other.receive(SyncUpdate(update("y" * 6_000)), 0.0))[0][0] == 4413
    first.dropped(accepted)  # never stored: its bytes no longer count
    assert room.inflight == 0
    third = session(room)
    landed = commit_of(third.receive(SyncUpdate(update("z" * 6_000)), 0.0))
    third.landed(landed)
    assert room.inflight == 0


def test_the_rate_quota_delays_then_refuses() -> None:
    s = session(wait=0.25)
    first = [s.receive(SyncUpdate(update(str(i))), 100.0) for i in range(5)]  # the burst
    assert all(not any(isinstance(a, Wait) for a in acts) for acts in first)
    delayed = s.receive(SyncUpdate(update("6")), 100.0)
    assert isinstance(delayed[0], Wait) and delayed[0].seconds == pytest.approx(0.1)
    s.receive(SyncUpdate(update("7")), 100.0)  # waits 0.2 s
    refused = s.receive(SyncUpdate(update("8")), 100.0)  # would wait 0.3 s
    assert closes(refused)[0][0] == 4429


def test_a_failed_commit_closes_with_1011_so_the_client_resends() -> None:
    s = session(weft=True)
    commit = commit_of(s.receive(SyncUpdate(update()), 0.0))
    actions = s.failed(commit, StoreError("disk full"))
    assert closes(actions) == [(1011, "update not stored: disk full")]
    assert isinstance(messages(actions)[0], Refused)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"", 1002),
        (b"\x00\x02\x80", 1002),
        (b"\x00\x02\x09ab", 1002),
        (b"\x09", 1003),
        (codec.encode(Ack(b"\x00" * 16, ZERO)), 1003),
        (codec.encode(SyncStep1(b"\x05\x01")), 1007),
        (b"\x02\x00\x01\xff", 1007),
    ],
)
def test_bad_frames_close_with_their_code(frame: bytes, code: int) -> None:
    s = session()
    actions = s.receive_frame(frame, 0.0)
    assert closes(actions)[0][0] == code
    assert s.closed
    assert s.receive_frame(codec.encode(SyncUpdate(update())), 0.0) == []  # reads no more


def test_text_frames_close_with_1003() -> None:
    assert closes(session().receive_text()) == [(1003, "text frames are not supported")]


# --- awareness -------------------------------------------------------------------------


def test_awareness_is_relayed_and_its_clients_remembered() -> None:
    s = session()
    payload = codec.encode_awareness([AwarenessEntry(1, 1, "{}"), AwarenessEntry(2, 1, "{}")])
    (relay,) = s.receive(Awareness(payload), 0.0)
    assert isinstance(relay, Relay) and relay.payload == payload
    assert s.awareness_clients == {1, 2}
    s.receive(Awareness(codec.encode_awareness([AwarenessEntry(2, 2, "null")])), 0.0)
    assert s.awareness_clients == {1}


def aware(*entries: AwarenessEntry) -> Awareness:
    return Awareness(codec.encode_awareness(entries))


def test_an_echo_of_a_state_the_room_holds_is_relayed_but_not_the_connections() -> None:
    """y-websocket re-sends every awareness state it receives (other peers', other
    instances'): relayed as it came, but not this connection's to publish or remove."""
    s = session(FakeRoom(clocks={7: 3}))
    (relay,) = s.receive(aware(AwarenessEntry(7, 3, "{}"), AwarenessEntry(7, 2, "{}")), 0.0)
    assert isinstance(relay, Relay) and relay.own == () and len(relay.entries) == 2
    assert set(s.awareness_clients) == set()
    (relay,) = s.receive(aware(AwarenessEntry(7, 4, "null")), 0.0)  # a removal too
    assert isinstance(relay, Relay) and relay.own == ()


def test_a_connection_controls_what_the_room_lacks_or_holds_older() -> None:
    room = FakeRoom(clocks={7: 3})
    s = session(room)
    (relay,) = s.receive(aware(AwarenessEntry(1, 1, "{}"), AwarenessEntry(7, 3, "{}")), 0.0)
    assert isinstance(relay, Relay) and relay.own == (1,)
    room.clocks[1] = 1  # the room took it
    (relay,) = s.receive(aware(AwarenessEntry(1, 1, "{}")), 0.0)  # its own, as before
    assert isinstance(relay, Relay) and relay.own == (1,)
    (relay,) = s.receive(aware(AwarenessEntry(1, 2, "{}")), 0.0)
    assert isinstance(relay, Relay) and relay.own == (1,)
    # A newer clock than the room's: the client came back on this connection.
    (relay,) = s.receive(aware(AwarenessEntry(7, 4, "{}")), 0.0)
    assert isinstance(relay, Relay) and relay.own == (7,)
    assert set(s.awareness_clients) == {1, 7}
    (relay,) = s.receive(aware(AwarenessEntry(1, 3, "null")), 0.0)
    assert isinstance(relay, Relay) and relay.own == (1,)
    assert set(s.awareness_clients) == {7}


def test_echoes_do_not_count_against_the_clients_a_connection_may_hold() -> None:
    """In a room of more than MAX_AWARENESS_CLIENTS y-websocket peers, each one echoes
    all the others' states: that must not close it."""
    clients = range(100, 100 + 3 * MAX_AWARENESS_CLIENTS)
    s = session(FakeRoom(clocks={c: 1 for c in clients}))
    (relay,) = s.receive(aware(*(AwarenessEntry(c, 1, "{}") for c in clients)), 0.0)
    assert isinstance(relay, Relay) and relay.own == ()


def test_awareness_memory_a_connection_can_make_the_room_keep_is_bounded() -> None:
    big = '"' + "x" * MAX_AWARENESS_STATE + '"'
    actions = session().receive(Awareness(codec.encode_awareness([AwarenessEntry(1, 1, big)])), 0.0)
    assert [a for a in actions if isinstance(a, Close)] == [
        Close(1009, f"awareness state over {MAX_AWARENESS_STATE} bytes")
    ]
    assert not any(isinstance(a, Relay) for a in actions)

    s = session()
    many = [AwarenessEntry(i, 1, "{}") for i in range(MAX_AWARENESS_CLIENTS)]
    (relay,) = s.receive(Awareness(codec.encode_awareness(many)), 0.0)
    assert isinstance(relay, Relay)
    # Removing one and adding another keeps it at the limit; one more is refused.
    swap = [AwarenessEntry(0, 2, "null"), AwarenessEntry(100, 1, "{}")]
    assert isinstance(s.receive(Awareness(codec.encode_awareness(swap)), 0.0)[0], Relay)
    extra = codec.encode_awareness([AwarenessEntry(101, 1, "{}")])
    actions = s.receive(Awareness(extra), 0.0)
    assert [a for a in actions if isinstance(a, Close)] == [
        Close(4429, f"more than {MAX_AWARENESS_CLIENTS} awareness clients on one connection")
    ]
    assert not any(isinstance(a, Relay) for a in actions)


def test_query_awareness_returns_the_rooms_states() -> None:
    payload = codec.encode_awareness([AwarenessEntry(1, 1, "{}")])
    assert messages(session(FakeRoom(awareness=payload)).receive(QueryAwareness(), 0.0)) == [
        Awareness(payload)
    ]
    assert session().receive(QueryAwareness(), 0.0) == []


# --- offline branches ------------------------------------------------------------------


def test_a_branch_ends_at_the_next_base_once_its_commits_land() -> None:
    s = session(weft=True)
    assert s.receive(Base(vs(5)), 0.0) == []
    c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
    c2 = commit_of(s.receive(SyncUpdate(update("b")), 0.0))
    assert c1.branch is not None and c1.branch == c2.branch
    a1 = Appended(vs(6), False)
    assert not [a for a in s.committed(c1, a1) if isinstance(a, BranchEnd)]
    assert s.receive(Base(ZERO), 0.0) == []  # c2 is still in flight
    live = commit_of(s.receive(SyncUpdate(update("c")), 0.0))
    assert live.branch is None
    a2 = Appended(vs(7), False)
    ends = [a for a in s.committed(c2, a2) if isinstance(a, BranchEnd)]
    assert ends == [BranchEnd(vs(5), (a1, a2))]


def test_a_branch_ends_when_the_connection_closes() -> None:
    s = session()
    s.receive(Base(vs(5)), 0.0)
    c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
    assert s.close() == []
    a1 = Appended(vs(6), False)
    assert s.committed(c1, a1) == [BranchEnd(vs(5), (a1,))]


def test_a_new_base_ends_the_previous_branch() -> None:
    s = session()
    s.receive(Base(vs(5)), 0.0)
    c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
    a1 = Appended(vs(6), False)
    s.committed(c1, a1)
    assert s.receive(Base(vs(6)), 0.0) == [BranchEnd(vs(5), (a1,))]


def test_a_branch_without_committed_updates_reports_nothing() -> None:
    s = session()
    s.receive(Base(vs(5)), 0.0)
    c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
    s.failed(c1, StoreError("down"))
    assert s.close() == []


def test_a_version_2_client_hears_of_a_branch_even_with_nothing_stored() -> None:
    """A weft client of extension version 2 waits for a verdict on every branch it ends
    (``Checked``), so its branch with no committed update still ends with a BranchEnd
    (the connection answers it); older clients and closed connections get nothing."""
    for weft, expected in ((2, [BranchEnd(vs(5), ())]), (1, [])):
        s = session(weft=weft)
        s.receive(Base(vs(5)), 0.0)
        c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
        s.failed(c1, StoreError("down"))  # (closes the session: a store failure)
        s.closed = False
        assert s.receive(Base(ZERO), 0.0) == expected
    s = session(weft=2)
    s.receive(Base(vs(5)), 0.0)
    c1 = commit_of(s.receive(SyncUpdate(update("a")), 0.0))
    s.dropped(c1)
    assert s.close() == []


def test_hello_and_the_query_set_the_extension_version() -> None:
    s = session()
    s.receive(Hello(7), 0.0)
    assert s.weft == WEFT_VERSION  # capped at the server's
    s = session()
    s.receive(Hello(0), 0.0)
    assert s.weft == 1


def test_a_client_sending_checked_or_conflict_is_closed() -> None:
    for message in (Checked(vs(5), "x"), Conflict(vs(5), "x")):
        actions = session(weft=3).receive(message, 0.0)
        assert [a for a in actions if isinstance(a, Close)] == [
            Close(1003, "ack/refused/checked/conflict are server messages")
        ]


def test_the_session_keeps_the_state_vector_its_client_announced_last() -> None:
    s = session()
    assert s.announced is None
    s.receive(SyncStep1(b"\x01\x07\x03"), 0.0)
    assert s.announced == b"\x01\x07\x03"


def test_a_handshake_answer_with_known_deletions_only_is_not_stored() -> None:
    """A reconnecting peer answers SyncStep1 with its whole delete set (Yjs does): when
    the room has every deletion, nothing is committed; a weft client gets an ack at the
    room's cursor. The same bytes as a SyncUpdate, or unknown deletions, are committed."""
    data = b"\x00\x01\x07\x01\x00\x02"  # no structs; client 7 deleted clock 0-1
    room = FakeRoom(cursor=vs(9), known_deletions=True)
    assert session(room, weft=2).receive(SyncStep2(data), 0.0) == [
        Send(Ack(update_hash(data), vs(9)))
    ]
    assert session(room).receive(SyncStep2(data), 0.0) == []
    assert session(room).receive_frame(codec.encode(SyncStep2(data)), 0.0) == []
    assert commit_of(session(room).receive(SyncUpdate(data), 0.0)).update == data
    unknown = FakeRoom(cursor=vs(9), known_deletions=False)
    assert commit_of(session(unknown).receive(SyncStep2(data), 0.0)).update == data
    read_only = Session(room, tenant="acme", can_write=False, quotas=Quotas(LIMITS, max_wait=1.0))
    assert read_only.receive(SyncStep2(data), 0.0) == []  # not refused: nothing to write


def test_a_stale_awareness_removal_does_not_free_a_client_slot() -> None:
    """The room ignores a removal older than the state it holds; so does the count of
    what this connection holds, or one connection could park any number of states in
    the room (and leave them behind when it closes)."""
    s = session()
    for client in range(MAX_AWARENESS_CLIENTS):
        stale = [AwarenessEntry(client, 10, "{}"), AwarenessEntry(client, 0, "null")]
        (relay,) = s.receive(Awareness(codec.encode_awareness(stale)), 0.0)
        assert isinstance(relay, Relay)
    assert set(s.awareness_clients) == set(range(MAX_AWARENESS_CLIENTS))
    one_more = [AwarenessEntry(99, 1, "{}")]
    actions = s.receive(Awareness(codec.encode_awareness(one_more)), 0.0)
    assert [a for a in actions if isinstance(a, Close)] == [
        Close(4429, f"more than {MAX_AWARENESS_CLIENTS} awareness clients on one connection")
    ]
    s = session()
    s.receive(Awareness(codec.encode_awareness([AwarenessEntry(1, 5, "{}")])), 0.0)
    s.receive(Awareness(codec.encode_awareness([AwarenessEntry(1, 5, "null")])), 0.0)
    assert set(s.awareness_clients) == set()  # a removal at the same clock counts


# --- Create (extension version 4) --------------------------------------------------------


def test_a_create_is_a_commit_that_names_the_state_it_was_decided_on() -> None:
    s = session(weft=4)
    s.receive(Base(vs(5)), 0.0)  # (an open branch: a create is never part of it)
    new = update("new")
    commit = commit_of(s.receive(Create(b"\x01\x07\x03", new), 0.0))
    assert commit.seen == {7: 3} and commit.branch is None
    assert commit.hash == update_hash(new)
    assert commit_of(s.receive(SyncUpdate(update("x")), 0.0)).seen is None


def test_a_create_refused_because_the_document_changed_meanwhile_says_so() -> None:
    room = FakeRoom()
    s = session(room, weft=4)
    commit = commit_of(s.receive(Create(b"\x00", update("new")), 0.0))
    assert room.inflight == len(commit.update)
    [refused] = messages(s.created_meanwhile(commit))
    assert isinstance(refused, Refused)
    assert (refused.update_hash, refused.code) == (commit.hash, CREATED_MEANWHILE)
    assert room.inflight == 0 and not s.closed


def test_a_create_from_a_client_of_an_older_version_or_a_bad_one_is_refused() -> None:
    assert closes(session(weft=3).receive(Create(b"\x00", update()), 0.0)) == [
        (1003, "create needs extension version 4")
    ]
    with pytest.raises(ProtocolError):
        session(weft=4).receive(Create(b"\x05\x01", update()), 0.0)  # truncated
    with pytest.raises(ProtocolError):
        session(weft=4).receive(Create(b"\x00", b"\x00\x00"), 0.0)  # creates nothing
    read_only = session(weft=4, can_write=False).receive(Create(b"\x00", update()), 0.0)
    assert not [a for a in read_only if isinstance(a, Commit)]
    assert [m.code for m in messages(read_only) if isinstance(m, Refused)] == [4403]
