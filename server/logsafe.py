"""Client-supplied text made safe for a log line (see :mod:`crdt.logsafe`, where it lives
so the data layer's own log lines use it too)."""

from __future__ import annotations

from crdt.logsafe import printable

__all__ = ["printable"]
