"""Quotas across server instances: the other live instances' published connection counts
count against a tenant's limit, and the rate is split between the instances serving it.
Pure bookkeeping: the registry entries are passed in (see test_server_registry for the
registry itself)."""

from __future__ import annotations

import pytest

from crdt.errors import QuotaExceeded
from server.quotas import FIELD, MAX_PUBLISHED_TENANTS, Limits, Quotas

LIMITS = Limits(1000, 5000, updates_per_second=10, updates_burst=4, max_connections=3)


def test_connections_published_by_other_instances_count_against_the_limit() -> None:
    quotas = Quotas(LIMITS)
    quotas.set_remote([{FIELD: {"acme": 1}, "ms": 1}, {FIELD: {"acme": 1, "other": 5}}])
    assert quotas.remote_connections("acme") == 2
    quotas.connect("acme")  # 1 here + 2 elsewhere = the limit
    with pytest.raises(QuotaExceeded) as info:
        quotas.connect("acme")
    assert info.value.close_code == 4429
    assert str(info.value) == (
        "too many connections for tenant acme (limit 3; 1 here, 2 on other instances)"
    )
    quotas.set_remote([{FIELD: {"acme": 1}}])  # one closed over there
    quotas.connect("acme")
    assert quotas.connections("acme") == 2
    quotas.connect("fresh")  # a tenant nobody else serves: only the local count


def test_an_instance_that_left_or_expired_no_longer_counts() -> None:
    quotas = Quotas(LIMITS)
    quotas.set_remote([{FIELD: {"acme": 3}}])
    with pytest.raises(QuotaExceeded):
        quotas.connect("acme")
    quotas.set_remote([])  # the registry dropped it
    for _ in range(3):
        quotas.connect("acme")


@pytest.mark.parametrize(
    "field",
    [None, [1, 2], {"acme": "3"}, {"acme": -4}, {"acme": 2.5}, {7: 3}, {"acme": True}],
)
def test_a_malformed_published_field_counts_as_empty(field: object) -> None:
    quotas = Quotas(LIMITS)
    quotas.set_remote([{FIELD: field}])
    assert quotas.remote_connections("acme") == 0
    assert quotas.instances("acme") == 1


def test_local_changes_are_reported_for_publishing() -> None:
    quotas = Quotas(LIMITS)
    told: list[dict[str, int]] = []
    quotas._changed = lambda: told.append(quotas.published())
    quotas.connect("acme")
    quotas.connect("acme")
    quotas.disconnect("acme")
    quotas.disconnect("acme")
    assert told == [{"acme": 1}, {"acme": 2}, {"acme": 1}, {}]


def test_published_counts_are_capped_to_the_busiest_tenants() -> None:
    quotas = Quotas(Limits(1000, 5000, 10, 4, max_connections=10**6))
    for n in range(MAX_PUBLISHED_TENANTS + 10):
        quotas.connect(f"t{n}")
    for _ in range(5):
        quotas.connect("busy")
    published = quotas.published()
    assert len(published) == MAX_PUBLISHED_TENANTS
    assert published["busy"] == 5


def test_the_rate_is_split_between_the_instances_serving_the_tenant() -> None:
    quotas = Quotas(LIMITS, max_wait=10.0)
    # Alone: the full burst (4), then 10/s.
    assert [quotas.reserve_update("acme", 0.0) for _ in range(4)] == [0.0] * 4
    assert quotas.reserve_update("acme", 0.0) == pytest.approx(0.1)
    # A second instance holds connections of the tenant: 5/s here, burst 2.
    quotas.set_remote([{FIELD: {"acme": 1}}, {FIELD: {"other": 1}}])
    assert quotas.instances("acme") == 2
    assert quotas.reserve_update("acme", 10.0) == 0.0
    assert quotas.reserve_update("acme", 10.0) == 0.0
    assert quotas.reserve_update("acme", 10.0) == pytest.approx(0.2)
    assert quotas.reserve_update("acme", 10.0) == pytest.approx(0.4)
    # Two others: a third each (10/3 per second, burst 4/3).
    quotas.set_remote([{FIELD: {"acme": 1}}, {FIELD: {"acme": 2}}])
    assert quotas.instances("acme") == 3
    assert quotas.reserve_update("acme", 20.0) == 0.0
    assert quotas.reserve_update("acme", 20.0) == pytest.approx((1 - 1 / 3) / (10 / 3))
    # Alone again: the full rate and burst.
    quotas.set_remote([])
    assert quotas.reserve_update("acme", 30.0) == 0.0
    assert quotas.reserve_update("acme", 30.0) == 0.0


def test_a_shared_rate_refusal_says_so() -> None:
    quotas = Quotas(LIMITS, max_wait=0.5)
    quotas.set_remote([{FIELD: {"acme": 1}}])
    with pytest.raises(QuotaExceeded) as info:
        for _ in range(10):
            quotas.reserve_update("acme", 0.0)
    assert info.value.close_code == 4429
    assert str(info.value) == "update rate over 10/s for tenant acme (shared by 2 instances)"


def test_a_shared_burst_keeps_at_least_one_token() -> None:
    quotas = Quotas(Limits(1000, 5000, 10, updates_burst=1, max_connections=3), max_wait=10)
    quotas.set_remote([{FIELD: {"acme": 1}}, {FIELD: {"acme": 1}}])
    assert quotas.reserve_update("acme", 0.0) == 0.0  # burst max(1, 1/3)
    assert quotas.reserve_update("acme", 0.0) == pytest.approx(0.3)  # 1 token at 10/3 per s
