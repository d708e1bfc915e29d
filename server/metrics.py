"""Prometheus metrics, written by hand in the text exposition format (version 0.0.4).

One :class:`Metrics` per application (no global registry), so several apps can run in
one process in tests. Series:

- ``weft_connections`` (gauge): open WebSocket connections
- ``weft_rooms_loaded`` (gauge): documents loaded in memory
- ``weft_updates_committed_total`` (counter): updates durably appended (duplicates too)
- ``weft_commit_batch_size`` (histogram): updates per group commit
- ``weft_commit_latency_seconds`` (histogram): one group commit, queue to durable
- ``weft_fanout_latency_seconds`` (histogram): update received to queued for every peer
- ``weft_refusals_total{reason}`` (counter): refused connections and updates by reason
- ``weft_updates_delayed_total`` (counter): updates their tenant's rate quota held back
  (server.quotas), and ``weft_rate_wait_seconds_total`` (counter): for how long, summed
- ``weft_remote_updates_total`` (counter): updates a room picked up from the log: other
  instances' commits (and this one's that landed while the room was loading)
- ``weft_room_loads_total`` (counter): documents loaded into a room (replayed)
- ``weft_deleted_marks_total`` (counter): deletion marks written for documents whose
  room unloaded holding them deleted at head (server.rooms; the document list says
  ``"deleted": true`` for them)
- ``weft_same_changes_total`` (counter): a device's online update that held a copy of
  the same change another device had just sent, whose copy this instance deleted
  (crdt.sameonline)
- ``weft_tail_reads_total`` (counter): times a room read the log tail after its head
  moved (a room that only this instance writes to moves its cursor without reading)
- ``weft_awareness_publishes_total`` (counter): documents whose local awareness states
  this instance wrote to the store for the other instances (coalesced, see
  server.awareness)
- ``weft_awareness_remote_total`` (counter): awareness messages sent to local peers with
  the states of clients on other instances
- ``weft_instances`` (gauge): server instances alive on this store, this one included, as
  the instance registry last read (server.registry)
- ``weft_remote_connections`` (gauge): connections the other live instances published,
  all tenants (counted against the tenants' connection quotas, see server.quotas)
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}" if body else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class Counter:
    def __init__(self, name: str, help_text: str, label: str | None = None) -> None:
        self.name, self.help, self.label = name, help_text, label
        self.values: dict[str, float] = {} if label else {"": 0.0}

    def inc(self, amount: float = 1.0, label: str = "") -> None:
        self.values[label] = self.values.get(label, 0.0) + amount

    def get(self, label: str = "") -> float:
        return self.values.get(label, 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for label, value in sorted(self.values.items()):
            pairs = [(self.label, label)] if self.label else []
            lines.append(f"{self.name}{_labels(pairs)} {_number(value)}")
        return lines


class Gauge:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help, self.value = name, help_text, 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value

    def render(self) -> list[str]:
        return [
            f"# HELP {self.name} {self.help}",
            f"# TYPE {self.name} gauge",
            f"{self.name} {_number(self.value)}",
        ]


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help = name, help_text
        self.bounds = (*buckets, math.inf)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            cumulative += count
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        lines.append(f"{self.name}_sum {_number(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Metrics:
    """Every series the server exposes at ``/metrics``."""

    def __init__(self) -> None:
        self.connections = Gauge("weft_connections", "Open WebSocket connections.")
        self.rooms_loaded = Gauge("weft_rooms_loaded", "Documents loaded in memory.")
        self.updates_committed = Counter(
            "weft_updates_committed_total", "Updates durably appended (re-sent ones too)."
        )
        self.commit_batch_size = Histogram(
            "weft_commit_batch_size", "Updates per group commit.", SIZE_BUCKETS
        )
        self.commit_latency = Histogram(
            "weft_commit_latency_seconds",
            "Group commit latency, from queueing to durable.",
            LATENCY_BUCKETS,
        )
        self.fanout_latency = Histogram(
            "weft_fanout_latency_seconds",
            "From receiving an update to queueing it for every peer of its room.",
            LATENCY_BUCKETS,
        )
        self.refusals = Counter(
            "weft_refusals_total", "Refused connections and updates, by reason.", "reason"
        )
        self.updates_delayed = Counter(
            "weft_updates_delayed_total",
            "Updates held back by their tenant's rate quota (their connection not read meanwhile).",
        )
        self.rate_wait = Counter(
            "weft_rate_wait_seconds_total",
            "Seconds updates were held back by their tenant's rate quota, summed.",
        )
        self.remote_updates = Counter(
            "weft_remote_updates_total", "Updates picked up from other server instances."
        )
        self.room_loads = Counter("weft_room_loads_total", "Documents loaded into a room.")
        self.deleted_marks = Counter(
            "weft_deleted_marks_total",
            "Deletion marks written for documents whose room unloaded them deleted at head.",
        )
        self.tail_reads = Counter(
            "weft_tail_reads_total", "Log tail reads by rooms whose head moved."
        )
        self.same_changes = Counter(
            "weft_same_changes_total",
            "Online updates whose copy of another device's same change was deleted.",
        )
        self.awareness_publishes = Counter(
            "weft_awareness_publishes_total",
            "Documents whose local awareness states were published to other instances.",
        )
        self.awareness_remote = Counter(
            "weft_awareness_remote_total",
            "Awareness messages relayed to local peers from other server instances.",
        )
        self.instances = Gauge(
            "weft_instances", "Server instances alive on this store, this one included."
        )
        self.remote_connections = Gauge(
            "weft_remote_connections",
            "Connections published by the other live instances (all tenants).",
        )

    def render(self) -> str:
        series: list[Counter | Gauge | Histogram] = [
            self.connections,
            self.rooms_loaded,
            self.updates_committed,
            self.commit_batch_size,
            self.commit_latency,
            self.fanout_latency,
            self.refusals,
            self.updates_delayed,
            self.rate_wait,
            self.remote_updates,
            self.room_loads,
            self.deleted_marks,
            self.same_changes,
            self.tail_reads,
            self.awareness_publishes,
            self.awareness_remote,
            self.instances,
            self.remote_connections,
        ]
        return "\n".join(line for s in series for line in s.render()) + "\n"
