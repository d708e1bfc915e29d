"""Install, start, watch and stop the servers the fan-out benchmark compares.

Every server is a child process listening on 127.0.0.1 whose own CPU counters and peak
RSS (``VmHWM``) the bench reads through psutil / ``/proc``; each shape gets a fresh
process (and, for weft, a fresh SQLite file), so peak RSS is per shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS = REPO / "bench" / ".peers"
NODE_DIR = PEERS / "node"
NODE_SERVER = NODE_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
PYCRDT_VENV = PEERS / "pycrdt-venv"
PYCRDT_PYTHON = PYCRDT_VENV / "bin" / "python"
KINDS = ("weft", "node", "pycrdt")

# weft's per-tenant quotas are a policy, not a capacity: lift them for the bench (the
# peers have none). Everything else is the default, SQLite with synchronous=FULL.
WEFT_BENCH_ENV = {
    "WEFT_LOG_LEVEL": "WARNING",
    "WEFT_UPDATES_PER_SECOND": "1000000000",
    "WEFT_UPDATES_BURST": "1000000000",
    "WEFT_MAX_CONNECTIONS": "100000",
}


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or started; the message says why."""


def _run(command: list[str], cwd: Path, what: str) -> None:
    print(f"  installing {what}: {' '.join(command)}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise PeerUnavailable(f"installing {what} failed:\n{done.stdout}\n{done.stderr}")


def install(kind: str) -> str:
    """Install ``kind`` under bench/.peers if needed; return its version string."""
    if kind == "weft":
        return _git_sha()
    if kind == "node":
        if shutil.which("node") is None or shutil.which("npm") is None:
            raise PeerUnavailable("node and npm are needed for the reference server")
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            wanted = (HERE / "node" / name).read_bytes()
            target = NODE_DIR / name
            if not target.exists() or target.read_bytes() != wanted:
                target.write_bytes(wanted)
                shutil.rmtree(NODE_DIR / "node_modules", ignore_errors=True)
        if not NODE_SERVER.exists():
            _run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                NODE_DIR,
                "@y/websocket-server",
            )
        return "@y/websocket-server " + _npm_version("@y/websocket-server")
    if kind == "pycrdt":
        requirements = HERE / "requirements-pycrdt.txt"
        stamp = PYCRDT_VENV / "requirements.txt"
        if not stamp.exists() or stamp.read_bytes() != requirements.read_bytes():
            if not PYCRDT_PYTHON.exists():
                _run([sys.executable, "-m", "venv", str(PYCRDT_VENV)], REPO, "a venv")
            pip = [str(PYCRDT_PYTHON), "-m", "pip", "install", "-q", "-r", str(requirements)]
            _run(pip, REPO, "pycrdt-websocket")
            shutil.copyfile(requirements, stamp)
        line = next(x for x in requirements.read_text().splitlines() if x.startswith("pycrdt-w"))
        return line.strip()
    raise ValueError(f"unknown server kind {kind!r}")


def _npm_version(package: str) -> str:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    return str(json.loads(manifest.read_text())["version"])


def _git_sha() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if done.returncode == 0:
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return done.stdout.strip() + ("+dirty" if dirty else "")
    return "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One running server process."""

    kind: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.proc.pid)

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_bytes(self) -> int:
        return int(self.ps.memory_info().rss)

    def peak_rss_bytes(self) -> int:
        """``VmHWM``: the process's peak resident set since it started."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        return self.rss_bytes()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _command(
    kind: str, port: int, workdir: Path, synchronous: str = "FULL"
) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEFT_")}
    if kind == "weft":
        store = f"sqlite:///{workdir / 'weft.db'}?synchronous={synchronous}"
        command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--port", str(port)]
        return [*command, "--store", store], {**env, **WEFT_BENCH_ENV}
    if kind == "node":
        return ["node", str(NODE_SERVER)], {**env, "HOST": "127.0.0.1", "PORT": str(port)}
    if kind == "pycrdt":
        script = str(HERE / "pycrdt_server.py")
        return [str(PYCRDT_PYTHON), script, "127.0.0.1", str(port)], env
    raise ValueError(f"unknown server kind {kind!r}")


def _ready(kind: str, port: int) -> bool:
    if kind == "weft":
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
        return False
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def running(
    kind: str,
    workdir: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    synchronous: str = "FULL",
) -> Iterator[Server]:
    """Start ``kind`` in ``workdir``, wait until it accepts connections, stop it after
    (``synchronous``: weft's SQLite level, see ``bench.fanout --weft-synchronous``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command, env = _command(kind, port, workdir, synchronous)
    env.update(extra_env or {})
    log_path = workdir / f"{kind}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(kind, proc, port, workdir, log_path)
    try:
        deadline = time.monotonic() + 30
        while not _ready(kind, port):
            if proc.poll() is not None:
                raise PeerUnavailable(f"{kind} exited with {proc.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise PeerUnavailable(f"{kind} did not start within 30 s:\n{server.log()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
