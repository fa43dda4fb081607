"""Metric-gated canary rollouts with real parts.

Three real tritonservers stand in for the pods of the main (stable), canary and
baseline (stable revision, the canary's share) variants; a real Prometheus
scrapes them with PodMonitor labels; the load
generator reads the HTTPRoute's weights from the cluster and sends each
variant that share of its requests; the real operator runs the rollout.

(2) A canary whose model is slow is rolled back: weight back to stable, the
    canary removed, the HTTPRoute on stable only, and status and Events say why.
(3) A good canary is promoted through every step; the old variant is gone and
    main serves the new version. Halfway, Prometheus is stopped: the weight
    holds and MetricsAvailable says why (4); then the operator itself is
    restarted; once Prometheus is back the new operator process resumes the
    rollout from status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sluice.api.v1alpha1 import InferenceServiceStatus
from tests.support.fleet import ClusterView, Fleet, control_operator, isvc_manifest
from tests.support.kube import Kubectl, temp_namespace
from tests.support.load import Load, RouteWeights
from tests.support.prometheus import PrometheusServer
from tests.support.wait import never, until

NAME = "m"
MAIN_SVC, CANARY_SVC, BASE_SVC = f"{NAME}-main", f"{NAME}-canary", f"{NAME}-baseline"
INTERVAL_S = 3
ROLLOUT: dict[str, Any] = {
    "strategy": "Canary",
    "steps": [20, 50],
    "interval": f"{INTERVAL_S}s",
    "analysis": {
        "maxLatencyRatio": 2.5,
        "maxErrorRate": 0.05,
        "minRequestRate": 1,
        "minSamples": 100,
        "progressDeadline": "3m",
    },
}
ROUTER = {"gateway": {"name": "inference-gw"}}
RATE = 40.0  # requests per second in total, split by the route's weights


@pytest.fixture
def ns(kubectl: Kubectl, crds: None) -> Iterator[str]:
    with temp_namespace(kubectl, "canary") as name:
        yield name


def stable_service(
    kubectl: Kubectl, ns: str, fleet: Fleet, prometheus: PrometheusServer, canary_sleep_ms: float
) -> ClusterView:
    """Version 1 deployed and stable; stand-ins for main (v1) and the coming canary (v2)."""
    fleet.start("main", version=1, sleep_ms=20)
    fleet.start("canary", version=2, sleep_ms=canary_sleep_ms)
    fleet.start("baseline", version=1, sleep_ms=20)
    prometheus.set_targets(fleet.targets(ns, NAME))
    kubectl.apply(isvc_manifest(ns, NAME, 1, replicas=2, router=ROUTER, rollout=ROLLOUT))
    return ClusterView(kubectl, ns, NAME)


def wait_stable_v1(view: ClusterView) -> None:
    until(
        lambda: (
            (r := view.rollout()).get("phase") == "Idle"
            and r.get("stable", {}).get("version") == 1
            and view.condition("Ready").get("status") == "True"
            and view.route_weights() == {MAIN_SVC: 100}
        ),
        60,
        "version 1 stable, Ready, all traffic on main",
    )


def canary_weights(history: list[dict[str, int]]) -> list[int]:
    """The canary's weight each time the route changed (absent: -1), deduplicated."""
    out: list[int] = []
    for w in history:
        x = w.get(CANARY_SVC, -1)
        if not out or out[-1] != x:
            out.append(x)
    return out


def test_slow_canary_is_rolled_back(
    kubectl: Kubectl, kubeconfig: Path, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> None:
    view = stable_service(kubectl, ns, fleet, prometheus, canary_sleep_ms=120)
    servers = {v: s.url for v, s in fleet.servers.items()}
    with (
        control_operator(kubeconfig, ns, prometheus.url, fleet.dir),
        RouteWeights(kubeconfig, ns, NAME) as weights,
        Load(NAME, servers, weights, concurrency=4, rate=RATE) as load,
    ):
        wait_stable_v1(view)
        view.patch_spec({"model": {"version": 2}})
        until(lambda: view.rollout().get("canaryWeight") == 20, 60, "the canary to get 20%")
        # The baseline (stable revision) gets the same share beside it.
        until(
            lambda: weights.weights == {MAIN_SVC: 60, CANARY_SVC: 20, BASE_SVC: 20},
            30,
            "canary and baseline at 20% each",
        )
        rolled = until(
            lambda: (r := view.rollout()).get("phase") == "RolledBack" and r,
            90,
            "the slow canary to be rolled back",
        )
        # Weight back to stable, the canary removed, stable untouched.
        # (as the load generator sees the route: it is what the traffic followed)
        until(lambda: weights.weights == {MAIN_SVC: 100}, 30, "route on stable only")
        until(lambda: view.deployment("canary") is None, 60, "the canary Deployment removed")
        until(lambda: view.deployment("baseline") is None, 60, "the baseline removed with it")
        main = view.deployment("main")
        assert main is not None
        assert main["metadata"]["labels"]["sluice.dev/model-version"] == "1"

        # Traffic followed the weights: the canary got its share, then nothing.
        after = load.snapshot()
        assert after.get("canary", 0) > 0
        until(
            lambda: load.snapshot().get("main", 0) > after.get("main", 0) + 40,
            30,
            "more requests after the rollback",
        )
        assert load.snapshot().get("canary", 0) == after.get("canary", 0)
    # Added without weight, given 20%, never more; weight 0 before it was removed.
    assert canary_weights(weights.history) == [-1, 0, 20, 0, -1]

    # Status and Events say why.
    assert rolled["canaryWeight"] == 0
    assert rolled["stable"]["version"] == 1 and rolled["canary"]["version"] == 2
    assert "LatencyMs Fail" in rolled["message"] and "vs baseline" in rolled["message"]
    assert "tolerance 150%" in rolled["message"] and "99% confidence" in rolled["message"]
    failed = [s for s in rolled["analysis"]["signals"] if s["verdict"] == "Fail"]
    assert failed and all(s["samples"] > 0 and s["lower"] > 2.5 for s in failed)
    cond = view.condition("Canary")
    assert cond["status"] == "False" and cond["reason"] == "RolledBack"
    assert [e for e in view.events("AnalysisVerdict") if "Fail" in e["message"]]
    assert view.events("CanaryRollingBack") and view.events("CanaryRolledBack")
    # Not retried while the spec still asks for the failed version.
    never(
        lambda: view.rollout().get("phase") != "RolledBack",
        3,
        "the failed version was retried",
    )


def test_good_canary_is_promoted_through_every_step_across_an_outage_and_a_restart(
    kubectl: Kubectl, kubeconfig: Path, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> None:
    view = stable_service(kubectl, ns, fleet, prometheus, canary_sleep_ms=20)
    servers = {v: s.url for v, s in fleet.servers.items()}
    try:
        with (
            RouteWeights(kubeconfig, ns, NAME) as weights,
            Load(NAME, servers, weights, concurrency=4, rate=RATE) as load,
        ):
            with control_operator(kubeconfig, ns, prometheus.url, fleet.dir):
                wait_stable_v1(view)
                view.patch_spec({"model": {"version": 2}})
                until(lambda: view.rollout().get("canaryWeight") == 20, 60, "the canary at 20%")

                # Prometheus goes away during the step: the weight must not move.
                prometheus.stop()
                cond = view.wait_metrics_query_failed()
                assert cond["reason"] == "QueryFailed" and "unreachable" in cond["message"]
                # (Prometheus answered until it stopped: the step may just have moved.)
                held = view.rollout()["canaryWeight"]
                assert held in (20, 50)
                never(
                    lambda: (
                        view.rollout().get("canaryWeight") != held
                        or view.route_weights()
                        != {MAIN_SVC: 100 - 2 * held, CANARY_SVC: held, BASE_SVC: held}
                    ),
                    3 * INTERVAL_S,
                    "the canary weight moved without metrics",
                )
                r = view.rollout()
                assert r["phase"] == "Progressing" and r["failedChecks"] == 0
                assert "inconclusive" in r["message"] and "unreachable" in r["message"]
            # The operator stops mid-rollout; Prometheus comes back; a new operator
            # process continues from status.rollout (it does not start over).
            prometheus.start()
            with control_operator(kubeconfig, ns, prometheus.url, fleet.dir):
                done = until(
                    lambda: (r := view.rollout()).get("phase") == "Succeeded" and r,
                    120,
                    "the canary to be promoted",
                )
                # (as the load generator sees the route: it is what the traffic followed)
                until(lambda: weights.weights == {MAIN_SVC: 100}, 30, "route on main only")
                until(lambda: view.deployment("canary") is None, 60, "the old canary removed")
                until(lambda: view.deployment("baseline") is None, 60, "the baseline removed")
                assert load.snapshot().get("canary", 0) > 0
    finally:
        if not prometheus.running():
            prometheus.start()

    assert done["stable"]["version"] == 2 and "canary" not in done
    st = view.status()  # stored exactly as the typed status was written
    assert InferenceServiceStatus.from_dict(st).to_dict() == st
    main = view.deployment("main")
    assert main is not None
    assert main["metadata"]["labels"]["sluice.dev/model-version"] == "2"
    # Every step, in order; the weight left the canary before the canary left.
    assert canary_weights(weights.history) == [-1, 0, 20, 50, 0, -1]
    moves = [e["message"] for e in view.events("CanaryWeight")]
    assert any("0% -> 20%" in m for m in moves) and any("20% -> 50%" in m for m in moves)
    assert any("50% -> 0%" in m for m in moves)
    assert view.events("CanaryPromoting") and view.events("CanaryPromoted")
    assert len(view.events("CanaryStarted")) == 1  # the restart did not start over
    assert done["failedChecks"] == 0
    assert view.condition("Canary")["status"] == "True"
    assert view.condition("MetricsAvailable")["status"] == "True"


def sluice(kubeconfig: Path, *args: str) -> str:
    """The `sluice` CLI (as `kubectl sluice` runs it) against the test cluster."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    r = subprocess.run(
        [sys.executable, "-m", "sluice.cli", *args], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_rollout_controls_pause_resume_abort_retry_promote(
    kubectl: Kubectl, kubeconfig: Path, ns: str, fleet: Fleet, prometheus: PrometheusServer
) -> None:
    view = stable_service(kubectl, ns, fleet, prometheus, canary_sleep_ms=20)
    servers = {v: s.url for v, s in fleet.servers.items()}
    with (
        control_operator(kubeconfig, ns, prometheus.url, fleet.dir),
        RouteWeights(kubeconfig, ns, NAME) as weights,
        Load(NAME, servers, weights, concurrency=4, rate=RATE),
    ):
        wait_stable_v1(view)
        sluice(kubeconfig, "pause", NAME, "-n", ns)
        view.patch_spec({"model": {"version": 2}})
        until(lambda: view.rollout().get("paused") is True, 60, "the rollout to be paused")
        never(lambda: view.rollout().get("canaryWeight", 0) > 0, 4, "a paused canary got traffic")
        sluice(kubeconfig, "resume", NAME, "-n", ns)
        until(lambda: view.rollout().get("canaryWeight") == 20, 60, "the resumed canary at 20%")

        sluice(kubeconfig, "abort", NAME, "-n", ns)
        rolled = until(
            lambda: (r := view.rollout()).get("phase") == "RolledBack" and r, 60, "aborted"
        )
        assert "aborted by request" in rolled["message"] and rolled["handled"]["abort"]
        until(lambda: view.deployment("canary") is None, 60, "the canary removed")

        sluice(kubeconfig, "retry", NAME, "-n", ns)
        until(lambda: view.rollout().get("canaryWeight") == 20, 60, "the retried canary at 20%")
        out = sluice(kubeconfig, "get", NAME, "-n", ns)
        assert "Phase:     Progressing" in out and "canary" in out and "CanaryStarted" in out

        sluice(kubeconfig, "promote", NAME, "-n", ns)
        done = until(
            lambda: (r := view.rollout()).get("phase") == "Succeeded" and r, 90, "promoted"
        )
    assert done["stable"]["version"] == 2
    assert any("promoted by request" in e["message"] for e in view.events("CanaryPromoting"))
    main = view.deployment("main")
    assert main is not None and main["metadata"]["labels"]["sluice.dev/model-version"] == "2"
