"""Keeping web pages out of a server run with auth off on a loopback address.

Such a server takes every caller on this machine as an admin of every tenant, and a
browser on this machine is such a caller for any page it shows: a page of any site could
open ``ws://127.0.0.1:8765/ws/...`` (a WebSocket handshake is never blocked across
sites), read and overwrite every document, and ``POST .../revert`` as a "simple"
request (``Content-Type: text/plain``, no preflight); a name the attacker's DNS points at
127.0.0.1 (DNS rebinding) made the page same-origin with the server.

So with auth off (and no ``--insecure``), a request is refused (403) when its ``Origin``
(sent by browsers, not by ``weft sync`` or Node's y-websocket) or its ``Host`` names
another host than this machine: ``localhost``, a name under ``.localhost`` (either with
a final dot), a loopback address, or ``0.0.0.0`` or ``::``. ``Origin: null`` (a sandboxed frame, a page opened
from a file) is refused too, and so is an ``Origin`` of another scheme than http(s)
(``file://``, ``chrome-extension://``): it names no host of this machine.
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from crdt.errors import PermissionDenied
from server.api import Handler
from server.config import is_loopback


def loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a URL's host, as yarl gives it) names this machine; a name
    written with its root's dot (``localhost.``, a fully qualified name) too."""
    if not host:
        return False
    name = host.lower().removesuffix(".")
    # 0.0.0.0 and :: reach this machine when connected to (python -m http.server
    # prints http://0.0.0.0:8000/); only a page served from here has such an origin.
    return is_loopback(name) or name.endswith(".localhost") or name in ("0.0.0.0", "::")


def _host_of(value: str, *, origin: bool) -> str | None:
    """The host an ``Origin`` (``scheme://host[:port]``) or ``Host`` (``host[:port]``)
    header names; None when it names none (``null``, garbage)."""
    try:
        url = URL(value) if origin else URL(f"http://{value}")
    except ValueError:
        return None
    if origin and url.scheme not in ("http", "https"):
        return None
    return url.raw_host


def foreign(request: web.Request) -> str | None:
    """Which header of ``request`` names another host than this machine, said for the
    refusal; None when neither does (or neither is sent)."""
    for header, origin in (("Origin", True), ("Host", False)):
        value = request.headers.get(header)
        if value is not None and not loopback_host(_host_of(value, origin=origin)):
            return f"{header}: {value[:80]!r}"
    return None


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse (403) a request from a web page of another site, or through a name that is
    not this machine's (see the module's docstring)."""
    where = foreign(request)
    if where is not None:
        raise PermissionDenied(
            f"auth is off, so this server takes requests from this machine only, and this "
            f"one comes from elsewhere ({where}); run the server with a secret to take it"
        )
    return await handler(request)
