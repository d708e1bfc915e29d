"""What a device reports, the hooks it calls, and how it fails."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crdt.errors import WeftError


@dataclass(frozen=True, slots=True)
class Event:
    """Something a person may want to see: ``kind`` is online, offline, read_only,
    warning, error, conflict, local, remote or deleted."""

    kind: str
    message: str
    path: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


def conflict_event(path: str, cid: str, summary: str, note: str = "") -> Event:
    """How a conflict the server recorded is said: ``conflict: PATH: SUMMARY; see `weft
    conflicts show ID```, then ``note`` (in brackets) when given. The same for a verdict
    received live and for a record found in the project's conflict list
    (:mod:`client.said`), so both read alike."""
    message = f"conflict: {path}: {summary}; see `weft conflicts show {cid}`"
    return Event(
        "conflict",
        f"{message} ({note})" if note else message,
        path,
        {"id": cid, "summary": summary, **({"note": note} if note else {})},
    )


class Listener:
    """Hooks into a device (a folder workspace uses them); the defaults do nothing."""

    def before_remote(self, path: str) -> None:
        """A remote update for ``path`` is about to be applied."""

    def after_remote(self, path: str) -> None:
        """A remote update for ``path`` was applied to its document."""

    def remote_docs(self, paths: list[str]) -> None:
        """The server has documents this device has not opened."""

    def link_closed(self, path: str) -> None:
        """The link of ``path`` stopped (closed once idle, failed, or the device closing)."""

    def busy(self, path: str) -> bool:
        """Whether ``path`` has work in progress that should keep its link open."""
        return False

    def event(self, event: Event) -> None:
        """Something to show."""


class DeviceFailed(WeftError):
    """The device cannot sync at all (its token was refused, for instance)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DocumentsFailed(WeftError):
    """``Device.sync()`` ended with documents the server refused for good (a path it
    will not create, 4400, say): ``failed`` maps each path to why. Their local edits
    stay on the device, not sent; the device's other documents are in sync. A failed
    document is not tried again by this device: make a new Device to retry."""

    def __init__(self, failed: dict[str, str]) -> None:
        listed = "; ".join(f"{path}: {why}" for path, why in sorted(failed.items()))
        super().__init__(f"{len(failed)} document(s) not in sync: {listed}")
        self.failed = failed


class DeviceUnusable(WeftError, RuntimeError):
    """A :class:`~client.device.Device` used when it cannot be: before ``start()``
    (:class:`DeviceNotStarted`), or once ``close()`` began (:class:`DeviceClosed`)."""


class DeviceNotStarted(DeviceUnusable):
    """The device was used before ``start()`` (or ``async with``)."""


class DeviceClosed(DeviceUnusable):
    """The device was used after ``close()``: a closed device is not started again (make
    a new one on the same data directory), and an edit made to one of its documents
    then is refused (not recorded, not sent)."""
