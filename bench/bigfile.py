"""A big file edited in scattered places: ``weft sync --once`` runs, each its own process.

    python -m bench.bigfile [--lines 50000] [--rounds 3] [--edits 2000] [--repo PATH]

A folder holds one ~4 MB text file (``--lines`` lines of 80 characters); it is synced,
then ``--rounds`` times ``--edits`` lines at random places are rewritten and the folder
synced again (an *edit run*: load the document from the local history, diff, edit,
record, send, wait for the server's ack). Then ``--nochange`` runs with nothing to do
(a *no-change start*: mostly loading the document from the local history). Every run is
a separate ``weft sync --once`` process, timed from start to exit, against a real
``weft serve`` on SQLite (port 18xxx, its store in a temporary directory).

Peer: a fresh folder's first sync of the same project (download the document, write the
file): what opening the document costs with no local history to replay. A no-change
start should cost about as much.

``--repo`` runs another checkout's server and client with this driver (its own
``.venv``), so two versions can be timed back to back on the same machine. Output: a
table, then one JSON line with the figures, the ratio to the peer, the git SHA and the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import REPO, git_sha

FILE = "big.md"
ALPHABET = "abcdefghij klmnop"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port(low: int = 18600, high: int = 19000) -> int:
    """A port in 18xxx that was free a moment ago on 127.0.0.1."""
    for port in range(low, high):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {low}-{high}")


def env_for(repo: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    env["PYTHONPATH"] = str(repo)
    return env


def start_server(repo: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = env_for(repo) | {"WEFT_UPDATES_PER_SECOND": "1000000", "WEFT_UPDATES_BURST": "1000000"}
    command = [str(repo / ".venv" / "bin" / "python"), "-m", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--store", f"sqlite:///{workdir / 'weft.db'}"]
    with (workdir / "server.log").open("ab") as out:
        proc = subprocess.Popen(command, cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # e.g. the port was taken meanwhile: not someone else's
            raise RuntimeError((workdir / "server.log").read_text(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not answer /healthz")


def sync_once(repo: Path, folder: Path, port: int) -> float:
    """Seconds one ``weft sync --once`` process took, start to exit."""
    command = [str(repo / ".venv" / "bin" / "python"), "-m", "client.cli", "sync", str(folder)]
    command += ["--server", f"ws://127.0.0.1:{port}", "--tenant", "bench", "--project", "big"]
    command += ["--once", "-q", "--timeout", "900"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=repo, env=env_for(repo), capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"weft sync exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return took


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    repo = Path(args.repo).resolve()
    rng = random.Random(args.seed)
    lines = [
        f"line {i:05d} " + "".join(rng.choice(ALPHABET) for _ in range(68)) + "\n"
        for i in range(args.lines)
    ]
    server, port = start_server(repo, workdir)
    try:
        folder = workdir / "a"
        folder.mkdir()
        (folder / FILE).write_text("".join(lines))
        first = sync_once(repo, folder, port)
        log(f"first sync: {first:.2f} s")
        edits = []
        for n in range(args.rounds):
            for line in rng.sample(range(len(lines)), args.edits):
                words = "".join(rng.choice("qrstuvwxyz ") for _ in range(60))
                lines[line] = f"edit{n} {line} {words}\n"
            (folder / FILE).write_text("".join(lines))
            edits.append(sync_once(repo, folder, port))
            log(f"edit run {n}: {edits[-1]:.2f} s")
        nochange = []
        for n in range(args.nochange):
            nochange.append(sync_once(repo, folder, port))
            log(f"no-change start {n}: {nochange[-1]:.2f} s")
        fresh = workdir / "fresh"
        fresh.mkdir()
        peer = sync_once(repo, fresh, port)
        log(f"peer, a fresh folder's first sync: {peer:.2f} s")
        if (fresh / FILE).read_text() != "".join(lines):
            raise RuntimeError("the fresh folder does not hold the edited file")
    finally:
        server.terminate()
        server.wait(30)
    return {
        "file_bytes": len("".join(lines).encode()),
        "first_sync_s": round(first, 3),
        "edit_runs_s": [round(t, 3) for t in edits],
        "nochange_starts_s": [round(t, 3) for t in nochange],
        "peer_fresh_first_sync_s": round(peer, 3),
        "ratio_to_peer": round(min(nochange) / peer, 2) if nochange else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bigfile",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--edits", type=int, default=2000, help="lines rewritten per round")
    parser.add_argument("--nochange", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repo", default=str(REPO), help="the checkout to run (its .venv)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="weft-bench-bigfile-"))
    try:
        figures = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"weft big file, {figures['file_bytes']} bytes, {args.rounds} x {args.edits} lines")
    print(f"{'measure':<36} {'seconds':>24}")
    print(f"{'first sync':<36} {figures['first_sync_s']:>24.2f}")
    print(f"{'edit runs':<36} {' '.join(f'{t:.2f}' for t in figures['edit_runs_s']):>24}")
    print(
        f"{'no-change starts':<36} {' '.join(f'{t:.2f}' for t in figures['nochange_starts_s']):>24}"
    )
    print(f"{'peer: a fresh folder, first sync':<36} {figures['peer_fresh_first_sync_s']:>24.2f}")
    record = {
        "bench": "bigfile",
        "git": git_sha(Path(args.repo)),
        "args": {k: v for k, v in vars(args).items() if k != "repo"},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **figures,
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
