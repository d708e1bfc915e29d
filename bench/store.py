"""Store benchmark: append throughput against raw SQLite, replay cost, replay memory.

Run ``python -m bench.store`` (full sizes) or ``python -m bench.store --quick``. Prints a
table, then ONE JSON line. Everything runs on real SQLite files (WAL, synchronous=FULL)
in a temporary directory on the same disk.

- **append**: ``History.append`` with batches of 1, 10, 100, 1000 one-character updates
  (one typing device, one document), each batch awaited before the next, next to raw
  ``sqlite3`` inserting the same update bytes, one row per update, in the same batches
  (one transaction per batch, WAL, synchronous=FULL), in the same run.
  ``append_ratio_vs_raw_sqlite`` is weft's updates/s over raw rows/s at batch 100
  (goal >= 0.5).
- **replay**: a document of 100,000 updates (``--quick``: 10,000) with a snapshot every
  1,000; state at random versions against state at head (``replay_flatness``, goal <= 2,
  and <= 50 ms at a random version), measured in a fresh child process, whose peak RSS
  must stay within 3x the document's encoded size + 50 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from bench import git_sha
from crdt.history import Append, DocRef, History
from crdt.kv import open_engine
from crdt.kv import sqlite as sqlite_engine
from crdt.versionstamp import Versionstamp

BATCHES = (1, 10, 100, 1000)


@dataclass(frozen=True)
class Sizes:
    append: dict[int, int]  # updates appended per batch size
    doc: int  # updates in the replayed document
    reps: int  # timed replays at head and at random versions
    rounds: int  # interleaved append runs per batch size (medians are reported)


FULL = Sizes({1: 200, 10: 2_000, 100: 10_000, 1000: 20_000}, 100_000, 40, 5)
QUICK = Sizes({1: 50, 10: 300, 100: 2_000, 1000: 4_000}, 10_000, 15, 3)
SNAPSHOT_EVERY = 1000
TENANT, PROJECT = "bench", "store"


def typing(n: int, seed: int = 1) -> list[bytes]:
    """``n`` updates of one device typing one character each (an occasional newline)."""
    doc: Doc[Any] = Doc(client_id=seed)
    text = doc.get("content", type=Text)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        before = doc.get_state()
        text.insert(len(text), "\n" if rng.random() < 0.03 else rng.choice("etaoin shrdlu"))
        out.append(doc.get_update(before))
    return out


# --- append --------------------------------------------------------------------------


async def weft_append(path: Path, updates: list[bytes], batch: int) -> float:
    """Seconds for ``History.append`` to take ``updates`` in batches of ``batch``. Its
    arguments (the ``Append`` lists) are made before the clock starts, as raw rows' are."""
    async with open_engine(f"sqlite:///{path}?synchronous=FULL") as kv:
        history = History(kv)
        await history.init()
        ref = await history.doc(TENANT, PROJECT, f"append-{batch}.md", create=True)
        batches = [
            [Append(ref, u, user="bench") for u in updates[i : i + batch]]
            for i in range(0, len(updates), batch)
        ]
        started = time.perf_counter()
        for items in batches:
            await history.append(items)
        return time.perf_counter() - started


async def weft_rows(
    path: Path, updates: list[bytes], batch: int
) -> list[list[tuple[bytes, bytes]]]:
    """The KV rows each append transaction writes (an untimed, instrumented run)."""
    captured: list[list[tuple[bytes, bytes]]] = []
    flush = sqlite_engine._Writer.flush

    def recording_flush(self: sqlite_engine._Writer) -> None:
        captured.append(list(self._pending.items()))
        flush(self)

    sqlite_engine._Writer.flush = recording_flush  # type: ignore[method-assign]
    try:
        async with open_engine(f"sqlite:///{path}?synchronous=OFF") as kv:
            history = History(kv)
            await history.init()
            ref = await history.doc(TENANT, PROJECT, f"append-{batch}.md", create=True)
            captured.clear()
            for i in range(0, len(updates), batch):
                await history.append([Append(ref, u, user="bench") for u in updates[i : i + batch]])
    finally:
        sqlite_engine._Writer.flush = flush  # type: ignore[method-assign]
    return captured


def _raw(path: Path, schema: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(schema)
    return conn


def raw_rows(path: Path, batches: list[list[tuple[bytes, bytes]]]) -> float:
    """Seconds for plain sqlite3 to write weft's own KV rows, one transaction per batch,
    into the same table shape (BLOB keys, WITHOUT ROWID)."""
    conn = _raw(
        path, "CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID"
    )
    started = time.perf_counter()
    for rows in batches:
        conn.execute("BEGIN")
        conn.executemany("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def raw_log(path: Path, updates: list[bytes], batch: int) -> float:
    """Seconds for plain sqlite3 to insert just the update bytes, one row each."""
    conn = _raw(path, "CREATE TABLE log (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    started = time.perf_counter()
    for i in range(0, len(updates), batch):
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO log (data) VALUES (?)", [(u,) for u in updates[i : i + batch]]
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


async def bench_append(
    workdir: Path, sizes: dict[int, int], rounds: int
) -> dict[int, dict[str, float]]:
    """Per batch size, ``rounds`` interleaved runs of weft and both peers (the order
    rotates each round, each run on a fresh file); medians, and the median of the
    per-round ratios, so a busy moment on this shared machine hits both sides."""
    out = {}
    for batch in BATCHES:
        updates = typing(sizes[batch], seed=batch)
        rows = await weft_rows(workdir / f"capture-{batch}.db", updates, batch)
        runs: dict[str, list[float]] = {"weft": [], "rows": [], "log": []}
        for r in range(rounds):
            order = ["weft", "rows", "log"]
            for name in order[r % 3 :] + order[: r % 3]:
                path = workdir / f"{name}-{batch}-{r}.db"
                if name == "weft":
                    runs[name].append(await weft_append(path, updates, batch))
                elif name == "rows":
                    runs[name].append(raw_rows(path, rows))
                else:
                    runs[name].append(raw_log(path, updates, batch))
        n = len(updates)
        out[batch] = {
            "updates": n,
            "rows": sum(len(r) for r in rows),
            "weft_per_s": n / statistics.median(runs["weft"]),
            "raw_rows_per_s": n / statistics.median(runs["rows"]),
            "raw_log_per_s": n / statistics.median(runs["log"]),
            "ratio": _median_ratio(runs["rows"], runs["weft"]),
            "ratio_vs_log": _median_ratio(runs["log"], runs["weft"]),
        }
    return out


def _median_ratio(peer: list[float], weft: list[float]) -> float:
    """Median over rounds of peer seconds / weft seconds (weft's share of peer speed)."""
    return statistics.median(p / w for p, w in zip(peer, weft, strict=True))


# --- replay --------------------------------------------------------------------------


async def build_doc(path: Path, n: int) -> tuple[list[str], int]:
    """A doc of ``n`` updates, snapshot every 1,000; its versionstamps (hex), log bytes."""
    updates = typing(n, seed=7)
    stamps: list[str] = []
    async with open_engine(f"sqlite:///{path}?synchronous=NORMAL") as kv:
        history = History(kv, snapshot_every=SNAPSHOT_EVERY)
        await history.init()
        ref = await history.doc(TENANT, PROJECT, "replay.md", create=True)
        for i in range(0, n, SNAPSHOT_EVERY):
            done = await history.append([Append(ref, u) for u in updates[i : i + SNAPSHOT_EVERY]])
            stamps += [d.versionstamp.hex() for d in done]
            await history.snapshot_if_due(ref)
    return stamps, sum(len(u) for u in updates)


async def replay_child(path: str, versions: list[str]) -> dict[str, Any]:
    """In a fresh process: time replays at head and at the given versions; peak RSS."""
    rss_before = _rss_mb()
    stamps = [Versionstamp.from_hex(v) for v in versions]
    async with open_engine(f"sqlite:///{path}") as kv:
        history = History(kv)
        ref: DocRef = await history.doc(TENANT, PROJECT, "replay.md")
        for vs in stamps[:3]:  # warm the page cache and the code paths
            await history.replay(ref)
            await history.replay(ref, vs)
        head, at_random = [], []
        for vs in stamps[3:]:
            started = time.perf_counter()
            state = (await history.replay(ref)).state()
            head.append(time.perf_counter() - started)
            started = time.perf_counter()
            replayed = await history.replay(ref, vs)
            replayed.state()  # the same work as at head: replay, then encode the state
            at_random.append(time.perf_counter() - started)
            assert replayed.versionstamp == vs
    return {
        "head_ms": [t * 1000 for t in head],
        "random_ms": [t * 1000 for t in at_random],
        "encoded_bytes": len(state),
        "rss_before_mb": rss_before,
        "peak_rss_mb": _rss_mb("VmHWM"),
    }


def _rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set (``VmHWM``: its peak). Not ``ru_maxrss``: that one
    survives ``exec`` and would report the parent's size at ``fork``."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(path: Path, stamps: list[str], reps: int) -> dict[str, Any]:
    """``replay_child`` in a fresh interpreter, at ``reps`` (+3 warm-up) random versions."""
    versions = random.Random(11).choices(stamps, k=reps + 3)
    args = {"path": str(path), "versions": versions}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(args, f)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.store", "--replay-child", f.name],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(f.name)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- report --------------------------------------------------------------------------


def _p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def report(
    append: dict[int, dict[str, float]], replay: dict[str, Any], n: int, log_bytes: int, quick: bool
) -> dict[str, Any]:
    head_ms = statistics.median(replay["head_ms"])
    random_ms = statistics.median(replay["random_ms"])
    flatness = random_ms / head_ms
    budget = 3 * replay["encoded_bytes"] / 2**20 + 50
    ratio = append[100]["ratio"]
    print(f"weft store benchmark ({'quick' if quick else 'full'}), SQLite, synchronous=FULL")
    print("append, updates/s (raw rows: plain sqlite3 writing weft's KV rows; raw log: only")
    print("the update bytes, one row each); same batches, same synchronous=FULL")
    print(
        f"{'batch':>6} {'updates':>8} {'kv rows':>8} {'weft':>9} {'raw rows':>9} {'ratio':>6}"
        f" {'raw log':>9} {'ratio':>6}"
    )
    for batch, row in append.items():
        print(
            f"{batch:>6} {row['updates']:>8.0f} {row['rows']:>8.0f} {row['weft_per_s']:>9,.0f} "
            f"{row['raw_rows_per_s']:>9,.0f} {row['ratio']:>6.2f} "
            f"{row['raw_log_per_s']:>9,.0f} {row['ratio_vs_log']:>6.2f}"
        )
    print(f"replay, {n:,} updates ({log_bytes:,} bytes), snapshot every {SNAPSHOT_EVERY}:")
    print(f"  head        median {head_ms:7.2f} ms  p95 {_p95(replay['head_ms']):7.2f} ms")
    print(f"  random V    median {random_ms:7.2f} ms  p95 {_p95(replay['random_ms']):7.2f} ms")
    print(f"  flatness    {flatness:.2f} (goal <= 2; random <= 50 ms)")
    print(
        f"  peak RSS    {replay['peak_rss_mb']:.1f} MB (before replay "
        f"{replay['rss_before_mb']:.1f} MB; budget 3 x {replay['encoded_bytes']:,} B "
        f"+ 50 MB = {budget:.1f} MB)"
    )
    return {
        "bench": "store",
        "quick": quick,
        "git": git_sha(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "append": {str(b): {k: round(v, 3) for k, v in row.items()} for b, row in append.items()},
        "append_ratio_vs_raw_sqlite": round(ratio, 3),
        "append_ratio_vs_raw_log": round(append[100]["ratio_vs_log"], 3),
        "replay_updates": n,
        "replay_head_ms": round(head_ms, 3),
        "replay_random_ms": round(random_ms, 3),
        "replay_random_p95_ms": round(_p95(replay["random_ms"]), 3),
        "replay_flatness": round(flatness, 3),
        "encoded_bytes": replay["encoded_bytes"],
        "peak_rss_mb": round(replay["peak_rss_mb"], 1),
        "rss_budget_mb": round(budget, 1),
        "goals": {
            "append_ratio_ge_0_5": ratio >= 0.5,
            "flatness_le_2": flatness <= 2,
            "random_le_50ms": random_ms <= 50,
            "rss_within_budget": replay["peak_rss_mb"] <= budget,
        },
    }


async def main(quick: bool) -> None:
    sizes = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="weft-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        workdir = Path(tmp)
        append = await bench_append(workdir, sizes.append, sizes.rounds)
        stamps, log_bytes = await build_doc(workdir / "replay.db", sizes.doc)
        replay = await asyncio.to_thread(run_child, workdir / "replay.db", stamps, sizes.reps)
    print(json.dumps(report(append, replay, sizes.doc, log_bytes, quick)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        prog="python -m bench.store", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--replay-child", metavar="ARGS_JSON", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.replay_child:
        with open(options.replay_child) as f:
            a = json.load(f)
        print(json.dumps(asyncio.run(replay_child(a["path"], a["versions"]))))
    else:
        asyncio.run(main(options.quick))
