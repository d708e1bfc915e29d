"""A document's state can be bigger than a connection's send queue (the document limit
is 8x the queue's by default): a joiner still gets it, as one frame."""

from __future__ import annotations

from pathlib import Path

from server.app import create_app
from server.config import Settings
from server.testing import YPeer, client_session, serve_in_process


async def test_a_joiner_gets_a_state_bigger_than_its_send_queue(tmp_path: Path) -> None:
    settings = Settings(
        store=f"sqlite:///{tmp_path / 'weft.db'}",
        commit_max_bytes=256 << 10,
        send_queue_bytes=256 << 10,
        max_update_bytes=200 << 10,
    )
    async with serve_in_process(create_app(settings)) as server, client_session() as http:
        url = f"{server.ws_url}/acme/site/big.txt"
        writer = await YPeer.connect(http, url)
        watcher = await YPeer.connect(http, url)
        parts = [letter * (150 << 10) for letter in "abc"]  # 450 kB in all
        for part in parts:
            await writer.append(part)
        await watcher.wait_text("".join(parts))
        joiner = await YPeer.connect(http, url)  # its SyncStep2: one ~450 kB frame
        assert str(joiner) == "".join(parts)
