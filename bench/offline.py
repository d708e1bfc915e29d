"""Offline-first client benchmark: offline merge and first sync, with peers from the same run.

    python -m bench.offline [--quick] [--devices 3] [--edits 1000] [--files 1000]

1. Offline merge. Three folders hold the same synced file (200 lines). The server stops;
   each device makes ``--edits`` separate offline edits to it (inserts of unique tokens
   at random places and one-character deletions of the base text; each edit is one
   update in its local history and outbox). Three ``weft sync`` processes are started
   while the server is down; then the server restarts on the same port and store, and we
   time from the moment it answers ``/healthz`` until the three folders are
   byte-identical and hold every token (goal <= 2 s). That includes noticing the server
   is back (``--max-backoff 0.1``), sending the outboxes, the server's conflict checks
   and writing the files. Peer: the official y-websocket client (Node, 3 providers, the
   same edit scripts made while disconnected, in memory, nothing durable), from
   ``connect()`` to three identical texts, against the same server.
2. First sync. A folder of ``--files`` small files is synced into an empty project with
   ``weft sync --once``: files/s as the command reports it (from start of sync to done)
   and over the whole process's wall time (goal >= 200 files/s). Peer: the bare
   protocol, y-websocket frames from Python (96 connections at a time: connect, sync,
   send the file's update, wait for the server's ack, close): no local history, no
   folder, the ceiling the client works under.

The server runs on SQLite, synchronous=FULL, its per-tenant rate quota lifted (the peers
have none). Output: a table, then one JSON line with the figures, the ratios to the
peers, the goals, the git SHA and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from pycrdt import Doc, Text

from bench import REPO, git_sha
from client.testing import folder_files, start_sync, sync_once
from client.workspace import Workspace
from crdt import codec
from crdt.codec import Ack, SyncStep1, SyncStep2, SyncUpdate
from server.testing import ServerProcess, start_server

NODE_MODULES = REPO / "tests" / "interop" / "node_modules"
TENANT = "bench"
SERVER_ENV = {"WEFT_UPDATES_PER_SECOND": "1000000", "WEFT_UPDATES_BURST": "1000000"}
BASE = "".join(f"line {i:03d} of the shared notes, as everybody had it\n" for i in range(200))
FILE = "notes.txt"
Edit = tuple[str, float, str]  # ("ins", fraction, token) or ("del", fraction, "")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def edit_script(device: int, count: int, seed: int) -> list[Edit]:
    rng = random.Random(seed * 1000 + device)
    out: list[Edit] = []
    for n in range(count):
        if rng.random() < 0.8:
            out.append(("ins", rng.random(), f"<{'ABCDEFGH'[device]}{n}>"))
        else:
            out.append(("del", rng.random(), ""))
    return out


def apply_edit(text: str, edit: Edit) -> str:
    """The same rule as the Node peer: insert at the start of the line after
    floor(f * len) (so no token splits another); delete the first lowercase letter at or
    after it (never in a token: tokens have none)."""
    kind, fraction, token = edit
    pos = int(fraction * len(text))
    if kind == "ins":
        pos = text.find("\n", pos) + 1
        return text[:pos] + token + text[pos:]
    for i in list(range(pos, len(text))) + list(range(pos)):
        if "a" <= text[i] <= "z":
            return text[:i] + text[i + 1 :]
    return text


def tokens(scripts: list[list[Edit]]) -> list[str]:
    return [token for script in scripts for kind, _, token in script if kind == "ins"]


# --- 1. offline merge ----------------------------------------------------------------------


async def offline_edits(
    folder: Path, server: ServerProcess, project: str, script: list[Edit]
) -> None:
    """Make the script's edits with the server down, one recorded update each."""
    ws = Workspace(folder, server.ws_url, TENANT, project, max_backoff=0.2)
    async with ws:
        path = folder / FILE
        for edit in script:
            path.write_text(apply_edit(path.read_text(), edit))
            ws.changed({FILE})
        await ws.device.recorded()
        assert ws.device.pending() == len(script), ws.device.pending()


def bench_merge(workdir: Path, devices: int, edits: int, seed: int) -> dict[str, Any]:
    server = start_server(workdir / "merge-server", env=SERVER_ENV)
    project = "merge"
    folders = [workdir / f"device{i}" for i in range(devices)]
    for folder in folders:
        folder.mkdir()
    (folders[0] / FILE).write_text(BASE)
    for folder in folders:
        result = sync_once(folder, server.ws_url, TENANT, project)
        if result.returncode != 0:
            raise RuntimeError(result.stdout)
    server.terminate()
    scripts = [edit_script(i, edits, seed) for i in range(devices)]
    started = time.perf_counter()
    for folder, script in zip(folders, scripts, strict=True):
        asyncio.run(offline_edits(folder, server, project, script))
    log(
        f"merge: {devices} x {edits} offline edits recorded in {time.perf_counter() - started:.1f} s"
    )
    args = ["--max-backoff", "0.1", "--poll", "0.2"]
    procs = [start_sync(f, server.ws_url, TENANT, project, args=args) for f in folders]
    try:
        for proc in procs:
            proc.wait_for("does not answer", timeout=30)
        wanted = tokens(scripts)
        restarted = start_server(
            workdir / "merge-server2", store=server.store, port=server.port, env=SERVER_ENV
        )
        t0 = time.perf_counter()
        deadline = t0 + float(os.environ.get("BENCH_DEADLINE", "120"))
        while True:
            contents = [folder_files(f).get(FILE, b"") for f in folders]
            if all(c == contents[0] for c in contents):
                text = contents[0].decode()
                if all(token in text for token in wanted):
                    break
            if time.perf_counter() > deadline:
                outputs = "\n".join(p.output() for p in procs)
                raise RuntimeError(f"folders did not converge in 120 s:\n{outputs}")
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        conflicts = _get_json(f"{restarted.url}/api/v1/{TENANT}/{project}/conflicts")
    finally:
        for proc in procs:
            proc.terminate()
    peer = node_peer(restarted, scripts) if restarted else None
    restarted.terminate()
    return {
        "devices": devices,
        "edits_per_device": edits,
        "reconnect_to_identical_s": round(seconds, 3),
        "bytes": len(contents[0]),
        "conflict_records": len(conflicts.get("conflicts", [])),
        "peer_y_websocket_s": peer,
        "ratio_to_peer": round(seconds / peer, 2) if peer else None,
    }


def _get_json(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


NODE_PEER = r"""
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const { url, room, base, scripts } = JSON.parse(process.argv[2])
const wait = (ok, ms = 60000) => new Promise((resolve, reject) => {
  const start = Date.now()
  const check = () => ok() ? resolve() : Date.now() - start > ms ? reject(new Error('timeout')) : setTimeout(check, 1)
  check()
})
const peers = scripts.map(() => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true, maxBackoffTime: 100 })
  return { doc, provider, text: doc.getText('content') }
})
await wait(() => peers.every(p => p.provider.synced))
peers[0].text.insert(0, base)
await wait(() => peers.every(p => p.text.toString() === base))
for (const p of peers) p.provider.disconnect()
scripts.forEach((script, i) => {
  const text = peers[i].text
  for (const [kind, f, token] of script) {
    const s = text.toString()
    const pos = Math.floor(f * s.length)
    if (kind === 'ins') { text.insert(s.indexOf('\n', pos) + 1, token); continue }
    const order = [...Array(s.length - pos).keys()].map(k => k + pos).concat([...Array(pos).keys()])
    const at = order.find(k => s[k] >= 'a' && s[k] <= 'z')
    if (at !== undefined) text.delete(at, 1)
  }
})
const wanted = scripts.flat().filter(e => e[0] === 'ins').map(e => e[2])
const t0 = performance.now()
for (const p of peers) p.provider.connect()
await wait(() => {
  const first = peers[0].text.toString()
  return peers.every(p => p.text.toString() === first) && wanted.every(t => first.includes(t))
})
const ms = performance.now() - t0
for (const p of peers) p.provider.destroy()
process.stdout.write(JSON.stringify({ ms }) + '\n')
process.exit(0)
"""


def node_peer(server: ServerProcess, scripts: list[list[Edit]]) -> float | None:
    """The y-websocket client's time from reconnect to convergence (None if no Node)."""
    node = shutil.which("node")
    if node is None or not NODE_MODULES.is_dir():
        log("peer: node or tests/interop/node_modules missing; skipped")
        return None
    with tempfile.TemporaryDirectory(prefix="weft-peer-") as tmp:
        os.symlink(NODE_MODULES, Path(tmp) / "node_modules")
        script = Path(tmp) / "offline-peer.mjs"
        script.write_text(NODE_PEER)
        options = {
            "url": server.ws_url + f"/{TENANT}/peer",
            "room": "notes.txt",
            "base": BASE,
            "scripts": scripts,
        }
        done = subprocess.run(
            [node, str(script), json.dumps(options)], capture_output=True, text=True, timeout=180
        )
    if done.returncode != 0:
        log(f"peer failed: {done.stderr[-2000:]}")
        return None
    ms = float(json.loads(done.stdout.strip().splitlines()[-1])["ms"])
    return round(ms / 1000, 3)


# --- 2. first sync -------------------------------------------------------------------------


def bench_first_sync(workdir: Path, files: int) -> dict[str, Any]:
    server = start_server(workdir / "files-server", env=SERVER_ENV)
    try:
        folder = workdir / "files"
        folder.mkdir()
        for i in range(files):
            (folder / f"dir{i % 10}").mkdir(exist_ok=True)
            (folder / f"dir{i % 10}" / f"file{i:04d}.txt").write_text(
                f"# file {i}\n" + "some small text\n" * 5
            )
        started = time.perf_counter()
        result = sync_once(folder, server.ws_url, TENANT, "files", timeout=600)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(result.stdout)
        match = re.search(r"in sync: (\d+) files in ([\d.]+) s", result.stdout)
        reported = float(match.group(2)) if match else wall
        peer = asyncio.run(raw_upload(server, files))
    finally:
        server.terminate()
    per_s = files / reported
    return {
        "files": files,
        "files_per_s": round(per_s, 1),
        "wall_s": round(wall, 2),
        "files_per_s_wall": round(files / wall, 1),
        "peer_raw_protocol_files_per_s": round(peer, 1),
        "ratio_to_peer": round(per_s / peer, 2),
    }


async def raw_upload(server: ServerProcess, files: int) -> float:
    """Upload ``files`` documents over the bare protocol, 96 at a time; files/s."""
    slots = asyncio.Semaphore(96)  # as many at a time as weft sync connects

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        async with slots:
            url = f"{server.ws_url}/{TENANT}/raw/dir{i % 10}/file{i:04d}.txt"
            async with session.ws_connect(url, params={"weft": "1"}, max_msg_size=0) as ws:
                doc: Doc[Any] = Doc()
                doc.get("content", type=Text).insert(0, f"# file {i}\n" + "some small text\n" * 5)
                await ws.send_bytes(codec.encode(SyncStep1(b"\x00")))
                update = doc.get_update()
                synced = acked = False
                async for msg in ws:
                    message = codec.decode(msg.data)
                    if isinstance(message, SyncStep2) and not synced:
                        synced = True
                        await ws.send_bytes(codec.encode(SyncUpdate(update)))
                    elif isinstance(message, Ack):
                        acked = True
                        break
                if not acked:
                    raise RuntimeError("no ack")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(one(session, i) for i in range(files)))
        return files / (time.perf_counter() - started)


# --- report --------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.offline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="100 edits, 100 files")
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--edits", type=int, default=None)
    parser.add_argument("--files", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    edits = args.edits or (100 if args.quick else 1000)
    files = args.files or (100 if args.quick else 1000)
    with tempfile.TemporaryDirectory(prefix="weft-bench-offline-") as tmp:
        workdir = Path(tmp)
        merge = bench_merge(workdir, args.devices, edits, args.seed)
        first = bench_first_sync(workdir, files)
    peer = merge["peer_y_websocket_s"]
    print(f"weft offline-first client benchmark ({'quick' if args.quick else 'full'})")
    print(f"{'measure':<44} {'weft':>10} {'peer':>10} {'ratio':>7}")
    print(
        f"{f'offline merge {args.devices} x {edits} edits, reconnect->same (s)':<44} "
        f"{merge['reconnect_to_identical_s']:>10.3f} {peer if peer else float('nan'):>10.3f} "
        f"{merge['ratio_to_peer'] or float('nan'):>7.2f}"
    )
    print(
        f"{f'first sync of {files} files (files/s)':<44} {first['files_per_s']:>10.1f} "
        f"{first['peer_raw_protocol_files_per_s']:>10.1f} {first['ratio_to_peer']:>7.2f}"
    )
    print(f"{'  same, over the whole process (files/s)':<44} {first['files_per_s_wall']:>10.1f}")
    print("peers: y-websocket (Node) for the merge; bare protocol from Python for the first sync")
    record = {
        "bench": "offline",
        "quick": args.quick,
        "git": git_sha(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "merge": merge,
        "first_sync": first,
        "goals": {
            "merge_le_2s": merge["reconnect_to_identical_s"] <= 2.0,
            "first_sync_ge_200_files_per_s": first["files_per_s"] >= 200,
        },
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
