"""A second process on the same store, for the contract suite: ``kv_worker.py URL MODE ...``.

Modes (keys are tuple-packed with ``crdt.keys.pack``):

- ``write WID N``: N transactions, each writing ``("cw", WID, i)`` and adding 1 to
  ``("cw-count",)``; prints ``done``.
- ``rmw N``: N read-modify-write increments of ``("rmw",)`` (get, +1, set: correct only
  if conflicting transactions are retried); prints ``done``.
- ``set KEY_HEX VALUE_HEX``: one transaction setting one key; prints ``done``.
- ``stream K``: transactions forever, each writing ``("s", i, j)`` for j < K and
  ``("s-last",) = i``, continuing after the last ``i`` in the store; prints ``i`` (flushed)
  after each commit returns. Meant to be killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys

from crdt import keys
from crdt.kv import Transaction, open_engine
from crdt.kv.base import read_counter

STREAM_VALUE = 4_000


def stream_value(i: int, j: int) -> bytes:
    return f"{i}:{j}:".encode().ljust(STREAM_VALUE, b"x")


async def main(url: str, mode: str, args: list[str]) -> None:
    async with open_engine(url) as kv:
        if mode == "write":
            wid, n = args[0], int(args[1])
            for i in range(n):

                def write(tr: Transaction, i: int = i) -> None:
                    tr.set(keys.pack(("cw", wid, i)), f"{wid}/{i}".encode())
                    tr.add(keys.pack(("cw-count",)), 1)

                await kv.transact(write)
        elif mode == "rmw":
            for _ in range(int(args[0])):

                def increment(tr: Transaction) -> None:
                    key = keys.pack(("rmw",))
                    tr.set(key, (read_counter(tr.get(key)) + 1).to_bytes(8, "little"))

                await kv.transact(increment)
        elif mode == "set":
            key, value = bytes.fromhex(args[0]), bytes.fromhex(args[1])
            await kv.transact(lambda tr: tr.set(key, value))
        elif mode == "stream":
            k = int(args[0])
            last = await kv.read(lambda tr: tr.get(keys.pack(("s-last",))))
            i = -1 if last is None else int(last)
            while True:
                i += 1

                def commit(tr: Transaction, i: int = i) -> None:
                    for j in range(k):
                        tr.set(keys.pack(("s", i, j)), stream_value(i, j))
                    tr.set(keys.pack(("s-last",)), str(i).encode())

                await kv.transact(commit)
                print(i, flush=True)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
        print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
