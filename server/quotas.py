"""Per-tenant quotas: update size, document size, update rate, connections.

Pure bookkeeping (time is passed in), counted per server process. The rate is a token
bucket shared by all of a tenant's connections on this instance: an update beyond the
rate is delayed (reading from that connection pauses: backpressure, nothing is lost);
only when the tenant is more than ``max_wait`` seconds behind is it refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from crdt.errors import QuotaExceeded
from server.config import Settings

# Close codes for refusals (see README, "Close codes").
CLOSE_TOO_BIG = 1009
CLOSE_DOC_TOO_BIG = 4413
CLOSE_RATE = 4429
CLOSE_CONNECTIONS = 4429


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
        self, default: Limits, overrides: dict[str, Limits] | None = None, max_wait: float = 5.0
    ) -> None:
        self.default = default
        self.overrides = overrides or {}
        self.max_wait = max_wait
        self._buckets: dict[str, TokenBucket] = {}
        self._connections: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Quotas:
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
        return cls(default, overrides, settings.rate_max_wait_seconds)

    def limits(self, tenant: str) -> Limits:
        return self.overrides.get(tenant, self.default)

    def connect(self, tenant: str) -> None:
        """Count a new connection; :class:`QuotaExceeded` (4429) when the tenant is full."""
        count = self._connections.get(tenant, 0)
        limit = self.limits(tenant).max_connections
        if count >= limit:
            raise QuotaExceeded(
                f"too many connections for tenant {tenant} (limit {limit})", CLOSE_CONNECTIONS
            )
        self._connections[tenant] = count + 1

    def disconnect(self, tenant: str) -> None:
        count = self._connections.get(tenant, 0) - 1
        if count > 0:
            self._connections[tenant] = count
        else:
            self._connections.pop(tenant, None)

    def connections(self, tenant: str) -> int:
        return self._connections.get(tenant, 0)

    def reserve_update(self, tenant: str, now: float) -> float:
        """Seconds to wait before committing one more update; QuotaExceeded (4429) if
        the tenant is too far over its rate."""
        bucket = self._buckets.get(tenant)
        if bucket is None:
            limits = self.limits(tenant)
            bucket = self._buckets[tenant] = TokenBucket(
                limits.updates_per_second, limits.updates_burst
            )
        wait = bucket.reserve(now, self.max_wait)
        if wait is None:
            raise QuotaExceeded(
                f"update rate over {bucket.rate:g}/s for tenant {tenant}", CLOSE_RATE
            )
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
