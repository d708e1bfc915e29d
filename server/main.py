"""Running the server: logging, the listening socket, signals, the startup banner.

SIGTERM (or SIGINT) drains: the listening socket closes first, then the app's shutdown
(:func:`server.app.drain`) commits what was accepted and closes every connection, then
the store closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from crdt.errors import StoreConfigError, StoreError
from server import badrequests, memory
from server.app import create_app
from server.appkeys import CONNECTIONS
from server.auth import verifying_key
from server.config import Settings
from server.logsafe import printable

log = logging.getLogger("weft.server")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    badrequests.install()  # no request bytes (a token's) and no traceback per bad request


def banner(settings: Settings, addresses: list[tuple[str, int]]) -> list[str]:
    """What the server prints at start: where it listens, the store, whether auth is on."""
    lines = [
        f"weft listening on http://{_host(h)}:{p}  (WebSocket rooms: ws://{_host(h)}:{p}"
        "/ws/{tenant}/{project}/{path})"
        for h, p in addresses
    ]
    lines.append(f"store: {settings.store}")
    lines.append(f"event loop: {settings.event_loop}")
    if settings.auth_enabled:
        kinds = ["HS256"] if settings.secret else []
        if settings.public_key:  # checked by Settings: RS256 (RSA) or ES256 (EC P-256)
            kinds.append(verifying_key(settings.public_key)[1])
        lines.append(f"auth: on ({', '.join(kinds)} tokens required)")
    else:
        lines.append(
            "auth: OFF -- no secret configured: anyone who can connect may read and write "
            "every tenant (set WEFT_SECRET to turn auth on)"
        )
    return lines


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path, status, bytes, seconds. The query
    string is left out: the official client sends its token there (``?token=``), and
    aiohttp's default line (``%r``, the request line) wrote every live token to the log.
    Control characters in the path are escaped: a ``%0a`` in a URL forged a line."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %s %.3fs",
            request.remote,
            request.method,
            printable(request.path),
            response.status,
            response.body_length,
            time,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


class CannotListen(Exception):
    """The address is taken or not ours (the message says which)."""


def _check_address(host: str, port: int) -> None:
    """:class:`CannotListen` when ``host:port`` is taken or not ours, found by binding
    (and closing) a socket there as the server will, before the store is opened: a
    busy port left a new, empty store file behind. (Taken in between: said by the site.)"""
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        for family, kind, proto, _, address in found:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc}") from exc


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain."""
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("weft.access"),
        access_log_class=AccessLogger,
        shutdown_timeout=settings.drain_seconds,
        keepalive_timeout=settings.keepalive_seconds,
    )
    _check_address(settings.host, settings.port)  # before the store is opened (or made)
    await runner.setup()  # opens the store: its OSErrors are the store's
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            app[CONNECTIONS].draining = True  # it never listened: nothing to drain, or say
            raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {exc}") from exc
        addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]
        for line in banner(settings, addresses):
            print(line, flush=True)
        if not settings.auth_enabled:
            log.warning("AUTH IS OFF: dev mode on %s, every caller is an admin", settings.host)
        # Everything loaded so far (modules, the app: ~60,000 objects) lives as long as
        # the process: keep it out of the garbage collector's full passes, each of which
        # would otherwise walk it all (30-40 ms, measured during startup here).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("signal received: draining")
    finally:
        await runner.cleanup()
    log.info("stopped")


def run(settings: Settings) -> int:
    """``weft serve``: the exit code (0 after a clean drain; 2 for a store URL it cannot
    use, a configuration error as a bad setting is; 1 when the store fails or the
    address is taken)."""
    configure_logging(settings.log_level)
    memory.limit_arenas()
    try:
        if settings.event_loop == "uvloop":
            import uvloop  # installed: Settings checked

            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    except StoreConfigError as exc:  # a bad store URL, or fdb:// without libfdb_c
        print(f"weft serve: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"weft serve: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # e.g. fdb:// without the FoundationDB engine or client library
        print(f"weft serve: store {settings.store} is not available: {exc}", file=sys.stderr)
        return 2
    except CannotListen as exc:
        print(f"weft serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the store's folder cannot be created
        print(f"weft serve: cannot open the store {settings.store}: {exc}", file=sys.stderr)
        return 1
    return 0
