"""Prometheus text format, written by hand."""

from __future__ import annotations

from server.metrics import Counter, Histogram, Metrics


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    h = Histogram("h", "help", (1, 5))
    for value in (0.5, 1, 3, 7):
        h.observe(value)
    lines = h.render()
    assert 'h_bucket{le="1"} 2' in lines
    assert 'h_bucket{le="5"} 3' in lines
    assert 'h_bucket{le="+Inf"} 4' in lines
    assert "h_sum 11.5" in lines and "h_count 4" in lines


def test_labels_are_escaped() -> None:
    c = Counter("c_total", "help", "reason")
    c.inc(label='a"b\\c\nd')
    assert 'c_total{reason="a\\"b\\\\c\\nd"} 1' in c.render()


def test_every_named_series_is_rendered_with_help_and_type() -> None:
    metrics = Metrics()
    metrics.refusals.inc(label="read_only")
    text = metrics.render()
    for name, kind in [
        ("weft_connections", "gauge"),
        ("weft_rooms_loaded", "gauge"),
        ("weft_updates_committed_total", "counter"),
        ("weft_commit_batch_size", "histogram"),
        ("weft_commit_latency_seconds", "histogram"),
        ("weft_fanout_latency_seconds", "histogram"),
        ("weft_refusals_total", "counter"),
    ]:
        assert f"# TYPE {name} {kind}" in text
        assert f"# HELP {name} " in text
    assert 'weft_refusals_total{reason="read_only"} 1' in text
    assert text.endswith("\n")
