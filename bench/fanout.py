"""Fan-out benchmark: weft against the reference y-websocket server and pycrdt-websocket.

    python -m bench.fanout [--quick] [--servers weft,node,pycrdt] [--shapes 1x2x5000,...] [--repeat 3]

For each shape R x C x U (R rooms, C clients in each, U updates sent by every client) and
each server (a fresh process per shape), load generator processes (separate from the
server, speaking y-websocket with :mod:`crdt.codec`) connect every client, sync, then:

1. full speed: every client sends its U updates (one-character inserts) as fast as it
   can; we count delivered updates (an update received by one of the C - 1 other
   clients of its room; servers that echo an update to its sender get no credit for
   that), the delivered updates/s, the fan-out latency p50/p99 (send to receive, one
   monotonic clock across processes; p99 by nearest rank) and the server's CPU time
   (its own counters, psutil) per delivered update, counted from the start until the
   server is quiet again, so work it does after the last delivery (weft's snapshots
   and checkpoints) counts too;
2. paced: once the server is quiet again (its CPU under 5 % of a core: weft snapshots
   after a burst), every client sends a few more updates at a fixed total rate
   (``--paced-rate`` updates/s over the shape, random phases): latency without queueing;
3. convergence: each client applies what it sent and received; every client's text and a
   fresh reader's copy from the server must be identical, and nothing may be missing.

The generators' own CPU time is reported (share of the machine, and the busiest
process's utilisation) to show they are not the bottleneck. The server's peak RSS is
its ``VmHWM``. weft runs on SQLite with synchronous=FULL (every update committed before
it is broadcast); its per-tenant rate quotas are lifted, since the peers have none.
``--weft-synchronous OFF`` runs it without the fsync (not durable: to see what is left of
its latency without the disk, for comparison only; the JSON says the level).

Then the idle-RSS check (:mod:`bench.peers.idle`): 1,000 documents are opened one after
another (each with ~2 kB of text) and left idle; weft unloads them after its idle
timeout (``WEFT_ROOM_IDLE_SECONDS``, 15 s here) and its RSS must come back to within
20 % of the baseline. The peers are measured the same way, for comparison; the
reference Node server (run without persistence, as here) never unloads a document, so
its figure is with all 1,000 still loaded.

A single run of a server is noisy on a shared 2-core machine (one server's CPU per
update was seen to swing 1.7x between back-to-back runs), so each shape runs in
``--repeat`` rounds (default 3), every server once per round, in a fresh store, who
goes first rotating from round to round. Each figure reported is the median over the
rounds (every round's main figures are under ``rounds``; counts such as ``delivered``
are totals; latency ``max`` is the highest of any round); each ratio is the median of
the rounds' ratios (``ratios_per_round``), each taken between servers of the same round;
the goals are judged on those ratios, printed after each shape's table. The idle-RSS
check runs once per server.

Peers are installed under ``bench/.peers/`` on first use, from the pinned manifests in
``bench/peers/`` (see its ``__init__``). ``--quick`` runs small sizes (a smoke run).

Before each shape, when weft is measured, the disk's own floor under a durable write
(:mod:`bench.disk`: a 4 KiB write and its ``fdatasync``, paced like the paced phase, in
the folder of the stores) is measured and reported (``disk_sync_floor_ms``): weft's
paced latency includes one such commit, the peers' does not.

Output: progress on stderr; one JSON line per shape (figures for every server, ratios of
weft to each peer, goals met or not) and one for the idle check, each with the git SHA
and the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import platform
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from pycrdt import Doc, Text

from bench.disk import sync_floor
from bench.peers import servers
from bench.peers.idle import idle_rss
from bench.peers.loadgen import FIRST_CLIENT_ID, PHASE_TIMEOUT, GenSpec, generator_main
from crdt import codec
from crdt.codec import SyncStep1, SyncStep2

FULL_SHAPES = ("1x2x5000", "50x4x200", "1x50x100")
QUICK_SHAPES = ("1x2x500", "50x4x20", "1x50x10")
PACED_SECONDS = 5.0


@dataclass(frozen=True)
class Shape:
    rooms: int
    clients: int
    updates: int

    @classmethod
    def parse(cls, text: str) -> Shape:
        try:
            r, c, u = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"a shape is RxCxU, e.g. 1x2x5000: {text!r}") from None
        if r < 1 or c < 2 or u < 1:
            raise argparse.ArgumentTypeError(f"a shape needs R >= 1, C >= 2, U >= 1: {text!r}")
        return cls(r, c, u)

    @property
    def name(self) -> str:
        return f"{self.rooms}x{self.clients}x{self.updates}"


# --- the orchestrator -------------------------------------------------------------------


def plan(shape: Shape, generators: int, paced_rate: float, paced_seconds: float) -> list[GenSpec]:
    """Spread the shape's clients over ``generators`` processes, round robin."""
    total = shape.rooms * shape.clients
    procs = max(1, min(generators, total))
    rooms = tuple(f"bench/fanout/{shape.name}/room{r}.txt" for r in range(shape.rooms))
    paced_total = max(2 * total, round(paced_rate * paced_seconds))
    paced_updates = -(-paced_total // total)
    period = total / paced_rate
    assigned: list[list[tuple[int, int]]] = [[] for _ in range(procs)]
    for k in range(total):
        assigned[k % procs].append((k // shape.clients, FIRST_CLIENT_ID + k))
    return [
        GenSpec("", rooms, tuple(mine), shape.clients, shape.updates, paced_updates, period, i)
        for i, mine in enumerate(assigned)
    ]


def _percentiles(values_ns: list[int]) -> dict[str, float | None]:
    if not values_ns:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values_ns)

    def at(q: float) -> float:  # nearest rank: the smallest value with q of them at or below
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] / 1e6, 3)

    return {"p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1] / 1e6, 3)}


def _missing(
    client: dict[str, Any],
    senders: array[int],
    clocks: array[int],
    sent_at: dict[tuple[int, int], int],
    per_room: int,
) -> str:
    """Which updates of its room a client never received (for the report)."""
    room = (client["cid"] - FIRST_CLIENT_ID) // per_room
    got = set(zip(senders, clocks, strict=True))
    lost = sorted(
        key
        for key in sent_at
        if (key[0] - FIRST_CLIENT_ID) // per_room == room
        and key[0] != client["cid"]
        and key not in got
    )
    shown = ", ".join(f"{s}@{c}" for s, c in lost[:5])
    return f"client {client['cid']} never got {len(lost)} update(s) (sender@clock): {shown}"


def phase_figures(results: list[dict[str, Any]], per_room: int) -> dict[str, Any]:
    """Deliveries, latencies and wall time of one phase, from every generator's records."""
    sent_at: dict[tuple[int, int], int] = {}
    first = None
    for result in results:
        for c in result["clients"]:
            times, clocks = array("q"), array("q")
            times.frombytes(c["sent"])
            clocks.frombytes(c["clocks"])
            for clock, t in zip(clocks, times, strict=False):
                if t:
                    sent_at[(c["cid"], clock)] = t
                    first = t if first is None else min(first, t)
    latencies: list[int] = []
    last = first or 0
    delivered = expected = unknown = echoes = 0
    closed: list[str] = []
    missing: list[str] = []
    for result in results:
        for c in result["clients"]:
            senders, clocks, times = array("q"), array("q"), array("q")
            for arr, raw in zip((senders, clocks, times), c["recv"], strict=True):
                arr.frombytes(raw)
            for sender, clock, t in zip(senders, clocks, times, strict=True):
                sent = sent_at.get((sender, clock))
                if sent is None:
                    unknown += 1
                    continue
                latencies.append(t - sent)
                last = max(last, t)
            delivered += c["from_others"]
            expected += c["target"]
            if c["from_others"] < c["target"] and len(missing) < 5:
                missing.append(_missing(c, senders, clocks, sent_at, per_room))
            echoes += c["echoes"]
            if c["closed"]:
                closed.append(f"client {c['cid']}: {c['closed']}")
    wall = (last - first) / 1e9 if first is not None and last > first else 0.0
    return {
        "delivered": delivered,
        "expected": expected,
        "unmatched": unknown,
        "echoes": echoes,
        "wall": wall,
        "latency": _percentiles(latencies),
        "closed": closed,
        "missing": missing,
    }


def _recv(conn: multiprocessing.connection.Connection, what: str, timeout: float) -> Any:
    if not conn.poll(timeout):
        raise TimeoutError(f"no {what} from a load generator within {timeout:.0f} s")
    message = conn.recv()
    if message[0] != what:
        raise RuntimeError(f"expected {what} from a load generator, got {message[0]}")
    return message[1]


async def server_hashes(url: str, rooms: Sequence[str]) -> list[str]:
    """A fresh reader's copy of every room: the hash of its text."""
    hashes = []
    async with aiohttp.ClientSession() as session:
        for room in rooms:
            async with session.ws_connect(f"{url}/{room}", max_msg_size=0) as ws:
                await ws.send_bytes(codec.encode(SyncStep1(b"\x00")))
                doc: Doc[Any] = Doc()
                while True:
                    msg = await ws.receive(timeout=30)
                    if msg.type != aiohttp.WSMsgType.BINARY:
                        raise RuntimeError(f"reader of {room}: connection ended ({msg.type})")
                    message = codec.decode(msg.data)
                    if isinstance(message, SyncStep2):
                        doc.apply_update(message.update)
                        break
            text = str(doc.get("content", type=Text))
            hashes.append(hashlib.sha256(text.encode()).hexdigest())
    return hashes


def run_shape(
    kind: str, shape: Shape, args: argparse.Namespace, workdir: Path, round_: int = 0
) -> dict[str, Any]:
    """One server, one shape, one round (each in a fresh store): both phases and the
    convergence check."""
    specs = plan(shape, args.generators, args.paced_rate, args.paced_seconds)
    ctx = multiprocessing.get_context("spawn")
    with servers.running(
        kind, workdir / f"{kind}-{shape.name}-{round_}", synchronous=args.weft_synchronous
    ) as server:
        specs = [dataclasses.replace(s, url=server.ws_base) for s in specs]
        pipes, procs = [], []
        for spec in specs:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=generator_main, args=(child, spec), daemon=True)
            proc.start()
            pipes.append(parent)
            procs.append(proc)
        try:
            for pipe in pipes:
                _recv(pipe, "leaders", 300)
            for pipe in pipes:
                pipe.send(("join",))
            for pipe in pipes:
                _recv(pipe, "ready", 300)
            phases = {}
            watched = [psutil.Process(proc.pid) for proc in procs]
            for phase in ("full", "paced"):
                settled, _ = wait_until_quiet(server)
                gen0 = [_cpu(p) for p in watched]
                cpu0 = server.cpu_seconds()
                start_ns = time.monotonic_ns() + 300_000_000
                for pipe in pipes:
                    pipe.send(("go", phase, start_ns))
                results = [_recv(pipe, "done", PHASE_TIMEOUT + 60) for pipe in pipes]
                figures = phase_figures(results, shape.clients)
                figures["server_cpu_window"] = server.cpu_seconds() - cpu0
                # Up to the server's quiet again: work it does after the last delivery
                # (weft's snapshots and checkpoints after a burst) is the phase's too.
                _, quiet_cpu = wait_until_quiet(server)
                figures["server_cpu"] = quiet_cpu - cpu0
                figures["settle_seconds"] = settled
                figures["gen_cpu"] = [_cpu(p) - c for p, c in zip(watched, gen0, strict=True)]
                phases[phase] = figures
            # Read the server's copy while the clients are still there: some servers drop
            # a room (and its document) when its last client leaves.
            reader_hashes = asyncio.run(server_hashes(server.ws_base, specs[0].rooms))
            for pipe in pipes:
                pipe.send(("finish",))
            client_hashes = [h for pipe in pipes for h in _recv(pipe, "hashes", 300)]
            peak_rss = server.peak_rss_bytes()
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
        log_tail = server.log()[-2000:]
    return summarize(kind, shape, specs, phases, client_hashes, reader_hashes, peak_rss, log_tail)


def wait_until_quiet(server: servers.Server, limit: float = 60.0) -> tuple[float, float]:
    """Wait until the server's background work (e.g. snapshots after a burst) is done:
    under 5 % of a core over half a second. Each phase starts from a quiet server.
    Returns the seconds waited and the server's CPU seconds when the quiet half second
    began (what it used up to then, without that idle half second)."""
    started = time.monotonic()
    cpu0 = server.cpu_seconds()
    while time.monotonic() - started < limit:
        cpu0 = server.cpu_seconds()
        time.sleep(0.5)
        if server.cpu_seconds() - cpu0 < 0.025:
            break
    return round(time.monotonic() - started, 1), cpu0


def summarize(
    kind: str,
    shape: Shape,
    specs: list[GenSpec],
    phases: dict[str, dict[str, Any]],
    client_hashes: list[tuple[int, int, str, str | None]],
    reader_hashes: list[str],
    peak_rss: int,
    log_tail: str,
) -> dict[str, Any]:
    full, paced = phases["full"], phases["paced"]
    problems = full["closed"] + paced["closed"] + full["missing"] + paced["missing"]
    for name, figures in phases.items():
        if figures["delivered"] != figures["expected"]:
            problems.append(f"{name}: {figures['delivered']} of {figures['expected']} delivered")
    diverged = [cid for room, cid, h, _ in client_hashes if h != reader_hashes[room]]
    if diverged:
        problems.append(f"{len(diverged)} clients differ from the server's copy")
    wall = full["wall"] or float("nan")
    cpus = os.cpu_count() or 1
    gen_wall = max(wall, 1e-9)
    result = {
        "delivered": full["delivered"],
        "expected": full["expected"],
        "throughput_ups": round(full["delivered"] / wall, 1) if full["wall"] else None,
        "latency_ms": full["latency"],
        "paced_latency_ms": paced["latency"],
        "paced_delivered": paced["delivered"],
        "quiet_wait_seconds": {"full": full["settle_seconds"], "paced": paced["settle_seconds"]},
        "cpu_us_per_update": _per(full["server_cpu"], full["delivered"]),
        "paced_cpu_us_per_update": _per(paced["server_cpu"], paced["delivered"]),
        "server_cpu_util": round(full["server_cpu_window"] / wall, 3) if full["wall"] else None,
        "peak_rss_mb": round(peak_rss / 2**20, 1),
        "echoes_to_sender": full["echoes"],
        "converged": not problems,
        "problems": problems,
        "generator": {
            "processes": len(specs),
            "cpu_share_of_machine": round(sum(full["gen_cpu"]) / (gen_wall * cpus), 3),
            "busiest_process_util": round(max(full["gen_cpu"]) / gen_wall, 3),
        },
    }
    if problems:
        result["server_log_tail"] = log_tail
    return result


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _per(cpu: float, delivered: int) -> float | None:
    return round(cpu / delivered * 1e6, 2) if delivered else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios_of(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """weft's ratios to the peers, from figures measured in one round."""
    weft, node, py = results.get("weft"), results.get("node"), results.get("pycrdt")
    ratios: dict[str, Any] = {}
    if weft is None:
        return ratios
    if node is not None:
        ratios["cpu_per_update_weft_over_node"] = _ratio(
            weft["cpu_us_per_update"], node["cpu_us_per_update"]
        )
        ratios["throughput_weft_over_node"] = _ratio(weft["throughput_ups"], node["throughput_ups"])
        ratios["paced_p99_weft_over_node"] = _ratio(
            weft["paced_latency_ms"]["p99"], node["paced_latency_ms"]["p99"]
        )
    if py is not None:
        ratios["cpu_per_update_weft_over_pycrdt"] = _ratio(
            weft["cpu_us_per_update"], py["cpu_us_per_update"]
        )
        ratios["throughput_weft_over_pycrdt"] = _ratio(weft["throughput_ups"], py["throughput_ups"])
    return ratios


def goals_of(
    shape: Shape, results: dict[str, dict[str, Any]], ratios: dict[str, Any]
) -> dict[str, Any]:
    """The issue's goals for this shape, judged on ``ratios`` and weft's figures."""
    weft = results.get("weft")
    goals: dict[str, Any] = {}
    if weft is None:
        return goals
    if "cpu_per_update_weft_over_node" in ratios:
        goals["cpu_per_update_le_node"] = _le(ratios["cpu_per_update_weft_over_node"], 1.0)
        goals["throughput_ge_node"] = _ge(ratios["throughput_weft_over_node"], 1.0)
    if "cpu_per_update_weft_over_pycrdt" in ratios:
        goals["cpu_per_update_le_half_pycrdt"] = _le(ratios["cpu_per_update_weft_over_pycrdt"], 0.5)
    if (shape.rooms, shape.clients) == (1, 2):
        goals["paced_p99_le_5ms"] = _le(weft["paced_latency_ms"]["p99"], 5.0)
    elif (shape.rooms, shape.clients) == (50, 4) and "paced_p99_weft_over_node" in ratios:
        goals["paced_p99_le_node"] = _le(ratios["paced_p99_weft_over_node"], 1.0)
    goals["converged"] = all(r["converged"] for r in results.values())
    return goals


def compare(
    shape: Shape, rounds: list[dict[str, dict[str, Any]]]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Each server's figures over the rounds (the median of each), weft's ratios to the
    peers (the median of each round's ratio, rounds where one is missing left out: the
    servers of one round ran one after the other, minutes apart at most), the goals
    judged on those ratios (so a goal can differ from what the two medians in the
    table would say), and the ratios of every round."""
    per_round = [ratios_of(results) for results in rounds]
    ratios = {
        name: _median([r[name] for r in per_round if r.get(name) is not None])
        for name in per_round[0]
    }
    kinds = list(rounds[0])
    results = {kind: merge_runs([results[kind] for results in rounds]) for kind in kinds}
    return results, ratios, goals_of(shape, results, ratios), per_round


_MEDIAN_FIGURES = (
    "throughput_ups",
    "cpu_us_per_update",
    "paced_cpu_us_per_update",
    "server_cpu_util",
    "peak_rss_mb",
)


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds as one result: the median of each figure (latency ``max``:
    the highest of any round), every round's problems (tagged with the round),
    converged only if every round converged, totals of the counts (``delivered``,
    ``expected``, ...), the longest quiet wait, and each round's main figures under
    ``rounds`` (also for a single round)."""
    out = dict(runs[0])
    for name in _MEDIAN_FIGURES:
        out[name] = _median([r[name] for r in runs if r[name] is not None])
    for name in ("latency_ms", "paced_latency_ms"):
        out[name] = {
            q: (max if q == "max" else _median)(
                [r[name][q] for r in runs if r[name][q] is not None] or [None]
            )
            for q in runs[0][name]
        }
    out["quiet_wait_seconds"] = {
        phase: max(r["quiet_wait_seconds"][phase] for r in runs)
        for phase in runs[0]["quiet_wait_seconds"]
    }
    out["problems"] = [f"round {n + 1}: {p}" for n, r in enumerate(runs) for p in r["problems"]]
    out["converged"] = all(r["converged"] for r in runs)
    for name in ("delivered", "expected", "paced_delivered", "echoes_to_sender"):
        out[name] = sum(r[name] for r in runs)
    # the generators' busiest round: they must not be the bottleneck in any
    out["generator"] = max((r["generator"] for r in runs), key=lambda g: g["cpu_share_of_machine"])
    out["rounds"] = [
        {
            "cpu_us_per_update": r["cpu_us_per_update"],
            "throughput_ups": r["throughput_ups"],
            "paced_p99_ms": r["paced_latency_ms"]["p99"],
            "converged": r["converged"],
        }
        for r in runs
    ]
    logs = [r["server_log_tail"] for r in runs if "server_log_tail" in r]
    if logs:
        out["server_log_tail"] = logs[0]
    return out


def _median(values: list[Any]) -> Any:
    values = [v for v in values if v is not None]
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def _le(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _ge(value: float | None, limit: float) -> bool | None:
    return None if value is None else value >= limit


# --- main -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        node = None
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "node": node,
        "system": platform.platform(),
    }


def table(shape: Shape, results: dict[str, dict[str, Any]]) -> str:
    head = f"{shape.name}: {'server':8} {'deliv/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    head += f"{'paced p99':>9} {'cpu us/upd':>10} {'util':>5} {'rss MB':>7} {'gen%':>5} ok"
    lines = [head]
    for kind, r in results.items():
        lines.append(
            f"{'':{len(shape.name) + 1}} {kind:8} {r['throughput_ups'] or 0:9.0f} "
            f"{r['latency_ms']['p50'] or 0:8.2f} {r['latency_ms']['p99'] or 0:8.2f} "
            f"{r['paced_latency_ms']['p99'] or 0:9.2f} {r['cpu_us_per_update'] or 0:10.1f} "
            f"{r['server_cpu_util'] or 0:5.2f} {r['peak_rss_mb']:7.1f} "
            f"{100 * r['generator']['cpu_share_of_machine']:5.1f} "
            f"{'yes' if r['converged'] else 'NO: ' + '; '.join(r['problems'])[:200]}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fanout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--shapes",
        type=lambda t: [Shape.parse(x) for x in t.split(",")],
        help="comma-separated RxCxU (default 1x2x5000,50x4x200,1x50x100)",
    )
    parser.add_argument(
        "--servers",
        default=",".join(servers.KINDS),
        help="comma-separated subset of weft,node,pycrdt (default: all)",
    )
    parser.add_argument(
        "--generators", type=int, default=2, help="load generator processes (default 2)"
    )
    parser.add_argument(
        "--paced-rate",
        type=float,
        default=100.0,
        help="updates/s over the whole shape in the paced phase (default 100)",
    )
    parser.add_argument(
        "--weft-synchronous",
        default="FULL",
        choices=("FULL", "EXTRA", "NORMAL", "OFF"),
        help="weft's SQLite synchronous level (default FULL: every update durable before "
        "it is broadcast, as the goals assume; OFF measures what is left without the "
        "disk's fsync, for comparison only)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds per shape, every server once per round (default 3; --quick: 1)",
    )
    parser.add_argument(
        "--idle-documents",
        type=int,
        default=1000,
        help="documents for the idle-RSS check (0 skips it; default 1000)",
    )
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = set(args.kinds) - set(servers.KINDS)
    if unknown or not args.kinds:
        parser.error(f"--servers takes names from {', '.join(servers.KINDS)}")
    if args.shapes is None:
        args.shapes = [Shape.parse(x) for x in (QUICK_SHAPES if args.quick else FULL_SHAPES)]
    args.paced_seconds = 2.0 if args.quick else PACED_SECONDS
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.quick and args.idle_documents == 1000:
        args.idle_documents = 200
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        versions = {kind: servers.install(kind) for kind in args.kinds}
    except servers.PeerUnavailable as exc:
        print(f"bench.fanout: {exc}", file=sys.stderr)
        return 1
    if args.weft_synchronous != "FULL" and "weft" in args.kinds:
        print(
            f"bench.fanout: weft runs with synchronous={args.weft_synchronous}: its updates "
            "are NOT all durable before they are broadcast; figures for comparison only",
            file=sys.stderr,
        )
    common = {
        "weft_synchronous": args.weft_synchronous,
        "git": servers.install("weft"),
        "machine": machine(),
        "versions": versions,
        "quick": args.quick,
    }
    servers.PEERS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fanout-", dir=servers.PEERS) as tmp:
        for number, shape in enumerate(args.shapes):
            floor = None
            if "weft" in args.kinds:
                floor = sync_floor(Path(tmp), 1 / args.paced_rate)
                print(
                    f"{shape.name}: the disk's floor, a 4 KiB write + fdatasync every "
                    f"{1000 / args.paced_rate:g} ms where the stores are: p50 {floor['p50']} ms, "
                    f"p99 {floor['p99']} ms (weft commits each update before sending it)",
                    file=sys.stderr,
                    flush=True,
                )
            rounds: list[dict[str, dict[str, Any]]] = []
            for round_ in range(args.repeat):
                results: dict[str, dict[str, Any]] = {}
                # who goes first rotates from round to round and shape to shape
                turn = (number + round_) % len(args.kinds)
                for kind in args.kinds[turn:] + args.kinds[:turn]:
                    print(
                        f"{shape.name}: {kind} (round {round_ + 1} of {args.repeat}) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    results[kind] = run_shape(kind, shape, args, Path(tmp), round_)
                rounds.append({kind: results[kind] for kind in args.kinds})
                if args.repeat > 1:
                    print(table(shape, results), file=sys.stderr, flush=True)
            results, ratios, goals, per_round = compare(shape, rounds)
            if args.repeat > 1:
                print(f"{shape.name}: medians of {args.repeat} rounds", file=sys.stderr)
            print(table(shape, results), file=sys.stderr, flush=True)
            if ratios:
                verdict = ", ".join(f"{k} {v}" for k, v in ratios.items())
                print(f"{shape.name}: ratios (median of the rounds'): {verdict}", file=sys.stderr)
            line = {
                "bench": "fanout",
                "shape": shape.name,
                "rooms": shape.rooms,
                "clients": shape.clients,
                "updates": shape.updates,
                "paced_rate_ups": args.paced_rate,
                "repeat": args.repeat,
                **results,
                "ratios": ratios,
                "ratios_per_round": per_round,
                "goals": goals,
                "disk_sync_floor_ms": floor,
                **common,
            }
            print(json.dumps(line), flush=True)
        if args.idle_documents > 0:
            idle = {}
            for kind in args.kinds:
                print(f"idle RSS: {kind} ...", file=sys.stderr, flush=True)
                idle[kind] = idle_rss(kind, args.idle_documents, Path(tmp))
                print(f"  {kind}: {idle[kind]}", file=sys.stderr, flush=True)
            goal = idle["weft"]["within_20_percent"] if "weft" in idle else None
            line = {
                "bench": "fanout-idle-rss",
                **idle,
                "goals": {"weft_within_20_percent": goal},
                **common,
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
