"""One open document of a device: its live ``pycrdt.Doc``, outbox, base and link.

The document's text is the root ``Y.Text`` named ``content``; the root ``Y.Map`` named
``weft`` holds ``deleted`` (the project's deletion convention).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Subscription, Text

from client.connection import DocLink
from client.outbox import Outbox
from client.state import DocState
from crdt.history import DocRef
from crdt.versionstamp import Versionstamp

if TYPE_CHECKING:
    from client.device import Device

CONTENT = "content"
META = "weft"
MAX_BASE_ROUNDS = 3  # heads reads a sync waits for to prove a base others keep moving


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
        # Updates and bytes in the local history after its latest snapshot, as far as
        # this device knows (from the load on): see Recorder.snapshot_due.
        self.since_snapshot = 0
        self.since_snapshot_bytes = 0
        self.applying_remote = False
        # Server updates are here that the base may not cover (received live, or in an
        # answer that can reach past the head its probe proves): a heads read started
        # after the last of them (the device had started base_wanted_at reads then),
        # and a probe for its head, prove them. A sync waits for that, for at most
        # MAX_BASE_ROUNDS heads reads (see base_awaited).
        self.base_wanted = False
        self.base_wanted_at = 0
        self.base_rounds = 0
        self.link = DocLink(device, self)
        self.subscription: Subscription | None = None  # the device's observer of ``doc``

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

    @property
    def waiting(self) -> bool:
        """Local updates wait for their acks: the base cannot move past them (they were
        made on it); their acks, and the probe confirming the last, move it."""
        return len(self.outbox) > 0 or self.unrecorded_local > 0

    def received(self) -> None:
        """Server updates arrived that the base may not cover: an offline branch based on
        it would be judged against edits this device has seen (a spurious conflict; for
        a deletion, "deleted here while edited elsewhere"). Only a heads read started
        from now on, and a probe for its head, prove them."""
        self.base_wanted = True
        self.base_wanted_at = self.device.heads_reads

    def settled(self) -> None:
        """The base covers every server update here."""
        self.base_wanted = False
        self.base_rounds = 0
        self.device.changed()

    def base_due(self) -> bool:
        """The base lags behind server updates here and a probe can move it now (no local
        update waits)."""
        return self.base_wanted and not self.waiting

    def base_awaited(self) -> bool:
        """A sync waits for the base to catch up (see base_due), but for no more than
        MAX_BASE_ROUNDS heads reads: a document others keep editing may stay ahead of every
        heads read."""
        return self.base_due() and self.base_rounds < MAX_BASE_ROUNDS

    def seen(self, vs: Versionstamp | None, read: int = 0) -> None:
        """Everything up to ``vs`` is in this document (a probe's answer; ``read``: the
        number of the heads read ``vs`` came from, 0 if none); move ``base`` if no local
        update is waiting (those were made on the older base). If server updates that
        arrived after that read started may reach past ``vs``, read the heads again
        (see ``DocLink.settle_later``)."""
        if vs is not None:
            if self.head_seen is None or vs > self.head_seen:
                self.head_seen = vs
            if not self.waiting and (self.base is None or vs > self.base):
                self.base = vs
                self.device.save_doc_state(self)
        if self.base_wanted and not self.waiting:
            if vs is not None and read > self.base_wanted_at:
                self.settled()
            else:
                self.link.settle_later()

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
            and not self.base_awaited()
            and not link.verdicts
        )
