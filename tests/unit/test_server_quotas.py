"""Per-tenant quotas: pure bookkeeping, time passed in."""

from __future__ import annotations

import pytest

from crdt.errors import QuotaExceeded
from server.config import QuotaOverride, Settings
from server.quotas import Limits, Quotas, TokenBucket

LIMITS = Limits(1000, 5000, updates_per_second=10, updates_burst=3, max_connections=2)


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.reserve(0.0, 1.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0, 1.0) == pytest.approx(0.1)
    assert bucket.reserve(0.5, 1.0) == 0.0  # refilled meanwhile


def test_a_token_bucket_refuses_beyond_its_wait_limit() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    assert bucket.reserve(0.0, 1.5) == 0.0
    assert bucket.reserve(0.0, 1.5) == pytest.approx(1.0)
    assert bucket.reserve(0.0, 1.5) is None  # would wait 2 s
    assert bucket.reserve(1.0, 1.5) == pytest.approx(1.0)  # the refusal took nothing


def test_connections_are_counted_per_tenant() -> None:
    quotas = Quotas(LIMITS)
    quotas.connect("a")
    quotas.connect("a")
    quotas.connect("b")
    with pytest.raises(QuotaExceeded, match="too many connections") as info:
        quotas.connect("a")
    assert info.value.close_code == 4429
    quotas.disconnect("a")
    quotas.connect("a")
    assert quotas.connections("a") == 2


def test_update_and_document_sizes() -> None:
    quotas = Quotas(LIMITS)
    quotas.check_update("a", 1000, 4000)
    with pytest.raises(QuotaExceeded) as too_big:
        quotas.check_update("a", 1001, 0)
    assert too_big.value.close_code == 1009
    with pytest.raises(QuotaExceeded) as doc:
        quotas.check_update("a", 10, 4995)
    assert doc.value.close_code == 4413


def test_the_rate_is_shared_by_a_tenants_connections() -> None:
    quotas = Quotas(LIMITS, max_wait=0.15)
    assert [quotas.reserve_update("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert quotas.reserve_update("a", 0.0) == pytest.approx(0.1)
    assert quotas.reserve_update("b", 0.0) == 0.0  # another tenant, another bucket
    with pytest.raises(QuotaExceeded, match="rate") as info:
        quotas.reserve_update("a", 0.0)
    assert info.value.close_code == 4429


def test_per_tenant_overrides_from_settings() -> None:
    settings = Settings(
        max_connections=7, tenant_quotas={"big": QuotaOverride(max_doc_bytes=10**9)}
    )
    quotas = Quotas.from_settings(settings)
    assert quotas.limits("big").max_doc_bytes == 10**9
    assert quotas.limits("big").max_connections == 7
    assert quotas.limits("small").max_doc_bytes == settings.max_doc_bytes
