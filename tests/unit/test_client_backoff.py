"""Reconnection delays grow exponentially, are capped, and are jittered."""

from __future__ import annotations

import random

import pytest

from client.backoff import Backoff


def test_delays_double_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    backoff = Backoff(initial=0.1, maximum=2.0, rng=random.Random(7))
    nominal = []
    for _ in range(8):
        expected = backoff.nominal()
        delay = backoff.next()
        assert expected / 2 <= delay <= expected
        nominal.append(expected)
    assert nominal[:5] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6])
    assert nominal[5:] == [2.0, 2.0, 2.0]


def test_jitter_spreads_devices_apart_and_reset_starts_over() -> None:
    delays = {Backoff(initial=1, maximum=1, rng=random.Random(seed)).next() for seed in range(20)}
    assert len(delays) == 20
    backoff = Backoff(initial=0.5, maximum=8)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert backoff.nominal() == 0.5


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=2, maximum=1)
    with pytest.raises(ValueError):
        Backoff(factor=0.5)
