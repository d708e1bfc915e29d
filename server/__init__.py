"""weft's sync server: y-websocket rooms over aiohttp on the shared data layer."""
