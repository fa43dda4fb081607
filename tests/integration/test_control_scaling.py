"""Latency-SLO autoscaling with real parts.

A real tritonserver stands in for the main variant's pods, a real Prometheus
scrapes it with the labels a PodMonitor would add, a load generator pushes its
tail latency up, and the real operator (``sluice run``) drives the Deployment
in the local cluster.

(1) Load pushes p99 over the target: the Deployment's replicas rise, one step
    at a time (scaleUp.maxStep 1), to maxReplicas, each decision explained with
    the demand policy's numbers; load stops: they fall back to minReplicas after
    the scale-down stabilisation.
(4) Prometheus stops mid-run: replicas do not move (not even though the load
    stopped too), MetricsAvailable=False says why; Prometheus starts again:
    control resumes and scales down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.api.schema import parse_time
from sluice.api.v1alpha1 import InferenceServiceStatus
from tests.support.fleet import ClusterView, Fleet, control_operator, isvc_manifest
from tests.support.kube import Kubectl, temp_namespace
from tests.support.load import Load
from tests.support.prometheus import PrometheusServer
from tests.support.triton import free_port
from tests.support.wait import never, until

NAME = "m"
TARGET_MS = 50.0
SCALING: dict[str, Any] = {
    "mode": "Auto",
    "minReplicas": 1,
    "maxReplicas": 3,
    "target": {"metric": "p99LatencyMs", "value": TARGET_MS},
    "warmupSeconds": 30,
    "scaleUp": {"stabilizationSeconds": 0, "maxStep": 1},
    "scaleDown": {"stabilizationSeconds": 3, "maxStep": 1},
}


@pytest.fixture
def ns(kubectl: Kubectl, crds: None) -> Iterator[str]:
    with temp_namespace(kubectl, "control") as name:
        yield name


def scaled_service(
    kubectl: Kubectl, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> ClusterView:
    # 20 ms per request, one request at a time: four concurrent clients queue.
    fleet.start("main", version=1, sleep_ms=20)
    prometheus.set_targets(fleet.targets(ns, NAME))
    kubectl.apply(isvc_manifest(ns, NAME, 1, replicas=1, scaling=SCALING))
    return ClusterView(kubectl, ns, NAME)


def operator_metric(port: int, name: str, labels: str) -> float:
    """A counter of the operator's own /metrics, 0 when the series does not exist yet."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_idle_at_min(view: ClusterView) -> None:
    """Metrics flow, the service is idle at minReplicas and says so."""
    until(
        lambda: (
            view.condition("MetricsAvailable").get("status") == "True"
            and view.scaling().get("reason", "").startswith("AtMinReplicas")
            and view.replicas() == 1
        ),
        60,
        "the idle service at minReplicas with metrics available",
    )


def test_tail_latency_over_target_scales_up_and_idle_scales_back_down(
    kubectl: Kubectl, kubeconfig: Path, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> None:
    view = scaled_service(kubectl, ns, fleet, prometheus)
    main = fleet.servers["main"]
    port = free_port()
    with control_operator(kubeconfig, ns, prometheus.url, fleet.dir, metrics_port=port):
        wait_idle_at_min(view)
        seen: list[int] = []

        def at(n: int) -> bool:
            r = view.replicas()
            if r is not None and (not seen or seen[-1] != r):
                seen.append(r)
            return r == n

        with Load(NAME, {"main": main.url}, concurrency=4) as load:
            until(lambda: at(3), 90, "replicas to rise to maxReplicas under load")
            decision = view.scaling()
            assert load.sent["main"] > 0 and not load.failed
        # One step at a time (scaleUp.maxStep 1), never past the maximum.
        assert seen == [1, 2, 3]
        assert decision["applied"] is True
        assert decision["metric"] == "p99LatencyMs" and decision["target"] == TARGET_MS
        assert decision["observed"] > TARGET_MS * 1.1
        assert decision["reason"].split(":")[0] in ("ScaleUp", "AtMaxReplicas", "WarmingUp")
        # Policy Demand explains its sizing: the demand, one replica's capacity by the
        # M/G/1 model from Triton's compute time, the latency it predicts.
        assert decision["demand"] > 0 and decision["capacityPerReplica"] > 0
        assert "M/G/1" in decision["reason"] and "ms per execution" in decision["reason"]
        assert decision["signals"]["computeTimeMs"] > 0
        # The same counters over the last scrape interval (irate), quoted when the
        # pods batch more there than over the window.
        assert decision["signals"]["batchSizeNow"] >= 1
        assert decision["signals"]["computeTimeNowMs"] > 0
        # Four clients queue on one server: with one pod ready, three waiting
        # requests are more than the target's worth of work (3 x 20 ms > 50 ms),
        # an overload; status keeps when the last one was.
        overloaded_at = parse_time(decision.get("overloadedAt"))
        assert overloaded_at is not None and overloaded_at <= time.time() + 1
        ups = view.events("ScaledUp")
        assert len(ups) >= 2 and all("p99LatencyMs" in e["message"] for e in ups)
        # The operator's own metrics count the decisions it explained.
        scaled_up = operator_metric(port, "sluice_decisions_total", 'kind="scaled_up"')
        assert scaled_up >= 2

        # Load stopped: request rate 0 is a value (idle), down after stabilisation.
        until(lambda: at(1), 90, "replicas to fall back to minReplicas")
        assert seen == [1, 2, 3, 2, 1]
        downs = view.events("ScaledDown")
        assert downs and all("no requests" in e["message"] for e in downs)
        st = view.status()
        assert st["replicas"] == 1
        signals = {s["variant"]: s for s in st["signals"]}
        assert signals["main"]["requestRate"] == 0
        # What the apiserver stored is exactly the typed status that was written.
        assert InferenceServiceStatus.from_dict(st).to_dict() == st


def test_prometheus_outage_freezes_replicas_and_control_resumes(
    kubectl: Kubectl, kubeconfig: Path, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> None:
    view = scaled_service(kubectl, ns, fleet, prometheus)
    main = fleet.servers["main"]
    port = free_port()
    try:
        with control_operator(kubeconfig, ns, prometheus.url, fleet.dir, metrics_port=port):
            wait_idle_at_min(view)
            with Load(NAME, {"main": main.url}, concurrency=4):
                until(lambda: view.replicas() == 3, 90, "replicas at maxReplicas under load")
                prometheus.stop()
            # Load is off as well: with data, the service would scale down within
            # seconds. Without data nothing moves, and the condition says why.
            cond = view.wait_metrics_query_failed()
            assert cond["reason"] == "QueryFailed"
            assert "unreachable" in cond["message"] and "frozen" in cond["message"]
            never(
                lambda: view.replicas() != 3 or view.scaling().get("desiredReplicas") != 3,
                10,  # three scale-down stabilisations and ten control cycles
                "replicas changed while Prometheus was down",
            )
            assert view.scaling()["reason"].startswith("MetricsUnavailable")
            assert view.events("MetricsUnavailable")
            errors = operator_metric(
                port, "sluice_prometheus_query_errors_total", 'signal="request_rate"'
            )
            assert errors >= 3

            prometheus.start()
            until(
                lambda: view.condition("MetricsAvailable").get("status") == "True",
                60,
                "MetricsAvailable=True after Prometheus is back",
            )
            until(lambda: view.replicas() == 1, 90, "control to resume and scale down")
            assert view.events("MetricsAvailable")
    finally:
        if not prometheus.running():
            prometheus.start()
