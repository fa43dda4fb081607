"""The operator's own metrics: what each call counts, and the names the dashboard uses."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from sluice import observability
from tests.support.triton import free_port, http_get


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_reconciling_counts_ok_and_error_and_times_both() -> None:
    ok, err = (
        value("sluice_reconciles_total", result="ok"),
        value("sluice_reconciles_total", result="error"),
    )
    timed = value("sluice_reconcile_duration_seconds_count")
    with observability.reconciling():
        pass
    with pytest.raises(RuntimeError), observability.reconciling():
        raise RuntimeError("apiserver said no")
    assert value("sluice_reconciles_total", result="ok") == ok + 1
    assert value("sluice_reconciles_total", result="error") == err + 1
    assert value("sluice_reconcile_duration_seconds_count") == timed + 2


def test_decisions_and_query_errors_take_short_fixed_words() -> None:
    before = value("sluice_decisions_total", kind="scale_up")
    observability.decision("scale_up")
    assert value("sluice_decisions_total", kind="scale_up") == before + 1
    observability.query_error("latency")
    assert value("sluice_prometheus_query_errors_total", signal="latency") >= 1
    # Object names as label values would grow the series without bound.
    for bad in ("team-a/resnet50", "Scale Up", "", "x" * 80):
        with pytest.raises(ValueError):
            observability.decision(bad)
        with pytest.raises(ValueError):
            observability.query_error(bad)


def test_metric_names_are_the_exported_families() -> None:
    exported = {
        m.name + ("_total" if m.type == "counter" else "_info" if m.type == "info" else "")
        for m in REGISTRY.collect()
        if m.name.startswith("sluice_")
    }
    assert exported == set(observability.METRIC_NAMES)


def test_metrics_endpoint_serves_and_frees_its_port() -> None:
    assert observability.serve(0) is None  # 0: off
    port = free_port()
    server = observability.serve(port)
    assert server is not None and server.port == port
    try:
        observability.set_leader(True)
        status, text = http_get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert "sluice_leader 1.0" in text and "sluice_build_info{" in text
    finally:
        observability.set_leader(False)
        server.close()
    assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 0


def test_snake_case_names_for_labels() -> None:
    from sluice import observability

    assert observability.snake("ScaledUp") == "scaled_up"
    assert observability.snake("CanaryStarted") == "canary_started"
    assert observability.snake("p99LatencyMs") == "p99_latency_ms"
    assert observability.snake("errorRate") == "error_rate"
