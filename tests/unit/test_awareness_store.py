"""Awareness entries in the store (server.awareness): an instance that died without
leaving (kill -9) leaves its entry, user presence included; instance names are new at
every start, so a live instance leaving the doc clears entries long dead."""

from __future__ import annotations

import time

from crdt import keys
from crdt.kv import Engine, Transaction
from server.awareness import _write, encode_header, encode_state
from server.registry import FORGET_MS

SPACE = keys.pack(("space-of-a-doc",))


async def test_an_instance_leaving_a_doc_clears_entries_long_dead(
    engines: tuple[Engine, Engine],
) -> None:
    kv = engines[0]
    now = int(time.time() * 1000)

    def crashed(tr: Transaction) -> None:
        for name, ms in (("long-dead", now - FORGET_MS - 1), ("recent", now - 60_000)):
            tr.set(keys.awareness_entry(SPACE, name), encode_header(ms, 1))
            tr.set(keys.awareness_client(SPACE, name, 7), encode_state(3, '{"user":"ada"}'))

    await kv.transact(crashed)
    await kv.transact(lambda tr: _write(tr, SPACE, "live", 1, now, {9: (1, "{}")}))
    await kv.transact(lambda tr: _write(tr, SPACE, "live", 1, now, None))  # it leaves
    left = await kv.read(lambda tr: tr.get_range(*keys.awareness_range(SPACE)))
    assert {keys.unpack_awareness(k, SPACE) for k, _ in left} == {("recent", None), ("recent", 7)}
