"""Time-travel benchmark: restoring a project in the past against at head; blame at scale.

Run ``python -m bench.replay`` (full sizes) or ``python -m bench.replay --quick``. Prints
a table, then ONE JSON line. Everything runs on real SQLite files in a temporary folder.

- **restore**: a project of 1,000 documents x 1,000 updates (``--quick``: 100 x 300),
  written the way a server writes it: rounds in which every document gets 10 one-key
  updates, one ``History.append`` per round, then the snapshots the group-commit writer
  would take (``snapshot_if_due``, the server's defaults). ``weft restore --store``'s
  code path (cut, every document replayed, files and manifest written to a fresh folder)
  runs at random times and at head, interleaved; ``restore_ratio`` is the median at a
  random time over the median at head (goal <= 1.5: the cost follows the snapshot
  interval, not how far back).
- **blame**: a 10,000-line file with 100,000 updates (``--quick``: 2,000 x 10,000) from 4
  devices: lines typed first, then typing sessions (keys and backspaces) at random
  places. ``tt.blame`` at head, from the store (goal <= 1 s), next to the peer measured
  in the same run: every update applied in order to a ``pycrdt.Doc`` whose text observer
  keeps the update of every character (the obvious way; its answer must be the same).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from bench import git_sha
from client.timetravel_cli import Folder, StoreBackend
from crdt import timetravel as tt
from crdt.history import Append, History
from crdt.kv import open_engine

TENANT, PROJECT = "bench", "replay"


@dataclass(frozen=True)
class Sizes:
    docs: int
    updates_per_doc: int
    restores: int  # timed restores at random times (and as many at head)
    lines: int
    blame_updates: int
    blames: int


FULL = Sizes(1_000, 1_000, 5, 10_000, 100_000, 3)
QUICK = Sizes(100, 300, 3, 2_000, 10_000, 3)
PER_ROUND = 10  # updates per document per round


class Typist:
    """A device typing into one document: one update per key."""

    def __init__(self, client_id: int) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text = self.doc.get("content", type=Text)
        self.captured: list[bytes] = []
        self.doc.observe(lambda event: self.captured.append(event.update))

    def key(self, at: int, s: str) -> bytes:
        self.text.insert(at, s)
        return self.captured.pop()

    def backspace(self, at: int) -> bytes:
        del self.text[at - 1 : at]
        return self.captured.pop()


# --- restore ---------------------------------------------------------------------------


async def build_project(path: Path, sizes: Sizes) -> tuple[int, int, int]:
    """The project; returns (first ms, last ms, updates)."""
    rng = random.Random(3)
    async with open_engine(f"sqlite:///{path}?synchronous=NORMAL") as kv:
        history = History(kv)
        await history.init()
        refs = [
            await history.doc(TENANT, PROJECT, f"src/m{n // 100}/file{n}.txt", create=True)
            for n in range(sizes.docs)
        ]
        typists = [Typist(n + 1) for n in range(sizes.docs)]
        count = 0
        for _ in range(sizes.updates_per_doc // PER_ROUND):
            batch = []
            for ref, typist in zip(refs, typists, strict=True):
                for _ in range(PER_ROUND):
                    key = "\n" if rng.random() < 0.04 else rng.choice("etaoin shrdlu")
                    batch.append(Append(ref, typist.key(len(typist.text), key), "dev", "laptop"))
            await history.append(batch)
            count += len(batch)
        for ref in refs:  # what the writer schedules once a document is due
            await history.snapshot_if_due(ref)
        first = await history.updates(refs[0], limit=1)
        last = await history.updates(refs[-1], limit=1, reverse=True)
        return first[0].ms, last[0].ms, count


async def restore_once(history: History, at: tt.Version, out: Path) -> tuple[float, int]:
    """``weft restore --store``'s path: seconds, files written."""
    backend = StoreBackend(history, TENANT, PROJECT)
    started = time.perf_counter()
    files = 0
    folder = Folder(out)
    async for kind, name, data, _vs in backend.restore(at, lambda n: None):
        folder.write(name, data)
        files += kind == "file"
    return time.perf_counter() - started, files


async def bench_restore(path: Path, workdir: Path, sizes: Sizes) -> dict[str, Any]:
    started = time.perf_counter()
    first_ms, last_ms, count = await build_project(path, sizes)
    built = time.perf_counter() - started
    rng = random.Random(5)
    head: list[float] = []
    past: list[float] = []
    files: dict[str, int] = {}
    async with open_engine(f"sqlite:///{path}") as kv:
        history = History(kv)
        await history.init()
        await restore_once(history, tt.HEAD_VERSION, workdir / "warm")  # page cache
        for n in range(sizes.restores):
            when = rng.randint(first_ms, last_ms)
            at = tt.Version(ms=when, label=tt.iso_time(when))
            seconds, files["past"] = await restore_once(history, at, workdir / f"past{n}")
            past.append(seconds)
            seconds, files["head"] = await restore_once(
                history, tt.HEAD_VERSION, workdir / f"head{n}"
            )
            head.append(seconds)
    return {
        "docs": sizes.docs,
        "updates": count,
        "build_s": built,
        "head_s": head,
        "past_s": past,
        "files": files,
        "ratio": statistics.median(past) / statistics.median(head),
    }


# --- blame -----------------------------------------------------------------------------


def blame_history(lines: int, n: int, seed: int = 9) -> list[tuple[int, bytes]]:
    """(device, update): ``lines`` lines typed, then sessions of keys and backspaces."""
    rng = random.Random(seed)
    devices = [Typist(1000 + d) for d in range(4)]
    out: list[tuple[int, bytes]] = []
    current = 0
    pos = 0
    for i in range(n):
        if i % 25 == 0:  # another device takes over: it first receives what it missed
            nxt = rng.randrange(len(devices))
            if nxt != current:
                ahead = devices[current].doc.get_update(devices[nxt].doc.get_state())
                devices[nxt].doc.apply_update(ahead)
                devices[nxt].captured.clear()
                current = nxt
            text = str(devices[current].text)
            if i >= lines:
                starts = [0, *[k + 1 for k, c in enumerate(text) if c == "\n"][:-1]]
                line = rng.choice(starts)
                end = text.index("\n", line) if "\n" in text[line:] else len(text)
                pos = rng.randint(line, end)
        typist = devices[current]
        if i < lines:
            words = " ".join(rng.choice(("let", "x", "=", "weft", "time", "0;")) for _ in range(5))
            out.append((current, typist.key(len(typist.text), f"{i}: {words}\n")))
        elif rng.random() < 0.8 or pos == 0 or str(typist.text)[pos - 1] == "\n":
            out.append((current, typist.key(pos, rng.choice("abcdefgh ()"))))
            pos += 1
        else:
            out.append((current, typist.backspace(pos)))
            pos -= 1
    return out


def naive_blame(updates: list[bytes]) -> tuple[list[int], str]:
    """The peer: apply every update to a Doc, keep each character's update from the text
    events' deltas; per line (newline included) the newest. ASCII text only."""
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    owners: list[int] = []
    current = 0

    def on_change(event: Any) -> None:
        pos = 0
        for op in event.delta:
            if "retain" in op:
                pos += op["retain"]
            elif "insert" in op:
                owners[pos:pos] = [current] * len(op["insert"])
                pos += len(op["insert"])
            elif "delete" in op:
                del owners[pos : pos + op["delete"]]

    sub = text.observe(on_change)
    for current, update in enumerate(updates):  # noqa: B007 (on_change reads it)
        doc.apply_update(update)
    sub.drop()
    content = str(text)
    best: list[int] = []
    line = -1
    for ch, owner in zip(content, owners, strict=True):
        line = max(line, owner)
        if ch == "\n":
            best.append(line)
            line = -1
    if content and not content.endswith("\n"):
        best.append(line)
    return best, content


async def bench_blame(path: Path, sizes: Sizes) -> dict[str, Any]:
    started = time.perf_counter()
    made = blame_history(sizes.lines, sizes.blame_updates)
    generated = time.perf_counter() - started
    async with open_engine(f"sqlite:///{path}?synchronous=NORMAL") as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc(TENANT, PROJECT, "big.txt", create=True)
        appended = await history.append([Append(ref, u, f"user{d}", f"device{d}") for d, u in made])
        await history.snapshot_if_due(ref)
    stamps = [a.versionstamp for a in appended]
    runs: list[float] = []
    async with open_engine(f"sqlite:///{path}") as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc(TENANT, PROJECT, "big.txt")
        for _ in range(sizes.blames):
            t = time.perf_counter()
            result = await tt.blame(history, ref)
            runs.append(time.perf_counter() - t)
    t = time.perf_counter()
    peer, content = naive_blame([u for _, u in made])
    peer_s = time.perf_counter() - t
    ours = [line.author.versionstamp if line.author else None for line in result.lines]
    same = content == result.text and ours == [stamps[r] if r >= 0 else None for r in peer]
    return {
        "lines": len(result.lines),
        "updates": len(made),
        "chars": len(result.text),
        "generate_s": generated,
        "weft_s": runs,
        "peer_s": peer_s,
        "same_answer": same,
        "authors": len({line.author.user for line in result.lines if line.author}),
    }


# --- report ----------------------------------------------------------------------------


def report(
    restore: dict[str, Any], blame: dict[str, Any], quick: bool, load: float
) -> dict[str, Any]:
    head, past = statistics.median(restore["head_s"]), statistics.median(restore["past_s"])
    weft = statistics.median(blame["weft_s"])
    print(f"weft time-travel benchmark ({'quick' if quick else 'full'}), SQLite; load {load:.2f}")
    print(
        f"restore: {restore['docs']:,} docs x {restore['updates'] // restore['docs']:,} updates "
        f"({restore['updates']:,}; built in {restore['build_s']:.0f} s)"
    )
    print(f"  {'at':<12} {'median s':>9} {'runs':>30} {'files':>6}")
    for name, key in (("head", "head_s"), ("random time", "past_s")):
        runs = " ".join(f"{s:.2f}" for s in restore[key])
        files = restore["files"]["head" if key == "head_s" else "past"]
        print(f"  {name:<12} {statistics.median(restore[key]):>9.3f} {runs:>30} {files:>6}")
    print(f"  ratio random/head {restore['ratio']:.2f} (goal <= 1.5)")
    print(
        f"blame: {blame['lines']:,} lines, {blame['chars']:,} characters, "
        f"{blame['updates']:,} updates from {blame['authors']} users"
    )
    print(
        f"  weft blame    median {weft:.3f} s  runs {' '.join(f'{s:.3f}' for s in blame['weft_s'])}"
    )
    print(
        f"  peer (observe every update) {blame['peer_s']:.3f} s; same answer: {blame['same_answer']}"
    )
    print(f"  ratio weft/peer {weft / blame['peer_s']:.3f} (goal: weft <= 1 s)")
    return {
        "bench": "replay",
        "quick": quick,
        "git": git_sha(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_at_start": round(load, 2),
        },
        "restore_docs": restore["docs"],
        "restore_updates": restore["updates"],
        "restore_head_s": round(head, 4),
        "restore_past_s": round(past, 4),
        "restore_ratio": round(restore["ratio"], 3),
        "blame_lines": blame["lines"],
        "blame_updates": blame["updates"],
        "blame_s": round(weft, 4),
        "blame_peer_s": round(blame["peer_s"], 4),
        "blame_ratio_vs_peer": round(weft / blame["peer_s"], 4),
        "blame_same_answer_as_peer": blame["same_answer"],
        "goals": {"restore_ratio_le_1_5": restore["ratio"] <= 1.5, "blame_le_1s": weft <= 1.0},
    }


async def main(quick: bool) -> None:
    sizes = QUICK if quick else FULL
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="weft-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        workdir = Path(tmp)
        restore = await bench_restore(workdir / "project.db", workdir, sizes)
        blame = await bench_blame(workdir / "blame.db", sizes)
    print(json.dumps(report(restore, blame, quick, load)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.replay", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    asyncio.run(main(parser.parse_args().quick))
