"""One open document of a device: its live ``pycrdt.Doc``, outbox, base and link.

The document's text is the root ``Y.Text`` named ``content``; the root ``Y.Map`` named
``weft`` holds ``deleted`` (the project's deletion convention).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from client.connection import DocLink
from client.outbox import Outbox
from client.state import DocState
from crdt.history import DocRef
from crdt.versionstamp import Versionstamp

if TYPE_CHECKING:
    from client.device import Device

CONTENT = "content"
META = "weft"


class DocEntry:
    """One open document: its live ``pycrdt.Doc``, outbox, base and link."""

    def __init__(
        self, device: Device, path: str, ref: DocRef, doc: Doc[Any], state: DocState, outbox: Outbox
    ) -> None:
        self.device = device
        self.path = path
        self.ref = ref
        self.doc = doc
        self.base = state.base
        self.head_seen = state.base
        self.outbox = outbox
        self.synced = asyncio.Event()
        self.link_changed = asyncio.Event()  # synced, disconnected, stopped or failed
        self.unrecorded = 0
        self.unrecorded_local = 0
        self.since_snapshot = 0
        self.applying_remote = False
        self.base_wanted = False  # server state here, its versionstamp asked for
        self.base_wanted_at = 0  # the device's heads reads started when it was asked
        self.link = DocLink(device, self)

    @property
    def text(self) -> Text:
        text: Text = self.doc.get(CONTENT, type=Text)
        return text

    @property
    def meta(self) -> Map[Any]:
        meta: Map[Any] = self.doc.get(META, type=Map)
        return meta

    @property
    def deleted(self) -> bool:
        return bool(self.meta.get("deleted", False))

    @property
    def exists(self) -> bool:
        """Whether the document has any state at all (locally)."""
        return self.doc.get_state() != b"\x00"

    def seen(self, vs: Versionstamp | None) -> None:
        """Everything up to ``vs`` is in this document; move ``base`` if no local update
        is waiting (those were made on the older base)."""
        if vs is None:
            return
        self.base_wanted = False
        if self.head_seen is None or vs > self.head_seen:
            self.head_seen = vs
        waiting = len(self.outbox) > 0 or self.unrecorded_local > 0
        if not waiting and (self.base is None or vs > self.base):
            self.base = vs
            self.device.save_doc_state(self)

    def acked(self, vs: Versionstamp) -> None:
        """A local update is durable at ``vs``. That is no proof that every update before
        ``vs`` is here (another instance's may still be on its way to this one's room):
        once nothing else waits, a probe for ``vs`` moves the base (see
        ``DocLink.confirm_later``)."""
        self.device.updates_acked += 1
        self.device.save_doc_state(self)
        if self.head_seen is None or vs > self.head_seen:
            self.head_seen = vs
        if len(self.outbox) == 0 and self.unrecorded_local == 0:
            self.link.confirm_later(vs)

    async def wait_synced(self) -> bool:
        """Wait until the server's state is here (True) or the link stopped (False)."""
        while not self.synced.is_set():
            if not self.link.wanted or self.device.failure is not None:
                return False
            self.link_changed.clear()
            await self.link_changed.wait()
        return True

    def done(self) -> bool:
        """Nothing left to do: recorded, acknowledged (or read-only), server state here."""
        link = self.link
        if link.error is not None:
            return True
        if self.unrecorded or (len(self.outbox) and not self.device.read_only):
            return False
        return not link.wanted or (
            self.synced.is_set()
            and not link.probes
            and link.confirm is None
            and not self.base_wanted
            and not link.verdicts
        )
