"""The aiohttp application: ``create_app(settings)`` wires every part together.

Lifecycle (one style: ``cleanup_ctx``): on startup the store is opened
(``crdt.kv.open_engine``), the history format checked, the group-commit writer, the
room reaper and the instance registry started; on shutdown (``on_shutdown``, after the listening sockets closed)
the server drains: it reads no more updates, commits every update already accepted,
sends their acks and broadcasts, and closes every connection with 1001; then the
cleanup context closes the store.

Routes: ``/healthz``, ``/metrics``, ``/ws/{tenant}/{project}/{path}``, the read API
(:mod:`server.api`) and the time-travel API (:mod:`server.timetravel_api`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from crdt.history import History
from crdt.kv import open_engine
from server import api, conflicts_api, timetravel_api
from server.appkeys import (
    AUTH,
    CONNECTIONS,
    HISTORY,
    METRICS,
    ON_BRANCH,
    ON_EDIT_DELETED,
    QUOTAS,
    ROOMS,
    SETTINGS,
    WRITER,
)
from server.auth import Authenticator
from server.config import Settings
from server.connection import Connections
from server.loopback import loopback_only
from server.metrics import Metrics
from server.quotas import Quotas
from server.rooms import Rooms
from server.writer import Writer
from server.ws import CLOSE_GOING_AWAY, websocket

log = logging.getLogger("weft.server")
MAX_REST_BODY = 1 << 20


def create_app(settings: Settings | None = None) -> web.Application:
    """A ready-to-run application; nothing is opened until its runner starts it."""
    settings = settings or Settings()
    middlewares = [api.error_middleware]
    if not settings.auth_enabled and not settings.insecure:
        middlewares.append(loopback_only)  # no web page of another site (server.loopback)
    app = web.Application(middlewares=middlewares, client_max_size=MAX_REST_BODY)
    metrics = Metrics()
    history = History(
        open_engine(settings.store),
        snapshot_every=settings.snapshot_every,
        snapshot_bytes=settings.snapshot_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[HISTORY] = history
    app[AUTH] = Authenticator(
        secret=settings.secret.get_secret_value() if settings.secret else None,
        public_key=settings.public_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway_seconds,
    )
    app[QUOTAS] = Quotas.from_settings(settings, metrics)
    app[WRITER] = Writer(
        history,
        metrics,
        max_updates=settings.commit_max_updates,
        max_bytes=settings.commit_max_bytes,
    )
    app[ROOMS] = Rooms(
        history,
        metrics,
        instance=settings.instance,
        idle_seconds=settings.room_idle_seconds,
        max_idle=settings.max_idle_rooms,
    )
    app[ROOMS].release_hooks.append(app[WRITER].forget_checks)
    app[ROOMS].load_hooks.append(app[WRITER].note_loaded)
    app[CONNECTIONS] = Connections(settings.refusal_hold_seconds)
    app[WRITER].settled_hooks.append(app[CONNECTIONS].flusher.flush)
    app[ON_BRANCH] = None  # conflicts_api.setup installs the conflict detectors
    app[ON_EDIT_DELETED] = None
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(drain)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/ws/{tenant}/{project}/{path:.+}", websocket)
    # Time travel first: the read API's docs/{path:.+} would match longer routes too.
    timetravel_api.setup(app)
    conflicts_api.setup(app)
    api.setup(app)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    history = app[HISTORY]
    async with history.kv:
        await history.init()
        app[WRITER].start()
        app[ROOMS].start()
        # Connection and rate quotas hold across instances: through the registry.
        app[QUOTAS].join(app[ROOMS].awareness.registry)
        # Joined now, not at the first connection: weft_instances counts the instances on
        # this store from the start (one heartbeat write every 10 s, one watch), and a
        # first connection finds the others' counts read already.
        app[ROOMS].awareness.registry.start()
        try:
            yield
        finally:
            await app[WRITER].close()
            await app[ROOMS].close()


async def drain(app: web.Application) -> None:
    """Stop reading updates, commit what was accepted, ack it, close every connection."""
    connections = app[CONNECTIONS]
    if connections.draining:
        return
    connections.draining = True
    pending = app[WRITER].pending
    log.info(
        "draining: %d connection%s, %d update%s to commit",
        len(connections.open),
        "" if len(connections.open) == 1 else "s",
        pending,
        "" if pending == 1 else "s",
    )
    await app[WRITER].close()
    await asyncio.sleep(0)  # let commit callbacks queue their acks and broadcasts
    connections.close_all(CLOSE_GOING_AWAY, "server shutting down")
    deadline = asyncio.get_running_loop().time() + app[SETTINGS].drain_seconds
    while connections.open and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    log.info("drained")


async def healthz(request: web.Request) -> web.Response:
    """200 ``ok``; 503 ``draining``, or ``store_failing`` (with the store's error) while
    the last commit of updates failed (see ``Writer.health``)."""
    draining = request.app[CONNECTIONS].draining
    failing = request.app[WRITER].health()
    status = "draining" if draining else "ok" if failing is None else "store_failing"
    body: dict[str, object] = {
        "status": status,
        "instance": request.app[SETTINGS].instance,
        "auth": request.app[AUTH].enabled,
    }
    if failing is not None:
        body["store"] = str(failing)
    return web.json_response(body, status=200 if status == "ok" else 503)


async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.connections.set(len(request.app[CONNECTIONS].open))
    metrics.rooms_loaded.set(len(request.app[ROOMS]))
    return web.Response(
        body=metrics.render().encode(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
