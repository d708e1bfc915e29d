"""Edit/delete conflicts between online devices: an edit made without seeing a deletion.

A deletion (root ``Y.Map`` ``weft``, ``deleted`` = True) leaves the text in the document,
so an edit of the text made concurrently with it merges into a document nobody sees: the
file is gone everywhere, the edit only in history. Offline branches are judged against
deletions by :mod:`crdt.branches`; this module judges an update sent online that changed
the text of a document flagged deleted, and did not clear the flag (a device bringing
the file back does, and so saw the deletion).

Whether the edit's author had seen the deletion is read from the Yjs structure. The
deletion is the map entry that holds ``deleted`` = True, with its id ``(client, clock)``
(Yjs deletes every entry an entry replaced, so the key's one live entry is the value).
Yjs integrates each client's structs in clock order, so a document that holds any
struct of that client at or after ``clock`` holds the deletion. The author saw it when:

- the update carries structs of the deleting client at or after the deletion (it was
  made by the deleting document itself), refers to one as an origin or a parent, or
  deletes one: its author had the struct, so the deletion;
- or the connection announced a state vector (its ``SyncStep1``, which a y-websocket
  client sends on connecting and a weft client with every probe) holding the deletion
  *before* the update was made: every client the update has structs of starts them at
  or after that vector's clock for it (an update already in the document when the
  vector was sent proves nothing: a weft client records an edit locally before it
  sends it, and may probe between the two).

Anything else is taken as concurrent. The update's own structs say nothing of what its
author had seen when they only touch the text (their origins are characters), so an
editor that keeps typing into a document it received deleted, without announcing a
state vector since (a plain Yjs editor, which does not know the flag, mid-connection),
cannot be told from one that did not see the deletion: it is recorded too, once. A
record is one per deletion and device (the stored device id of a weft client, else the
Yjs client id of the edit), whatever number of updates meet it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from crdt import ydecode
from crdt.conflicts import ConflictRecord, Region, Side, lines
from crdt.history import DocRef, History, Record, now_ms
from crdt.itemorder import ItemOrder
from crdt.records import state_vector_clocks
from crdt.versions import DELETED, META, predecessor, read_doc
from crdt.versionstamp import Versionstamp

SCAN_PAGE = 1000
MAX_SCAN = 200_000  # records read back from the edit to find the deletion's


@dataclass(frozen=True, slots=True)
class Editor:
    """Who sent the update: its user, its stored client, the device it named (weft
    clients), and the last state vector its connection announced (``SyncStep1``)."""

    user: str
    client: str
    device: str | None = None
    announced: bytes | None = None


def current_deletion(state: bytes) -> ydecode.ID | None:
    """The id of the map entry holding ``weft.deleted`` = True in a whole-document update
    (``Doc.get_update()``), or None when the document is not flagged deleted."""
    order = ItemOrder()
    order.apply_state(state)
    for item in order.entries(META, DELETED):
        if isinstance(item.value, list) and item.value and item.value[-1] is True:
            return (item.client, item.clock)
    return None


def saw_deletion(update: bytes, deletion: ydecode.ID, announced: bytes | None) -> bool:
    """Whether ``update``'s author provably had the ``deletion`` entry when it made it
    (see the module docstring). An update that does not decode proves nothing."""
    client, clock = deletion
    try:
        structs, deletes = ydecode.decode_update(update)
    except ydecode.UpdateDecodeError:
        return False
    for items in structs.values():
        for item in items:
            if item.client == client and item.clock + item.length > clock:
                return True
            for ref in (item.origin, item.right_origin, item.parent):
                if isinstance(ref, tuple) and ref[0] == client and ref[1] >= clock:
                    return True
    if any(c == client and start + length > clock for c, start, length in deletes):
        return True
    firsts = {c: items[0].clock for c, items in structs.items() if items}
    if not announced or not firsts:
        return False
    try:
        vector = state_vector_clocks(announced)
    except (IndexError, ValueError):
        return False
    made_after = all(first >= vector.get(c, 0) for c, first in firsts.items())
    return made_after and vector.get(client, 0) > clock


def device_key(update: bytes, editor: Editor) -> str:
    """What makes two updates the same device's: the weft device id, else the Yjs client
    id of the edit (stable while an editor keeps its document), else the stored client."""
    if editor.device:
        return f"device:{editor.device}"
    try:
        structs, _ = ydecode.decode_update(update)
    except ydecode.UpdateDecodeError:
        structs = {}
    clients = [c for c, items in structs.items() if items]
    return f"yjs:{min(clients)}" if clients else f"client:{editor.client}"


async def judge(
    history: History, doc: DocRef, edit: Versionstamp, editor: Editor
) -> tuple[ConflictRecord, list[str]] | None:
    """The record for the update committed at ``edit`` (it changed the text of ``doc``
    while flagged deleted), and the seed of its id (see ``conflict_store.save_once``),
    or None when its author saw the deletion (or the document is not deleted at
    ``edit`` after all). Nothing is written."""
    found = await history.updates(doc, after=predecessor(edit), until=edit, limit=1)
    if not found or found[0].versionstamp != edit:
        return None
    update = found[0].update
    at_edit = await history.replay(doc, edit)
    text, deleted = read_doc(at_edit.doc)
    if not deleted:
        return None
    deletion = await asyncio.to_thread(current_deletion, at_edit.doc.get_update())
    if deletion is None or saw_deletion(update, deletion, editor.announced):
        return None
    deleter = await _record_of(history, doc, deletion, edit)
    base_text = ""
    emptied = False
    if deleter is not None:
        base_text = read_doc((await history.replay(doc, deleter.versionstamp)).doc)[0]
        if not base_text:
            before = await history.replay(doc, predecessor(deleter.versionstamp))
            emptied = before.versionstamp is not None and read_doc(before.doc)[0] != ""
    record = ConflictRecord(
        id="",
        path=doc.path,
        base=deleter.versionstamp.hex() if deleter else "",
        ours=Side(users=[editor.user], clients=[editor.client], versionstamps=[edit.hex()]),
        theirs=Side(
            users=[deleter.user] if deleter else [],
            clients=[deleter.client] if deleter else [],
            versionstamps=[deleter.versionstamp.hex()] if deleter else [],
        ),
        regions=[Region(0, len(lines(base_text)), base_text, text, "")],
        merged_text=text,
        created_ms=now_ms(),
        deleted="theirs",
        emptied=emptied,
    )
    seed = ["edit/delete", doc.path, f"{deletion[0]}:{deletion[1]}", editor.user]
    return record, [*seed, device_key(update, editor)]


async def _record_of(
    history: History, doc: DocRef, item: ydecode.ID, until: Versionstamp
) -> Record | None:
    """The log record that carries struct ``item``, read back from ``until``."""
    client, clock = item
    read = 0
    while read < MAX_SCAN:
        page = await history.updates(doc, until=until, limit=SCAN_PAGE, reverse=True)
        for record in page:
            try:
                ranges = ydecode.struct_ranges(record.update)
            except ydecode.UpdateDecodeError:
                continue
            if any(c == client and start <= clock < end for c, start, end in ranges):
                return record
        if len(page) < SCAN_PAGE:
            return None
        read += len(page)
        until = predecessor(page[-1].versionstamp)
    return None


__all__ = ["Editor", "current_deletion", "device_key", "judge", "saw_deletion"]
