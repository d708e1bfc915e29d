"""A reverse proxy in front of a real weft server, for tests of how ``weft sync`` takes a
conflict list it cannot read: WebSockets and REST calls pass through, except the
conflict list (``GET .../conflicts``), which the mode file (read on each request) can
make ``slow`` (no answer for 120 s) or ``404`` (as a proxy or another store might).

    python list_proxy.py UPSTREAM_URL PORT MODE_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

UP, PORT, MODE = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])


async def _pipe(
    source: aiohttp.ClientWebSocketResponse | web.WebSocketResponse, sink: object
) -> None:
    async for message in source:
        if message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)  # type: ignore[attr-defined]
        elif message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)  # type: ignore[attr-defined]
    await sink.close()  # type: ignore[attr-defined]


async def handle(request: web.Request) -> web.StreamResponse:
    mode = MODE.read_text().strip() if MODE.exists() else ""
    if request.method == "GET" and request.path.endswith("/conflicts"):
        print(f"LIST {request.query_string} {mode or 'pass'}", flush=True)
        if mode == "slow":
            await asyncio.sleep(120)
        elif mode == "404":
            error = {"code": "not_found", "message": "no such thing here"}
            return web.json_response({"error": error}, status=404)
    async with aiohttp.ClientSession() as session:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse(max_msg_size=0)
            await ws.prepare(request)
            auth = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
            async with session.ws_connect(UP + request.path_qs, headers=auth, max_msg_size=0) as up:
                await asyncio.gather(_pipe(ws, up), _pipe(up, ws), return_exceptions=True)
            return ws
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.request(
            request.method, UP + request.path_qs, data=await request.read(), headers=headers
        ) as response:
            return web.Response(
                status=response.status,
                body=await response.read(),
                headers={"Content-Type": response.headers.get("Content-Type", "application/json")},
            )


app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=PORT, print=None)
