"""Typed keys for the aiohttp application's shared state (``web.AppKey``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from crdt.history import History
    from server.auth import Authenticator

HISTORY: web.AppKey[History] = web.AppKey("weft.history")
AUTH: web.AppKey[Authenticator] = web.AppKey("weft.auth")
