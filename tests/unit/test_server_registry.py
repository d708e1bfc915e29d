"""The instance registry: two registries on one real SQLite file (two engines, as two
server processes would have), and the pure reading of its rows."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgpack
import pytest

from crdt import keys
from crdt.errors import QuotaExceeded
from crdt.kv import Engine, Transaction
from server.metrics import Metrics
from server.quotas import FIELD, Limits, Quotas
from server.registry import INSTANCE_TIMEOUT_MS, PUBLISH_EVERY, Registry, live_peers
from server.testing import until

NOW = 1_800_000_000_000


async def stored(kv: Engine, name: str) -> dict[str, Any] | None:
    raw = await kv.read(lambda tr: tr.get(keys.instance(name)))
    return None if raw is None else dict(msgpack.unpackb(raw))


def test_live_peers_skips_mine_the_expired_and_the_undecodable() -> None:
    rows = [
        (keys.instance("a"), msgpack.packb({"ms": NOW, "conns": {"acme": 1}})),
        (keys.instance("b"), msgpack.packb({"ms": NOW - INSTANCE_TIMEOUT_MS + 1})),
        (keys.instance("dead"), msgpack.packb({"ms": NOW - INSTANCE_TIMEOUT_MS})),
        (keys.instance("junk"), b"\xc1"),
        (keys.instance("nodict"), msgpack.packb([NOW])),
        (keys.instance("noms"), msgpack.packb({"conns": {}})),
    ]
    peers = live_peers(rows, keys.instance("a"), NOW)
    assert peers == {"b": {"ms": NOW - INSTANCE_TIMEOUT_MS + 1}}


async def test_a_lone_instance_writes_only_its_heartbeat(engines: tuple[Engine, Engine]) -> None:
    counts = {"acme": 1}
    a = Registry(engines[0], "a")
    a.share("conns", lambda: dict(counts))
    try:
        assert await a.ready(2.0)
        assert (await stored(engines[0], "a") or {})["conns"] == {"acme": 1}
        counts["acme"] = 2
        a.changed()
        await asyncio.sleep(PUBLISH_EVERY + 0.3)
        assert not a.others
        assert (await stored(engines[0], "a") or {})["conns"] == {"acme": 1}  # not yet
    finally:
        await a.close()
    assert await stored(engines[0], "a") is None  # left


async def test_instances_see_each_other_and_publish_changes_promptly(
    engines: tuple[Engine, Engine],
) -> None:
    counts_a: dict[str, int] = {"acme": 1}
    metrics_b = Metrics()
    a = Registry(engines[0], "a")
    b = Registry(engines[1], "b", metrics_b)
    a.share("conns", lambda: dict(counts_a))
    b.share("conns", lambda: {"acme": 5})
    flips: list[bool] = []
    a.on_others(flips.append)
    seen_by_b: list[Any] = []
    b.on_peers(lambda: seen_by_b.append(b.peers.get("a", {}).get("conns")))
    try:
        assert await a.ready(2.0)
        counts_a["acme"] = 2  # alone: not published...
        a.changed()
        assert await b.ready(2.0)
        # ...but a newcomer gets it at once: a publishes when b appears.
        await until(lambda: b.peers.get("a", {}).get("conns") == {"acme": 2})
        await until(lambda: a.peers.get("b", {}).get("conns") == {"acme": 5})
        assert a.others and b.others and flips == [True]
        assert metrics_b.instances.value == 2

        # Changes while another instance is alive: published within about one interval,
        # a burst of them coalesced into a few writes.
        seen_by_b.clear()
        started = time.monotonic()
        for n in range(3, 53):
            counts_a["acme"] = n
            a.changed()
            await asyncio.sleep(0.01)
        await until(lambda: b.peers["a"]["conns"] == {"acme": 52})
        took = time.monotonic() - started
        assert took < 0.5 + 3 * PUBLISH_EVERY, took
        assert 1 <= len(seen_by_b) <= 5, seen_by_b

        await a.close()  # leaving: b learns at once
        await until(lambda: not b.others, timeout=1.0)
        assert b.peers == {} and metrics_b.instances.value == 1
    finally:
        await a.close()
        await b.close()


async def test_quotas_read_the_others_counts_before_the_first_connection(
    engines: tuple[Engine, Engine],
) -> None:
    limits = Limits(1000, 5000, updates_per_second=10, updates_burst=4, max_connections=3)
    b = Registry(engines[1], "b")
    b.share(FIELD, lambda: {"acme": 3})
    a = Registry(engines[0], "a")
    quotas = Quotas(limits)
    quotas.join(a)
    try:
        assert await b.ready(2.0)
        assert await stored(engines[0], "a") is None  # nothing before a connection
        await quotas.ready()  # the registry starts and is read: no polling needed
        assert quotas.remote_connections("acme") == 3
        with pytest.raises(QuotaExceeded):
            quotas.connect("acme")
        quotas.connect("other")
        assert quotas.instances("acme") == 2
    finally:
        await a.close()
        await b.close()


async def test_a_newcomer_is_ready_only_once_every_live_instance_published_since_it_joined(
    engines: tuple[Engine, Engine],
) -> None:
    """A lone instance publishes a change only at its heartbeat (10 s): its entry may be
    that old when another instance joins. The newcomer's first connection must not be
    admitted on it: ``ready`` waits until every live instance's entry lists the newcomer
    in ``seen`` (written after it learned of it, with its counts of then). Instances that
    were publishing promptly already (they had each other) republish for a newcomer too."""
    limits = Limits(1000, 5000, updates_per_second=10, updates_burst=4, max_connections=3)
    counts_a = {"acme": 1}
    a = Registry(engines[0], "a")
    a.share(FIELD, lambda: dict(counts_a))
    b = Registry(engines[1], "b")
    quotas_b = Quotas(limits)
    quotas_b.join(b)
    c = Registry(engines[1], "c")
    c.share(FIELD, lambda: {"acme": 0})
    try:
        assert await a.ready(2.0)
        counts_a["acme"] = 2  # alone: not published until a's heartbeat
        a.changed()
        await asyncio.sleep(0.1)
        assert (await stored(engines[0], "a") or {})[FIELD] == {"acme": 1}
        await quotas_b.ready()
        assert b.synced and b.unsynced() == []
        assert quotas_b.remote_connections("acme") == 2  # no polling: known when ready
        quotas_b.connect("acme")
        with pytest.raises(QuotaExceeded):
            quotas_b.connect("acme")

        # a and b have each other now, and nothing changes: a third instance still waits
        # for both to list it, and they do at once (not at their heartbeats).
        await until(lambda: (b.peers.get("a") or {}).get(FIELD) == {"acme": 2})
        await asyncio.sleep(PUBLISH_EVERY + 0.2)
        assert await c.ready(2.0)
        assert {name: entry[FIELD] for name, entry in c.peers.items()} == {
            "a": {"acme": 2},
            "b": {"acme": 1},
        }
        assert all("c" in entry["seen"] for entry in c.peers.values())
    finally:
        for registry in (a, b, c):
            await registry.close()


async def test_a_newcomer_waits_at_most_its_timeout_for_an_instance_that_does_not_answer(
    engines: tuple[Engine, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    """An instance killed within its heartbeat timeout still looks alive and never lists
    a newcomer: the newcomer waits once, says so, and counts what it published last."""
    now = int(time.time() * 1000)
    entry = {"ms": now, "seen": [], FIELD: {"acme": 2}}
    await engines[0].transact(lambda tr: tr.set(keys.instance("killed"), msgpack.packb(entry)))
    b = Registry(engines[1], "b")
    quotas = Quotas(Limits(1000, 5000, 10, 4, max_connections=3))
    quotas.join(b)
    try:
        started = time.monotonic()
        await quotas.ready(timeout=0.3)
        await quotas.ready(timeout=0.3)  # no second wait
        assert 0.3 <= time.monotonic() - started < 0.55
        assert not b.synced and b.unsynced() == ["killed"]
        assert "instance(s) killed did not publish their counts within 0.3 s" in caplog.text
        assert quotas.remote_connections("acme") == 2
        quotas.connect("acme")
        with pytest.raises(QuotaExceeded):
            quotas.connect("acme")
    finally:
        await b.close()


class FlakyWatch:
    """A real engine whose first ``watch`` fails (a store hiccup)."""

    def __init__(self, kv: Engine) -> None:
        self.kv = kv
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def watch(self, key: bytes, last: bytes | None) -> bytes | None:
        if not self.failed:
            self.failed += 1
            raise OSError("store hiccup")
        return await self.kv.watch(key, last)


async def test_a_failed_watch_is_logged_and_the_registry_keeps_going(
    engines: tuple[Engine, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    flaky = FlakyWatch(engines[0])
    a = Registry(flaky, "a")
    b = Registry(engines[1], "b")
    try:
        assert await a.ready(2.0)
        await until(lambda: flaky.failed == 1)
        assert await b.ready(2.0)
        await until(lambda: a.others and "b" in a.peers)
        assert "the instance registry failed; retrying" in caplog.text
    finally:
        await a.close()
        await b.close()


class DeadStore:
    """A real engine whose registry transactions fail (a store that is down for it)."""

    def __init__(self, kv: Engine) -> None:
        self.kv = kv

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kv, name)

    async def transact(self, fn: Any) -> Any:
        raise OSError("store down")


async def test_quotas_wait_for_an_unreadable_registry_once_then_admit_on_local_counts(
    engines: tuple[Engine, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(DeadStore(engines[0]), "a")
    quotas = Quotas(Limits(1000, 5000, 10, 4, max_connections=3))
    quotas.join(registry)
    try:
        started = time.monotonic()
        await quotas.ready(timeout=0.3)
        await quotas.ready(timeout=0.3)  # no second wait
        assert 0.3 <= time.monotonic() - started < 0.55
        assert caplog.text.count("admitting on this instance's counts alone") == 1
        quotas.connect("acme")
    finally:
        await registry.close(timeout=0.2)


async def test_an_entry_long_dead_is_cleared_by_a_live_instance(
    engines: tuple[Engine, Engine],
) -> None:
    """An instance killed without leaving keeps its entry; instance names are new at
    every start, so such entries would pile up, read at every heartbeat. A live instance
    clears one past FORGET_MS; a merely late one (past the timeout only) stays."""
    from server.registry import FORGET_MS

    kv = engines[0]
    now = int(time.time() * 1000)
    entries = {"long-dead": now - FORGET_MS - 60_000, "late": now - INSTANCE_TIMEOUT_MS - 1}

    def killed(tr: Transaction) -> None:  # entries of instances that never left
        for name, ms in entries.items():
            tr.set(keys.instance(name), msgpack.packb({"ms": ms, "conns": {"acme": 40}}))

    await kv.transact(killed)
    live = Registry(kv, "live")
    try:
        assert await live.ready(2.0)
        assert live.peers == {}
        assert await stored(kv, "long-dead") is None
        assert await stored(kv, "late") is not None
    finally:
        await live.close()
