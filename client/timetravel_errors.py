"""What the time-travel commands raise for their exit codes: :class:`BadInput` (2) and
:class:`Failed` (1). ``client.timetravel_cli`` turns them into a message on stderr.
"""

from __future__ import annotations

from crdt.errors import WeftError


class BadInput(WeftError, ValueError):
    """The user's input is wrong (exit 2)."""


class Failed(WeftError):
    """The operation could not be done (exit 1)."""
