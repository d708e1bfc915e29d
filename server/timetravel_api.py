"""Time-travel routes under /api/v1/{tenant}/{project}/ (being built)."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add the time-travel routes to ``app`` (none yet)."""
