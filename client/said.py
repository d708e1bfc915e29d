"""Conflicts ``weft sync`` says from the project's conflict list, and which it has said.

The server tells a device of a record on one connection only: an offline branch's
verdict (``Checked``) on the connection that ended the branch, an online edit's record
(``Conflict``) on the one that sent the edit. A device cut off before the verdict came,
or a ``weft sync --once`` that exited before the record came, never said it. So after
its first sync (and, running, after a reconnect, at most once every ``LIST_GAP``
seconds, and once the project's conflict count moved, at most once every ``MARK_GAP``
seconds: see below) ``weft sync`` reads the project's open records that name this device on either side
(``GET .../conflicts?status=open&device=ID&side=either``, every page: the first of
the server's default size, the next ones of 1000, see
:meth:`client.remote.Api.conflict_pages`) and says those that it has not said yet, as a
live one is said (:func:`client.events.conflict_event`), marked as found in the list, a
page at a time. A server from before ``?device=`` or ``?side=`` (which refuses it, a 400
naming it) is read whole, and filtered here.

A record names a device on a side when that side's ``clients`` hold the id it gives the
server (``?device=``, and in its reports). Its own side (``ours``) is the side the live
message goes to (the branch's device, the online editor, the device that reported a
file), and the record's summary speaks for it. The other side (``theirs``) is never
told on a connection: its devices (every device whose updates came since the branch's
base, on the conflicting lines or not; the deleter of a document an online edit met)
are told from the list only, with a summary that speaks for them
(:meth:`crdt.conflicts.ConflictRecord.their_summary`: which device the other side was,
and that the text is in the record). A report's other side (whoever wrote the
document's head) is not told: the server's text stays as it was.

The document list a running device polls (:meth:`client.remote.Api.heads`) says how
many times a record of the project was made or resolved (``X-Weft-Conflicts``, on its
304 too). When a read says another number than the read before it (not the first
read: the first sync reads the list anyway), ``Device.conflicts_moved`` is set, and
:meth:`SaidConflicts.follow` reads the list again, ``MARK_GAP`` seconds after its last
read at most (a burst of records makes one read, or two), not held to ``LIST_GAP``: so
a device that stays connected hears within seconds of a record of the other side, or
of one whose live message found its link closed (idle), which it heard of only on its
next reconnect or run. A server without the header: the list is read as before, after
the first sync and after reconnects. Any record of the project moves the number, so
every running device reads its own part of the list then (the server filters it).

The ids said (live or listed) are kept in the folder's state (``said``,
:class:`client.state.DeviceState`), so a record is said once across runs; an id is
forgotten once a read of the list no longer holds it as open (resolved, or gone), which
bounds the table by the open records; a verdict that comes live after the list said
its record is not said again. A failed read (``--once``: no answer within
``ONCE_TIMEOUT`` seconds, or what is left of ``--timeout``) is a warning, never a
failure of the sync: the next read (the next run; running, ``LIST_GAP`` seconds later,
or sooner when the conflict count moves) says what it missed (what the pages read
before the failure held is said, and stays said; nothing is forgotten). A 404 (a tenant
nobody has written to yet, or a proxy's) says nothing and forgets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp

from client.events import Event, conflict_event
from client.remote import ApiError, ApiNotFound
from crdt.conflicts import ConflictRecord

if TYPE_CHECKING:
    from client.workspace import Workspace

log = logging.getLogger("weft.client")


def _list_gap(default: float = 60.0) -> float:
    """``WEFT_SYNC_LIST_GAP`` (seconds, positive), else ``default``: a bad value is
    logged and ignored (this is a tuning knob, not worth stopping a sync over)."""
    raw = os.environ.get("WEFT_SYNC_LIST_GAP")
    if raw is None:
        return default
    try:
        gap = float(raw)
    except ValueError:
        gap = math.nan
    if not (math.isfinite(gap) and gap > 0):
        log.warning("WEFT_SYNC_LIST_GAP=%r is not a positive number: %g s", raw, default)
        return default
    return gap


LIST_GAP = _list_gap()
"""The fewest seconds between two reads of the list by a running ``weft sync`` (after
its first; ``WEFT_SYNC_LIST_GAP``, default 60): a connection that keeps dropping and
coming back reads it once a minute at most, not on each reconnect."""
MARK_GAP = 2.0
"""The fewest seconds between two reads of the list by a running ``weft sync`` when the
project's conflict count moved (a record made or resolved): a burst of records makes
one read (or two: one at once, one at the end of the gap)."""
ONCE_TIMEOUT = 10.0
"""``weft sync --once``: the longest its read of the list may take (less when what is
left of ``--timeout`` is less); it is a warning, not a failure."""

LISTED = "found in the project's conflict list"
"""The note a record found in the list is said with (a live one has none)."""


def names(record: dict[str, Any], side: str, device_id: str) -> bool:
    """Whether ``side`` ("ours" or "theirs") of ``record`` (as the REST list gives it)
    names ``device_id`` among its clients."""
    part = record.get(side)
    clients = part.get("clients") if isinstance(part, dict) else None
    return bool(device_id) and isinstance(clients, list) and device_id in clients


def listed_event(record: dict[str, Any], device_id: str) -> Event | None:
    """The event saying a record found in the list to device ``device_id``: with the
    record's summary when its own side (``ours``) names the device, else with the other
    side's (:meth:`ConflictRecord.their_summary`) when that side (``theirs``) names it;
    None for a record that names it on neither side, a report that names it only on
    the other, or one that does not parse."""
    mine = names(record, "ours", device_id)
    if not (mine or names(record, "theirs", device_id)):
        return None
    try:
        parsed = ConflictRecord.from_dict(record)
    except (KeyError, TypeError, ValueError):
        log.warning("a conflict record that does not parse: %r", record.get("id"))
        return None
    if mine:
        return conflict_event(parsed.path, parsed.id, parsed.summary(), LISTED)
    if parsed.report:
        return None
    return conflict_event(parsed.path, parsed.id, parsed.their_summary(device_id), LISTED)


def _refused_filter(message: str) -> bool:
    """Whether a 400's ``message`` refuses ``?device=`` or ``?side=`` (a server from
    before them names the parameter it does not take)."""
    return "'device'" in message or "'side'" in message


class SaidConflicts:
    """What one ``weft sync`` run has said of the project's conflicts. :meth:`note` sees
    every event the run says; :meth:`catch_up` reads the list and says what was missed;
    :meth:`follow` does that after the first sync and after reconnects, at most once
    every ``LIST_GAP`` seconds."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.ids: set[str] = set()  # said: read from the state, and noted in this run
        self._loaded = False
        self._following = False
        self._failing = False  # the last read failed (and said so)
        self._reconnected = asyncio.Event()

    async def load(self) -> None:
        """Read the ids said in earlier runs (once; :meth:`catch_up` does it too)."""
        if not self._loaded:
            self.ids |= await asyncio.to_thread(self.ws.device.state.said)
            self._loaded = True

    def said(self, event: Event) -> bool:
        """Whether ``event`` says a conflict already said (live, or from the list): a
        verdict received after the list said its record is not said twice."""
        return event.kind == "conflict" and event.data.get("id") in self.ids

    def note(self, event: Event) -> None:
        """An event was said: remember a conflict's id; after a reconnect (``online``
        said while :meth:`follow` runs), read the list again."""
        if event.kind == "online" and self._following:
            self._reconnected.set()
        if event.kind != "conflict":
            return
        cid = event.data.get("id")
        if isinstance(cid, str) and cid and cid not in self.ids:
            self.ids.add(cid)
            self.ws.device.writer.said({cid: True})

    async def catch_up(self, timeout: float | None = None) -> bool:
        """Read the open records and say those naming this device not said yet; forget the
        ids said that are no longer open. ``timeout``: the longest the read may take (a
        read that takes longer is a failed one). Whether the list was read. Never raises
        (but ``CancelledError``): the sync goes on whatever happens here."""
        try:
            return await self._catch_up(timeout)
        except Exception as exc:  # a task boundary: a bug here must not stop the sync
            log.error("saying the conflict list failed", exc_info=True)
            self.ws.emit(Event("warning", f"saying the conflict list failed: {exc!r}"))
            return False

    async def _pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The open records that name this device on either side, a page at a time (the
        ones listed; :func:`listed_event` filters them)."""
        device = self.ws.device
        read = False
        try:
            # Only the records naming this device: a record holds whole texts.
            async for page in device.api.conflict_pages(
                status="open", device=device.device_id, side="either"
            ):
                read = True
                yield page
            return
        except ApiError as exc:
            if read or exc.status != 400 or not _refused_filter(exc.message):
                raise
        # A server before ?device= (or ?side=) refuses a parameter it does not know (a
        # 400 naming it): read the whole list once more, filtered here as it is anyway.
        log.info("the server takes no ?device= or ?side= on its conflict list: reading all")
        async for page in device.api.conflict_pages(status="open"):
            yield page

    def _say(self, records: list[dict[str, Any]]) -> None:
        """Say the records that name this device not said yet."""
        for record in records:
            cid = record.get("id")
            if isinstance(cid, str) and cid not in self.ids:
                event = listed_event(record, self.ws.device.device_id)
                if event is not None:
                    self.ws.event(event)  # (said and noted as a live one is)

    async def _catch_up(self, timeout: float | None) -> bool:
        device = self.ws.device
        await self.load()
        known = set(self.ids)  # (an id said while the list is read is not forgotten)
        listed: set[object] = set()
        try:
            async with asyncio.timeout(timeout):  # (not wait_for: see tests/unit/test_repo.py)
                # A page at a time: what a read that fails later said stays said.
                async for records in self._pages():
                    self._say(records)
                    listed |= {record.get("id") for record in records}
        except ApiNotFound:
            # A tenant nobody has written to yet, or a 404 from something in between (a
            # proxy, another store): say nothing, and forget nothing, as a failed read.
            log.info("the conflict list: 404 (nothing read, nothing forgotten)")
            return False
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError) and timeout is not None:
                why = f"no answer in {timeout:.3g} s"
            if self._failing:  # (a running sync retries every LIST_GAP: said once)
                log.info("reading the conflict list failed again: %s", why)
                return False
            self._failing = True
            self.ws.emit(
                Event(
                    "warning",
                    f"reading the conflict list failed: {why}; a conflict of this device "
                    "recorded while it was away is said on a later run or reconnect",
                )
            )
            return False
        self._failing = False
        gone = known - listed
        if gone:
            self.ids -= gone
            device.writer.said(dict.fromkeys(gone, False))
        return True

    async def follow(self) -> None:
        """:meth:`catch_up` now, then after a reconnect or a move of the project's
        conflict count (``Device.conflicts_moved``), until cancelled. After a reconnect,
        never within ``LIST_GAP`` seconds of the read before (reconnects meanwhile make
        one read, at the end of the gap: a flapping link read the list on each one);
        after a move of the count (a record was made or resolved), ``MARK_GAP`` seconds
        (moves meanwhile make one read). A read that failed (or found no list) is tried
        again once the gap has passed, reconnect or not."""
        self._following = True
        moved = self.ws.device.conflicts_moved
        loop = asyncio.get_running_loop()
        last: float | None = None
        while True:
            if last is not None:
                await self._gap(last)
            self._reconnected.clear()  # (a reconnect during the gap: this read is for it)
            moved.clear()  # (and a move)
            last = loop.time()
            if await self.catch_up():
                await _either(self._reconnected, moved)

    async def _gap(self, last: float) -> None:
        """Until ``LIST_GAP`` seconds after the read begun at ``last`` (loop time), or
        only ``MARK_GAP`` once the conflict count moved."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(last + LIST_GAP):
                await self.ws.device.conflicts_moved.wait()
        await asyncio.sleep(max(0.0, last + MARK_GAP - asyncio.get_running_loop().time()))


async def _either(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
