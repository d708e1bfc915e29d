"""Server addresses: one ``--server`` value gives the rooms and the REST API."""

from __future__ import annotations

import pytest

from client.remote import ServerURL


@pytest.mark.parametrize(
    ("given", "ws", "http"),
    [
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("ws://127.0.0.1:8765/ws", "ws://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("wss://sync.example.com/", "wss://sync.example.com", "https://sync.example.com"),
        ("http://h:1/prefix/ws/", "ws://h:1/prefix", "http://h:1/prefix"),
        ("https://h", "wss://h", "https://h"),
    ],
)
def test_forms_of_the_server_url(given: str, ws: str, http: str) -> None:
    url = ServerURL.parse(given)
    assert (url.ws, url.http) == (ws, http)


@pytest.mark.parametrize("bad", ["", "localhost:8765", "ftp://h", "ws://", "ws://h/?token=x"])
def test_bad_server_urls_are_refused_clearly(bad: str) -> None:
    with pytest.raises(ValueError, match="server URL"):
        ServerURL.parse(bad)


def test_rooms_and_api_paths_are_quoted() -> None:
    url = ServerURL.parse("ws://h:1")
    assert url.room("acme", "site", "docs/a b#1.md") == "ws://h:1/ws/acme/site/docs/a%20b%231.md"
    assert url.api("acme", "site", "conflicts", "00ff") == (
        "http://h:1/api/v1/acme/site/conflicts/00ff"
    )
