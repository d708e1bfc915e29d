"""pycrdt-websocket as the fan-out benchmark's Python peer (run inside its own venv).

``python pycrdt_server.py HOST PORT``: a ``WebsocketServer`` (rooms in memory, no store,
rooms dropped when their last client leaves) behind uvicorn with the ``websockets-sansio``
protocol and the plain asyncio loop (the loop weft runs on). Any URL path is a room.
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(host: str, port: int) -> None:
    async with WebsocketServer(auto_clean_rooms=True) as websocket_server:
        config = uvicorn.Config(
            ASGIServer(websocket_server),
            host=host,
            port=port,
            loop="asyncio",
            ws="websockets-sansio",
            ws_max_size=16 << 20,
            ws_ping_interval=None,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        print(f"pycrdt-websocket listening on {host}:{port}", flush=True)
        await uvicorn.Server(config).serve()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
