"""Time travel on a real SQLite store: versions, history pages, errors that write nothing,
deletion flags, blame of several users, restore and revert edge cases."""

from __future__ import annotations

import argparse
import asyncio
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Map, Text

from client.timetravel_backends import StoreBackend
from crdt import blame as blame_module
from crdt import timetravel as tt
from crdt.errors import BadPath, NotFound
from crdt.history import Append, DocRef, History
from crdt.kv import open_engine
from crdt.textedits import apply, diff
from crdt.versionstamp import Versionstamp


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[History]:
    async with open_engine(f"sqlite:///{tmp_path / 'weft.db'}") as kv:
        h = History(kv, snapshot_every=3, segment_every=2)
        await h.init()
        yield h


class Device:
    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text = self.doc.get("content", type=Text)
        self.meta = self.doc.get("weft", type=Map)

    def change(self, fn: Any) -> bytes:
        before = self.doc.get_state()
        fn()
        return self.doc.get_update(before)

    def append(self, s: str) -> bytes:
        return self.change(lambda: self.text.insert(len(self.text), s))

    def delete_file(self) -> bytes:
        def fn() -> None:
            del self.text[0 : len(self.text)]
            self.meta["deleted"] = True

        return self.change(fn)

    def restore_file(self, s: str) -> bytes:
        def fn() -> None:
            self.text.insert(0, s)
            self.meta["deleted"] = False

        return self.change(fn)


async def put(history: History, ref: DocRef, update: bytes, user: str = "ada") -> Versionstamp:
    (done,) = await history.append([Append(ref, update, user, f"{user}-laptop")])
    await asyncio.sleep(0.002)  # the next update lands at a later millisecond
    return done.versionstamp


async def count(history: History, ref: DocRef) -> int:
    return len(await history.updates(ref, limit=10_000))


async def test_history_pages_newest_first_with_flags(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    d = Device(1)
    stamps = [await put(history, ref, d.append(f"{n}\n")) for n in range(5)]
    gone = await put(history, ref, d.delete_file(), "bob")
    back = await put(history, ref, d.restore_file("again\n"), "bob")
    stamps += [gone, back]
    page = await tt.history_page(history, ref, limit=3)
    assert [e.versionstamp for e in page.entries] == stamps[::-1][:3]
    assert [e.deleted for e in page.entries] == [False, True, None]
    assert [e.user for e in page.entries] == ["bob", "bob", "ada"]
    assert page.next_until is not None
    rest = await tt.history_page(history, ref, limit=10, until=tt.Version(stamp=page.next_until))
    assert [e.versionstamp for e in rest.entries] == stamps[::-1][3:]
    assert rest.next_until is None
    since = await tt.history_page(history, ref, since=tt.Version(stamp=stamps[4]))
    assert [e.versionstamp for e in since.entries] == [back, gone]
    empty = await tt.history_page(history, ref, since=tt.Version(stamp=back))
    assert empty.entries == [] and empty.next_until is None
    assert page.to_dict()["versions"][1]["deleted"] is True


async def test_unknown_documents_tenants_and_versions_are_clear_errors(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    with pytest.raises(tt.VersionNotFound, match=r"no document 'a\.md' in acme/site"):
        await tt.doc_at(history, ref, tt.HEAD_VERSION)
    first = await put(history, ref, Device(1).append("x"))
    before = tt.Version(stamp=tt.predecessor(first), label="before")
    with pytest.raises(tt.VersionNotFound, match=f"did not exist at before .*{first.hex()}"):
        await tt.doc_at(history, ref, before)
    with pytest.raises(tt.VersionNotFound, match="did not exist"):
        await tt.doc_at(history, ref, tt.Version(ms=1, label="1970"))
    with pytest.raises(NotFound, match="unknown tenant"):
        await history.doc("nobody", "site", "a.md")
    with pytest.raises(BadPath):
        await history.doc("acme", "site", "../a.md")
    with pytest.raises(tt.VersionNotFound, match="project acme/empty has no documents"):
        await tt.cut_at(history, "acme", "empty", tt.HEAD_VERSION)
    with pytest.raises(tt.VersionNotFound, match="had no documents at 1970"):
        await tt.cut_at(history, "acme", "site", tt.Version(ms=1, label="1970"))
    with pytest.raises(tt.BadVersion, match="limit"):
        await tt.history_page(history, ref, limit=0)


async def test_bad_reverts_write_nothing(history: History) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    first = await put(history, ref, Device(1).append("x"))
    other = await history.doc("acme", "site", "other.md")
    for call in (
        tt.revert_doc(history, ref, tt.Version(stamp=tt.predecessor(first)), user="u", device="d"),
        tt.revert_doc(history, other, tt.HEAD_VERSION, user="u", device="d"),
        tt.revert_project(history, "acme", "site", tt.Version(ms=1), user="u", device="d"),
        tt.revert_project(history, "acme", "none", tt.HEAD_VERSION, user="u", device="d"),
    ):
        with pytest.raises(tt.VersionNotFound):
            await call
    assert await count(history, ref) == 1
    assert await history.head(other) is None


async def test_revert_restores_a_deleted_document_and_deletes_per_convention(
    history: History,
) -> None:
    ref = await history.doc("acme", "site", "a.md", create=True)
    d = Device(1)
    alive = await put(history, ref, d.append("keep me\n"))
    await put(history, ref, d.delete_file())
    done = await tt.revert_doc(history, ref, tt.Version(stamp=alive), user="ops", device="cli")
    assert done.versionstamp is not None and not done.deleted
    now = await tt.doc_at(history, ref, tt.HEAD_VERSION)
    assert (now.text, now.deleted) == ("keep me\n", False)
    flags = await tt.history_page(history, ref, limit=1)
    assert flags.entries[0].deleted is False and flags.entries[0].user == "ops"
    gone = await tt.revert_doc(
        history, ref, tt.Version(stamp=done.versionstamp), user="o", device="c"
    )
    assert gone.versionstamp is None  # already so: no update
    deleted_at = (await tt.history_page(history, ref, limit=2)).entries[1].versionstamp
    again = await tt.revert_doc(history, ref, tt.Version(stamp=deleted_at), user="o", device="c")
    # deleted again, its text left as a deletion leaves it (it was emptied before)
    now = await tt.doc_at(history, ref, tt.HEAD_VERSION)
    assert again.versionstamp is not None and again.deleted
    assert (now.text, now.deleted) == ("keep me\n", True)
    same = await tt.revert_doc(history, ref, tt.HEAD_VERSION, user="o", device="c")
    assert same.versionstamp is None  # a deleted document "reverted" to head: nothing
    back = await tt.revert_doc(history, ref, tt.Version(stamp=alive), user="o", device="c")
    assert back.versionstamp is not None
    now = await tt.doc_at(history, ref, tt.HEAD_VERSION)
    assert (now.text, now.deleted) == ("keep me\n", False)


async def test_blame_of_several_users_with_non_ascii_text(history: History) -> None:
    ref = await history.doc("acme", "site", "b.md", create=True)
    ada, bob = Device(5), Device(3)
    v1 = await put(history, ref, ada.append("héllo wörld\nsecond 😀 line\n"), "ada")
    bob.doc.apply_update(ada.doc.get_update())
    v2 = await put(
        history, ref, bob.change(lambda: bob.text.insert(len("hé".encode()), "Ω")), "bob"
    )
    v3 = await put(history, ref, bob.append("third\n"), "bob")
    ada.doc.apply_update(bob.doc.get_update())
    await put(history, ref, ada.change(lambda: ada.text.__delitem__(slice(0, 1))), "ada")
    result = await tt.blame(history, ref)
    assert result.text == "éΩllo wörld\nsecond 😀 line\nthird\n"
    got = [(line.text, line.author.user if line.author else None) for line in result.lines]
    assert got == [("éΩllo wörld", "bob"), ("second 😀 line", "ada"), ("third", "bob")]
    assert [line.author.versionstamp for line in result.lines if line.author] == [v2, v1, v3]
    chars = [record for start, end, record in result.spans for _ in range(start, end)]
    assert len(chars) == len(result.text)
    assert chars[1] == 1 and chars[0] == 0 and chars[-1] == 2
    old = await tt.blame(history, ref, tt.Version(stamp=v1))
    assert [line.author.user for line in old.lines if line.author] == ["ada", "ada"]
    assert old.to_dict()["lines"][0] == {
        "line": 1,
        "text": "héllo wörld",
        "versionstamp": v1.hex(),
        "user": "ada",
        "device": "ada-laptop",
        "time": tt.iso_time(old.lines[0].author.ms),  # type: ignore[union-attr]
    }


async def test_blame_of_a_file_edit_that_changes_a_line_and_appends_one(
    history: History,
) -> None:
    """A file edit (as ``weft sync`` makes them: ``textedits.diff`` then ``apply``) that
    changes line 2 and appends line 4 leaves line 3 to its author: the appended line's
    newline is placed after the old last one, not before it (it was blamed on bob)."""
    ref = await history.doc("acme", "site", "f.md", create=True)
    alice, bob = Device(5), Device(3)
    old = "l1 alice\nl2 alice\nl3 alice\n"
    await put(history, ref, alice.append(old), "alice")
    bob.doc.apply_update(alice.doc.get_update())
    new = "l1 alice\nl2 bob\nl3 alice\nl4 bob\n"
    await put(history, ref, bob.change(lambda: apply(bob.text, old, diff(old, new))), "bob")
    result = await tt.blame(history, ref)
    got = [(line.text, line.author.user if line.author else None) for line in result.lines]
    assert got == [
        ("l1 alice", "alice"),
        ("l2 bob", "bob"),
        ("l3 alice", "alice"),
        ("l4 bob", "bob"),
    ]


@pytest.mark.parametrize(
    ("text", "texts"),
    [
        ("one\rtwo\rthree\r", ["one", "two", "three"]),
        ("one\r\ntwo\r\nthree", ["one", "two", "three"]),
        ("page one\fpage two\n", ["page one", "page two"]),
        ("a\u2028b\u2029c\x85d\n\re", ["a", "b", "c", "d", "", "e"]),
    ],
)
async def test_blame_splits_lines_as_the_diff_does(
    history: History, text: str, texts: list[str]
) -> None:
    """A lone ``\\r``, ``\\r\\n``, a form feed, ``\\u2028`` end a line in blame as they do
    in a diff and in conflict regions (blame split at ``\\n`` alone: a CR-only file was
    one line)."""
    ref = await history.doc("acme", "site", "crlf.md", create=True)
    v1 = await put(history, ref, Device(1).append(text))
    result = await tt.blame(history, ref)
    assert [(line.number, line.text) for line in result.lines] == list(enumerate(texts, 1))
    assert {line.author.versionstamp for line in result.lines if line.author} == {v1}
    hunk = tt.unified_diff("crlf.md", None, await tt.doc_at(history, ref, tt.HEAD_VERSION))
    assert f"@@ -0,0 +1,{len(texts)} @@" in hunk


async def test_blame_gives_a_line_to_whoever_wrote_its_ending(history: History) -> None:
    """``\\r`` then ``\\n`` typed after it by someone else make one ending, ``\\r\\n``: the
    line is theirs, and the lines after it keep their numbers and authors."""
    ref = await history.doc("acme", "site", "mac.txt", create=True)
    ada, bob = Device(5), Device(3)
    v1 = await put(history, ref, ada.append("one\rtwo\rthree"), "ada")
    bob.doc.apply_update(ada.doc.get_update())
    v2 = await put(history, ref, bob.change(lambda: bob.text.insert(4, "\n")), "bob")
    result = await tt.blame(history, ref)
    assert result.text == "one\r\ntwo\rthree"
    got = [(line.number, line.text, line.author) for line in result.lines]
    assert [(n, text, a.versionstamp if a else None) for n, text, a in got] == [
        (1, "one", v2),
        (2, "two", v1),
        (3, "three", v1),
    ]


async def test_blame_reads_logs_longer_than_a_page_and_chunked_records(
    history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blame_module, "LOG_PAGE", 4)
    ref = await history.doc("acme", "site", "c.md", create=True)
    d = Device(9)
    big = "x" * 200_000 + "\n"  # a record over one chunk
    updates = [d.append("a\n"), d.append(big), *(d.append(f"{n}\n") for n in range(9))]
    done = await history.append([Append(ref, u, "ada", "dev") for u in updates])
    result = await tt.blame(history, ref)
    assert [line.author.versionstamp for line in result.lines if line.author] == [
        a.versionstamp for a in done
    ]


async def test_restore_leaves_out_deleted_and_later_documents(history: History) -> None:
    a = await history.doc("acme", "p", "a.txt", create=True)
    b = await history.doc("acme", "p", "dir/b.txt", create=True)
    da, db = Device(1), Device(2)
    await put(history, a, da.append("A"))
    cut = await put(history, b, db.append("B"))
    await put(history, b, db.delete_file())
    await put(history, a, da.append("!"))
    c = await history.doc("acme", "p", "c.txt", create=True)
    await put(history, c, Device(3).append("C"))
    then = await tt.cut_at(history, "acme", "p", tt.Version(stamp=cut))
    assert {f.path: f.data async for f in tt.files(history, then)} == {
        "a.txt": b"A",
        "dir/b.txt": b"B",
    }
    now = await tt.cut_at(history, "acme", "p", tt.HEAD_VERSION)
    assert {f.path: f.data async for f in tt.files(history, now)} == {"a.txt": b"A!", "c.txt": b"C"}
    entries = [f.manifest_entry() async for f in tt.files(history, now)]
    listed = tt.manifest(now, entries)
    assert listed["versionstamp"] == now.versionstamp.hex() and listed["format"] == 1
    done = await tt.revert_project(
        history, "acme", "p", tt.Version(stamp=cut), user="u", device="d"
    )
    assert {r.path: (r.versionstamp is not None, r.deleted) for r in done} == {
        "a.txt": (True, False),
        "c.txt": (True, True),
        "dir/b.txt": (True, False),
    }
    after = await tt.cut_at(history, "acme", "p", tt.HEAD_VERSION)
    assert {f.path: f.data async for f in tt.files(history, after)} == {
        "a.txt": b"A",
        "dir/b.txt": b"B",
    }


async def test_a_cuts_document_count_is_of_the_documents_that_existed_at_it(
    history: History,
) -> None:
    """`weft restore --store`'s progress total counted every document the project lists
    at head, those created after the cut too. It counts those that existed at the cut,
    with no document replayed (so those deleted at it too: the files leave them out)."""
    ref = {p: await history.doc("acme", "p", f"{p}.md", create=True) for p in "abcdef"}
    dev = {p: Device(n + 1) for n, p in enumerate("abcdef")}
    await put(history, ref["a"], dev["a"].append("A"))
    await put(history, ref["b"], dev["b"].append("B"))
    await put(history, ref["b"], dev["b"].delete_file())  # deleted before the cut
    await put(history, ref["c"], dev["c"].append("C"))
    cut = await put(history, ref["d"], dev["d"].append("D"))
    await put(history, ref["c"], dev["c"].delete_file())  # deleted after the cut
    await put(history, ref["e"], dev["e"].append("E"))  # created after the cut
    await put(history, ref["f"], dev["f"].append("F"))  # created and deleted after it
    await put(history, ref["f"], dev["f"].delete_file())
    for version, existed, files in (
        (tt.Version(stamp=cut), 4, ["a.md", "c.md", "d.md"]),  # a, b (deleted), c, d
        (tt.HEAD_VERSION, 6, ["a.md", "d.md", "e.md"]),
    ):
        then = await tt.cut_at(history, "acme", "p", version)
        assert await tt.documents_at(history, then) == existed
        totals: list[int] = []
        restored = StoreBackend(history, "acme", "p").restore(version, totals.append)
        assert [name async for kind, name, *_ in restored if kind == "file"] == files
        assert totals == [existed]


async def test_a_cut_inside_a_transaction_counts_the_documents_of_its_updates_up_to_it(
    history: History,
) -> None:
    """A document's time index says when its first transaction was, at that
    transaction's last update of it: a cut between its first update and that one (at
    another document's update of the same transaction) still finds it, and not a
    document whose first update in it comes after the cut."""
    x, y, z = [await history.doc("acme", "p", f"{p}.md", create=True) for p in "xyz"]
    dx, dy, dz = Device(1), Device(2), Device(3)
    updates = [(x, dx.append("1")), (y, dy.append("Y")), (x, dx.append("2")), (z, dz.append("Z"))]
    done = await history.append([Append(ref, update, "ada") for ref, update in updates])
    stamps = [d.versionstamp for d in done]
    for at, existed in ((stamps[0], 1), (stamps[1], 2), (stamps[2], 2), (stamps[3], 3)):
        cut = await tt.cut_at(history, "acme", "p", tt.Version(stamp=at))
        assert await tt.documents_at(history, cut) == existed, stamps.index(at)
        assert existed == len([f async for f in tt.files(history, cut)])  # none deleted


async def test_a_restores_progress_bar_ends_at_the_files_written(
    history: History, tmp_path: Path
) -> None:
    """A restore's progress total counts the documents deleted at the cut too: the bar
    stopped at "1/2" where the restore wrote its one file."""
    from rich.console import Console

    from client.timetravel_commands import run_restore

    a, b = [await history.doc("acme", "p", f"{p}.md", create=True) for p in "ab"]
    await put(history, a, Device(1).append("A"))
    db = Device(2)
    await put(history, b, db.append("B"))
    await put(history, b, db.delete_file())
    screen = io.StringIO()
    err = Console(file=screen, force_terminal=True, color_system=None, width=100)
    args = argparse.Namespace(out=tmp_path / "out", force=False, at="head", json=False)
    assert await run_restore(args, StoreBackend(history, "acme", "p"), err) == 0
    frames = re.findall(r"restoring \D*?(\d+/[\d?]+)", screen.getvalue())  # done/total
    assert frames[-1] == "1/1", frames
    assert "restored 1 file of" in screen.getvalue()


async def test_a_project_before_its_first_document_is_refused_by_time_and_by_versionstamp(
    history: History,
) -> None:
    """A project cut before its first document is the same refusal whether the moment is
    given as a time or as a versionstamp, and a project revert to it writes nothing (by
    versionstamp the cut was an empty project, and the revert deleted every document)."""
    other = await history.doc("acme", "other", "o.md", create=True)
    elsewhere = await put(history, other, Device(3).append("elsewhere\n"))
    (then,) = await history.updates(other)
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "site", "b.md", create=True)
    first = await put(history, a, Device(1).append("A\n"))
    await put(history, b, Device(2).append("B\n"))
    before = [tt.iso_time(then.ms), elsewhere.hex(), tt.predecessor(first).hex()]
    for version in map(tt.parse_version, before):
        said = f"project acme/site had no documents at {version}"
        with pytest.raises(tt.VersionNotFound, match=f"^{re.escape(said)}$"):
            await tt.cut_at(history, "acme", "site", version)
        with pytest.raises(tt.VersionNotFound, match=f"^{re.escape(said)}$"):
            await tt.revert_project(history, "acme", "site", version, user="u", device="d")
    assert await count(history, a) == await count(history, b) == 1  # nothing deleted
    cut = await tt.cut_at(history, "acme", "site", tt.parse_version(first.hex()))
    assert {f.path: f.data async for f in tt.files(history, cut)} == {"a.md": b"A\n"}


def test_history_notes_say_created_deleted_and_restored_from_the_flags_changes() -> None:
    """A document's first version is "created" (also one a plain Yjs client made, which
    never sets weft.deleted), not "restored"."""
    from client.timetravel_cli import _deleted_notes

    def notes(*flags: bool | None, complete: bool = True) -> list[str]:  # oldest first
        versions = [{"deleted": flag} for flag in reversed(flags)]
        return _deleted_notes(versions, complete)[::-1]

    assert notes(False, None, True, None, False) == ["created", "", "deleted", "", "restored"]
    assert notes(None, False) == ["created", ""]  # made by an editor, then the flag was cleared
    assert notes(None, None) == ["created", ""]  # a plain Yjs client's document: no flag ever
    assert notes(False, complete=False) == ["restored"]  # the delete is on an older page
    assert notes(True, True, False, False) == ["deleted", "", "restored", ""]


async def test_a_versionstamp_beyond_the_stores_latest_commit_is_refused_everywhere(
    history: History,
) -> None:
    """A future versionstamp names a cut nobody can know yet: what is "at" it changes as
    commits arrive. Beyond the store's latest commit version it is refused; a cut between
    a document's head and the store's latest commit is valid and stays the same."""
    a = await history.doc("acme", "site", "a.md", create=True)
    b = await history.doc("acme", "other", "b.md", create=True)
    da, db = Device(1), Device(2)
    a_head = await put(history, a, da.append("one\n"))
    latest = await put(history, b, db.append("elsewhere\n"))  # the store's latest commit
    assert latest.commit_version > a_head.commit_version
    newest_possible = Versionstamp(latest.raw[:8] + b"\xff" * 4)
    future = Versionstamp((latest.commit_version + 1).to_bytes(8, "big") + bytes(4))

    def at(vs: Versionstamp) -> tt.Version:
        return tt.parse_version(vs.hex())

    async def project_files(vs: Versionstamp) -> list[tuple[str, bytes, Versionstamp]]:
        cut = await tt.cut_at(history, "acme", "site", at(vs))
        return [(f.path, f.data, f.versionstamp) for f in [f async for f in tt.files(history, cut)]]

    stable = await project_files(newest_possible)
    assert (await tt.doc_at(history, a, at(newest_possible))).versionstamp == a_head

    message = (
        f"versionstamp {future.hex()} is in the future: the store's latest commit version "
        f"is {latest.raw[:8].hex()}: a versionstamp may be at most {latest.raw[:8].hex()}ffffffff"
    )
    refusals: list[Any] = [
        lambda: tt.doc_at(history, a, at(future)),
        lambda: tt.diff(history, a, at(future), tt.HEAD_VERSION),
        lambda: tt.diff(history, a, tt.HEAD_VERSION, at(future)),
        lambda: tt.blame(history, a, at(future)),
        lambda: tt.history_page(history, a, until=at(future)),
        lambda: tt.history_page(history, a, since=at(future)),
        lambda: tt.cut_at(history, "acme", "site", at(future)),
        lambda: tt.revert_doc(history, a, at(future), user="ada", device="cli"),
        lambda: tt.revert_project(history, "acme", "site", at(future), user="ada", device="cli"),
    ]
    for refusal in refusals:
        with pytest.raises(tt.BadVersion) as caught:
            await refusal()
        assert str(caught.value) == message
    assert await count(history, a) == 1  # the reverts wrote nothing

    await put(history, a, da.append("two\n"))  # after the cut: it stays what it was
    assert await project_files(newest_possible) == stable
    assert stable == [("a.md", b"one\n", a_head)]


def test_conflicts_show_says_why_an_edited_deleted_document_stays_deleted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """By default (no WEFT_BRING_BACK_EDITED) it said "deleted again since", which was
    not what happened (found in a walkthrough)."""
    import argparse

    from client.conflicts_cli import _print

    side = {"users": ["ada"], "clients": ["laptop"], "versionstamps": []}
    record = {
        "id": "0" * 24, "path": "big.txt", "status": "open", "base": "0" * 24,
        "ours": side, "theirs": side, "deleted": "theirs", "restored": False,
        "emptied": False, "regions": [], "merged_text": "x\n", "created_ms": 0,
    }  # fmt: skip
    _print(argparse.Namespace(json=False, action="show"), record)
    out = capsys.readouterr().out
    assert "deleted again" not in out
    assert "it stays deleted (the edited text is below: write it back to restore" in out
