"""Per-tenant connection and rate quotas hold across server instances on one store.

Two real ``weft serve`` processes on one SQLite file, y-websocket peers over real sockets.
Each instance publishes its connection counts in the instance registry and counts the
other live instances' (server.registry, server.quotas).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest

from server.testing import ConnectionClosed, ServerProcess, StartServer, YPeer

pytestmark = pytest.mark.functional

LIMIT = 3
RATE = 20
BURST = 4


async def metric(http: aiohttp.ClientSession, server: ServerProcess, series: str) -> float:
    async with http.get(f"{server.url}/metrics") as r:
        text = await r.text()
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def until_metric(
    http: aiohttp.ClientSession, server: ServerProcess, series: str, value: float
) -> None:
    """Poll ``series`` on ``server`` until it equals ``value`` (the registry's view)."""
    deadline = time.monotonic() + 5.0
    while (seen := await metric(http, server, series)) != value:
        assert time.monotonic() < deadline, f"{series} stayed {seen}, expected {value}"
        await asyncio.sleep(0.05)


def two_instances(
    factory: StartServer, tmp_path: Path, quotas: dict[str, object]
) -> tuple[ServerProcess, ServerProcess]:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    env = {"WEFT_TENANT_QUOTAS": json.dumps({"acme": quotas})}
    return (
        factory(workdir=tmp_path / "a", store=store, env=env),
        factory(workdir=tmp_path / "b", store=store, env=env),
    )


async def refused(http: aiohttp.ClientSession, url: str) -> tuple[int | None, str]:
    peer = await YPeer.connect(http, url, handshake=False)
    return await peer.closed()


async def test_the_connection_quota_holds_across_instances(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b = two_instances(weft_server_factory, tmp_path, {"max_connections": LIMIT})
    url_a, url_b = f"{a.ws_url}/acme/site/a.txt", f"{b.ws_url}/acme/site/b.txt"
    a1 = await YPeer.connect(http, url_a)
    await YPeer.connect(http, url_a)
    await YPeer.connect(http, url_b)
    await until_metric(http, b, "weft_remote_connections", 2)
    await until_metric(http, a, "weft_remote_connections", 1)
    assert await metric(http, a, "weft_instances") == 2

    # The tenant holds 3 connections in all: the next one is refused on either instance.
    for url, here, there in ((url_b, 1, 2), (url_a, 2, 1)):
        code, reason = await refused(http, url)
        assert code == 4429, reason
        assert reason == (
            f"too many connections for tenant acme (limit {LIMIT}; "
            f"{here} here, {there} on other instances)"
        )
    for server in (a, b):
        assert await metric(http, server, 'weft_refusals_total{reason="connections"}') == 1

    # One closes on A: B learns it and admits a new connection; then the tenant is full.
    await a1.close()
    await until_metric(http, b, "weft_remote_connections", 1)
    fresh = await YPeer.connect(http, url_b, weft=True)  # the handshake completes
    await fresh.append("admitted")
    await fresh.until(lambda: len(fresh.acks) == 1, timeout=2.0)
    await until_metric(http, a, "weft_remote_connections", 2)
    code, _ = await refused(http, url_a)
    assert code == 4429
    # Another tenant is not affected.
    other = await YPeer.connect(http, f"{a.ws_url}/other/site/x.txt")
    await other.close()


@pytest.mark.slow  # the walkthrough's timing: 3.5 s of waits
async def test_an_instance_started_later_does_not_admit_on_a_lone_instances_old_counts(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A lone instance publishes its counts only at its heartbeat (every 10 s). The other
    instance's first connection used to be admitted on that heartbeat-old entry (found in
    a walkthrough: 3 connections against a limit of 2). It now waits until the lone
    instance has published its counts since learning of it."""
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    a = weft_server_factory(workdir=tmp_path / "a", store=store)
    b = weft_server_factory(
        workdir=tmp_path / "b",
        store=store,
        env={"WEFT_TENANT_QUOTAS": json.dumps({"mc": {"max_connections": 2}})},
    )
    await asyncio.sleep(2.0)
    for _ in range(2):
        await YPeer.connect(http, f"{a.ws_url}/mc/site/x.txt")
    await asyncio.sleep(1.5)  # A's join (with no connections counted yet) is long written
    code, reason = await refused(http, f"{b.ws_url}/mc/site/x.txt")
    assert (code, reason) == (
        4429,
        "too many connections for tenant mc (limit 2; 0 here, 2 on other instances)",
    )
    for server in (a, b):
        assert await metric(http, server, "weft_instances") == 2
    assert await metric(http, b, "weft_remote_connections") == 2


async def acks_within(peer: YPeer, seconds: float) -> int:
    """The acks ``peer`` receives within ``seconds``."""
    deadline = time.monotonic() + seconds
    try:
        await peer.until(lambda: time.monotonic() >= deadline, timeout=seconds + 1)
    except TimeoutError:
        pass
    except ConnectionClosed as exc:
        raise AssertionError(f"closed while sending within the rate: {exc}") from exc
    return len(peer.acks)


@pytest.mark.slow  # two instances, a 2.5 s window
async def test_the_update_rate_is_shared_by_the_instances_serving_a_tenant(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b = two_instances(
        weft_server_factory, tmp_path, {"updates_per_second": RATE, "updates_burst": BURST}
    )
    pa = await YPeer.connect(http, f"{a.ws_url}/acme/site/a.txt", weft=True)
    pb = await YPeer.connect(http, f"{b.ws_url}/acme/site/b.txt", weft=True)
    for server in (a, b):  # each knows the other serves the tenant
        await until_metric(http, server, "weft_remote_connections", 1)

    # Both write as fast as they can: the instances delay reading (backpressure) so that
    # together they commit about RATE per second after the burst, not 2 x RATE.
    window = 2.5
    for i in range(45):  # more than one instance admits in the window, not too many more
        await pa.append(f"a{i} ")
        await pb.append(f"b{i} ")
    counts = await asyncio.gather(acks_within(pa, window), acks_within(pb, window))
    total = sum(counts)
    alone = BURST + RATE * window  # what one instance alone would admit: 54
    print(f"\naccepted in {window:g} s: A {counts[0]}, B {counts[1]}; limit ~{alone:g}")
    assert total <= alone * 1.25, counts  # per-instance buckets would admit ~2 x alone
    assert total >= alone * 0.5, counts  # and the shared rate is not starved
    assert min(counts) >= 0.25 * total, counts  # each instance gets its share
    assert not pa.refused and not pb.refused
    for peer in (pa, pb):  # closes once the server has read what it was sent (~2 s)
        await peer.close()


async def test_two_instances_count_each_other_before_any_connection(
    weft_server_factory: StartServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Found in a walkthrough: weft_instances read 1 on both servers of one store until
    one of them got a WebSocket connection (the registry started on demand). It starts
    with the server; SIGTERM leaves it, and the other counts one again."""
    a, b = two_instances(weft_server_factory, tmp_path, {})
    await until_metric(http, a, "weft_instances", 2)
    await until_metric(http, b, "weft_instances", 2)
    await asyncio.to_thread(b.terminate)
    await until_metric(http, a, "weft_instances", 1)
    assert "connection" not in a.log()  # nobody connected
