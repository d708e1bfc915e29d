"""Per-tenant quotas: update size, document size, update rate, connections.

Bookkeeping (time is passed in). Several instances on one store are one service, so the
connection and rate quotas hold across them, through the instance registry
(:mod:`server.registry`; :meth:`Quotas.join` wires it):

- connections: each instance publishes its per-tenant connection counts; a connection is
  admitted while this instance's count plus the other live instances' published counts
  is below the limit. Counts are published promptly while another instance is alive
  (coalesced, at most every ``registry.PUBLISH_EVERY``), so the cluster may overshoot by
  the connections admitted elsewhere within one publish interval; a dead instance's
  connections count until its heartbeat expires. An instance joins the registry at
  startup, and before admitting its first connection waits until every live instance
  has published its counts since it learned of this one (:meth:`Quotas.ready`; a lone
  instance publishes only at its heartbeat, so its entry could be 10 s old): it never
  admits a connection on counts older than that. If one does not answer in time
  (killed within its heartbeat timeout, say), the wait ends after ``timeout`` with a
  warning and the counts it last published are used.
- update rate: a token bucket per tenant on each instance, shared by the tenant's
  connections there. Its rate and burst are the tenant's divided evenly between the
  live instances that hold connections of the tenant (1/n each), so together they
  admit about the limit; a lone instance keeps the full rate. The split follows
  connections, not traffic (simple and stable: it moves only when a tenant's first
  connection opens or its last one closes on an instance): an instance whose
  connections of the tenant all sit idle still takes its 1/n. An update beyond the rate
  is delayed (reading from that connection pauses: backpressure, nothing is lost); only
  when the tenant is more than ``max_wait`` seconds behind is it refused.
- sizes (update, document) need no sharing: a document's size comes from the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crdt.errors import QuotaExceeded
from server.config import Settings

if TYPE_CHECKING:
    from server.metrics import Metrics
    from server.registry import Registry

log = logging.getLogger("weft.cluster")

# Close codes for refusals (see README, "Close codes").
CLOSE_TOO_BIG = 1009
CLOSE_DOC_TOO_BIG = 4413
CLOSE_RATE = 4429
CLOSE_CONNECTIONS = 4429

FIELD = "conns"
"""The registry field holding an instance's ``{tenant: open connections}``."""
MAX_PUBLISHED_TENANTS = 1000
"""Tenants an instance publishes counts for at most (those with the most connections):
keeps a registry entry under the store's value limit."""


@dataclass(frozen=True)
class Limits:
    max_update_bytes: int
    max_doc_bytes: int
    updates_per_second: float
    updates_burst: int
    max_connections: int


@dataclass
class TokenBucket:
    """Tokens refill at ``rate`` per second up to ``burst``; debt is allowed up to a wait."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst

    def resize(self, rate: float, burst: float) -> None:
        """New rate and burst from now on (tokens beyond the new burst are dropped)."""
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, burst)

    def reserve(self, now: float, max_wait: float) -> float | None:
        """Take one token; the seconds to wait before using it, or None (refused)."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        wait = 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate
        if wait > max_wait:
            return None
        self.tokens -= 1
        return wait


class Quotas:
    """The limits of every tenant and the live counters behind them."""

    def __init__(
        self,
        default: Limits,
        overrides: dict[str, Limits] | None = None,
        max_wait: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.default = default
        self.overrides = overrides or {}
        self.max_wait = max_wait
        self._buckets: dict[str, tuple[TokenBucket, int]] = {}  # with its instance count
        self._connections: dict[str, int] = {}
        self._remote: dict[str, int] = {}  # connections on the other live instances
        self._serving: dict[str, int] = {}  # other live instances holding connections
        self._changed: Callable[[], None] | None = None
        self._registry: Registry | None = None
        self._gave_up = False  # the registry's first read timed out once
        self._metrics = metrics

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> Quotas:
        default = Limits(
            settings.max_update_bytes,
            settings.max_doc_bytes,
            settings.updates_per_second,
            settings.updates_burst,
            settings.max_connections,
        )
        overrides = {
            tenant: Limits(
                o.max_update_bytes or default.max_update_bytes,
                o.max_doc_bytes or default.max_doc_bytes,
                o.updates_per_second or default.updates_per_second,
                o.updates_burst or default.updates_burst,
                o.max_connections or default.max_connections,
            )
            for tenant, o in settings.tenant_quotas.items()
        }
        return cls(default, overrides, settings.rate_max_wait_seconds, metrics)

    def limits(self, tenant: str) -> Limits:
        return self.overrides.get(tenant, self.default)

    # --- across instances -------------------------------------------------------------

    def join(self, registry: Registry) -> None:
        """Share connection counts and rates with the other instances through
        ``registry``: publish ours, count theirs (see :meth:`ready`)."""
        self._registry = registry
        registry.share(FIELD, self.published)
        registry.on_peers(lambda: self.set_remote(registry.peers.values()))
        self._changed = registry.changed

    async def ready(self, timeout: float = 2.0) -> None:
        """Call before :meth:`connect`. The first time, start the registry and wait (at
        most ``timeout``) until it is synced: every live instance has published its
        counts since it learned of this one, so an instance never admits a connection
        on the others' stale counts. The server starts the registry at startup, so
        this usually finds it synced already."""
        registry = self._registry
        if registry is None or registry.synced or self._gave_up:
            return
        if await registry.ready(timeout) or self._gave_up:
            return
        self._gave_up = True  # once: it keeps trying in the background
        if not registry.has_read:
            log.warning(
                "the instance registry was not read within %g s: admitting on "
                "this instance's counts alone until it is",
                timeout,
            )
        else:
            log.warning(
                "instance(s) %s did not publish their counts within %g s of this one "
                "joining: admitting on the counts they published last",
                ", ".join(registry.unsynced()),
                timeout,
            )

    def published(self) -> dict[str, int]:
        """What this instance publishes: its open connections per tenant."""
        counts = self._connections
        if len(counts) > MAX_PUBLISHED_TENANTS:
            top = sorted(counts.items(), key=lambda item: item[1], reverse=True)
            return dict(top[:MAX_PUBLISHED_TENANTS])
        return dict(counts)

    def set_remote(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """The other live instances' registry entries: their published counts replace
        what was known. A malformed field is ignored (that instance counts as empty)."""
        remote: dict[str, int] = {}
        serving: dict[str, int] = {}
        for entry in entries:
            counts = entry.get(FIELD)
            if not isinstance(counts, dict):
                continue
            for tenant, count in counts.items():
                if isinstance(tenant, str) and type(count) is int and count > 0:
                    remote[tenant] = remote.get(tenant, 0) + count
                    serving[tenant] = serving.get(tenant, 0) + 1
        self._remote, self._serving = remote, serving
        if self._metrics is not None:
            self._metrics.remote_connections.set(sum(remote.values()))

    def instances(self, tenant: str) -> int:
        """The live instances sharing ``tenant``'s rate: this one and every other one
        holding connections of the tenant."""
        return 1 + self._serving.get(tenant, 0)

    # --- connections ---------------------------------------------------------------------

    def connect(self, tenant: str) -> None:
        """Count a new connection; :class:`QuotaExceeded` (4429) when the tenant is full,
        counting the connections the other live instances published."""
        count = self._connections.get(tenant, 0)
        remote = self._remote.get(tenant, 0)
        limit = self.limits(tenant).max_connections
        if count + remote >= limit:
            where = f"; {count} here, {remote} on other instances" if remote else ""
            raise QuotaExceeded(
                f"too many connections for tenant {tenant} (limit {limit}{where})",
                CLOSE_CONNECTIONS,
            )
        self._connections[tenant] = count + 1
        if self._changed is not None:
            self._changed()

    def disconnect(self, tenant: str) -> None:
        count = self._connections.get(tenant, 0) - 1
        if count > 0:
            self._connections[tenant] = count
        else:
            self._connections.pop(tenant, None)
        if self._changed is not None:
            self._changed()

    def connections(self, tenant: str) -> int:
        """This instance's open connections of ``tenant``."""
        return self._connections.get(tenant, 0)

    def remote_connections(self, tenant: str) -> int:
        """The connections of ``tenant`` the other live instances published."""
        return self._remote.get(tenant, 0)

    # --- updates -------------------------------------------------------------------------

    def reserve_update(self, tenant: str, now: float) -> float:
        """Seconds to wait before committing one more update; QuotaExceeded (4429) if
        the tenant is too far over its rate."""
        held = self._buckets.get(tenant)
        instances = 1 + self._serving.get(tenant, 0)
        if held is None or held[1] != instances:
            limits = self.limits(tenant)
            rate = limits.updates_per_second / instances
            burst = max(1.0, limits.updates_burst / instances)
            if held is None:
                bucket = TokenBucket(rate, burst)
            else:
                bucket = held[0]
                bucket.resize(rate, burst)
            held = self._buckets[tenant] = (bucket, instances)
        bucket = held[0]
        wait = bucket.reserve(now, self.max_wait)
        if wait is None:
            limit = self.limits(tenant).updates_per_second
            shared = f" (shared by {instances} instances)" if instances > 1 else ""
            raise QuotaExceeded(
                f"update rate over {limit:g}/s for tenant {tenant}{shared}", CLOSE_RATE
            )
        if wait > 0 and self._metrics is not None:
            self._metrics.updates_delayed.inc()
            self._metrics.rate_wait.inc(wait)
        return wait

    def check_update(self, tenant: str, update_size: int, doc_size: int) -> None:
        """Refuse an update over the size limit (1009) or one that would make the
        document bigger than its limit (4413)."""
        limits = self.limits(tenant)
        if update_size > limits.max_update_bytes:
            raise QuotaExceeded(
                f"update of {update_size} bytes over the {limits.max_update_bytes}-byte limit",
                CLOSE_TOO_BIG,
            )
        if doc_size + update_size > limits.max_doc_bytes:
            raise QuotaExceeded(
                f"document would exceed its {limits.max_doc_bytes}-byte limit",
                CLOSE_DOC_TOO_BIG,
            )
