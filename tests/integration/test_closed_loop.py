"""The loop closed on the local data plane: Sluice's pods run real tritonservers.

A cluster with the data plane (hack/localcluster.py --dataplane): every pod Sluice
renders runs its Triton container as a local process, its probes drive readiness,
the gateway routes over ready EndpointSlices and Prometheus scrapes the pods with
the PodMonitor's labels. Load goes through the gateway with tritonclient.

Asserts the loop's outcomes, not today's policy numbers: load above one replica's
capacity -> Sluice scales up -> the added pods are ready and take traffic -> p99
falls back under the target, with no failed request; a fixed A/B split is carried
by the gateway within a few percent of its weights; load that needs fewer replicas
than run -> Sluice scales down and not one request fails (the preStop drain); a
model version changed under load rolls pod by pod with no failed request, from a
repository ``s3://<bucket>/<path>`` served out of MODELS/<bucket>/<path>; a canary of a
slower version is rolled back and the gateway's measured split returns to stable.

One cluster for the module; each test its own namespace and operator. Service times
and rates leave each replica at most about half busy where no queue is wanted, so a
loaded machine slows requests without failing them.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fleet import ClusterView, control_operator
from tests.support.hack import hack_module
from tests.support.kube import REPO, Kubectl, localcluster_module, temp_namespace
from tests.support.operator import install_crds
from tests.support.prometheus import PrometheusServer
from tests.support.wait import until

pytestmark = pytest.mark.integration

SERVICE_MS = 40.0  # one request at a time: about 25 requests/s per replica
TARGET_MS = 250.0
RATE = 34.0  # above one replica's capacity, well within two


# A bucket of its own, a nested path: s3://acme-ml/prod/triton -> MODELS/acme-ml/prod/triton.
S3_BUCKET_REPO = "s3://acme-ml/prod/triton"
FAST_MS, SLOW_MS = 20.0, 120.0


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    models = tmp_path_factory.mktemp("models")
    write_model = hack_module("models").write_model
    write_model(models / "models" / "triton", "m", {1: SERVICE_MS})
    write_model(models / "models" / "triton", "c", {1: FAST_MS, 2: SLOW_MS})
    write_model(models / "acme-ml" / "prod" / "triton", "r", {1: FAST_MS, 2: FAST_MS})
    lc = localcluster_module()
    cluster = lc.Cluster(root=REPO / ".cluster-dataplane-test", dataplane=True, models=models)
    cluster.up()
    try:
        install_crds(Kubectl(cluster.kubeconfig))
        yield cluster
    finally:
        cluster.down()
    assert cluster.strays() == []


def isvc(
    ns: str,
    name: str = "m",
    repository: str = "s3://models/triton",
    version: int = 1,
    **spec: Any,
) -> dict[str, Any]:
    """A CPU-only InferenceService serving the model ``name`` (its own name too)."""
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": {"name": name, "repository": repository, "version": version},
            "gpu": {"count": 0},
            "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
            **spec,
        },
    }


# ------------------------------------------------------------------- helpers


def prometheus_at(urls: dict[str, str]) -> PrometheusServer:
    """The data plane's Prometheus (the cluster started it), for queries."""
    prom = PrometheusServer.__new__(PrometheusServer)
    prom.port = int(urls["prometheus"].rsplit(":", 1)[1])
    return prom


def load_on(urls: dict[str, str], ns: str, name: str, rate: float, workers: int = 16) -> Any:
    """A steady open-loop load on ``ns/name`` through the gateway, once it routes there."""
    url = urls["gateway"].removeprefix("http://") + f"/{ns}/{name}"
    load = hack_module("load").Load(url, name, rate=lambda t: rate, workers=workers)
    load.wait_served()
    return load


def pods(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    """The InferenceService's pod objects, terminating ones included."""
    items: list[dict[str, Any]] = kubectl.get(
        "pods", "-n", ns, "-l", f"sluice.dev/inferenceservice={name}"
    )["items"]
    return items


def pods_that_served(prom: PrometheusServer, ns: str, window: str = "10m") -> set[str]:
    """Pods of the namespace Triton counted a successful request for within ``window``
    (gone pods too: their series stay in Prometheus)."""
    q = f'max by (pod) (max_over_time(nv_inference_request_success{{namespace="{ns}"}}[{window}]))'
    return {r["metric"]["pod"] for r in prom.query(q) if float(r["value"][1]) > 0}


def gateway_counts(url: str, ns: str, route: str, code: int | None = None) -> dict[str, int]:
    """Requests the gateway forwarded on ``route`` per backend (answered ``code``, or any)."""
    with urllib.request.urlopen(url + "/_gateway/stats", timeout=5) as r:
        rows = json.loads(r.read())
    out: dict[str, int] = {}
    for row in rows:
        if row["namespace"] == ns and row["route"] == route and code in (None, row["code"]):
            out[row["backend"]] = out.get(row["backend"], 0) + row["count"]
    return out


def gateway_weights(url: str, ns: str, route: str) -> dict[str, int] | None:
    """The weights of the route's rule without header matches, as the gateway holds them."""
    with urllib.request.urlopen(url + "/_gateway/routes", timeout=5) as r:
        view = json.loads(r.read())
    for rule in view.get(f"{ns}/{route}") or []:
        if not any("headers" in m for m in rule["matches"]):
            return {k: int(v) for k, v in rule["weights"].items()}
    return None


def more_requests(load: Any, n: int, timeout: float, what: str) -> None:
    """Wait until the load has finished ``n`` more requests."""
    start = len(load.results)
    until(lambda: len(load.results) >= start + n, timeout, what)


def ready(view: ClusterView) -> bool:
    """The InferenceService's Ready condition: every wanted replica of every variant ready."""
    return view.condition("Ready").get("status") == "True"


def slo_scaling(**extra: Any) -> dict[str, Any]:
    """Latency-SLO autoscaling of one to three replicas, p99 under TARGET_MS."""
    return {
        "mode": "Auto",
        "minReplicas": 1,
        "maxReplicas": 3,
        "target": {"metric": "p99LatencyMs", "value": TARGET_MS},
        **extra,
    }


def test_load_over_capacity_scales_up_and_p99_comes_back_under_target(
    dataplane: Any, tmp_path: Path
) -> None:
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    prom = prometheus_at(urls)
    with temp_namespace(kubectl, "loop") as ns:
        kubectl.apply(isvc(ns, replicas=1, scaling=slo_scaling(warmupSeconds=30)))
        view = ClusterView(kubectl, ns, "m")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(lambda: ready(view), 180, "the InferenceService Ready on a real tritonserver")
            load = load_on(urls, ns, "m", RATE, workers=32)
            load.start(240)
            try:
                until(lambda: (view.replicas() or 0) > 1, 120, "Sluice to scale up under load")
                scaled_at = load.elapsed()

                def pods_serving() -> int:
                    q = f'sum by (pod) (nv_inference_request_success{{namespace="{ns}"}})'
                    return len([r for r in prom.query(q) if float(r["value"][1]) > 0])

                until(lambda: pods_serving() >= 2, 120, "the added pods to take traffic")

                def recovered() -> bool:
                    now = load.elapsed()
                    iv = load.interval(now - 15, now)
                    return bool(iv.rate > RATE * 0.7 and iv.p99 < TARGET_MS)

                until(recovered, 150, "p99 back under the target", interval=2)
                before = load.interval(max(0.0, scaled_at - 15), scaled_at)
                after = load.interval(load.elapsed() - 15, load.elapsed())
            finally:
                load.stop()
            s = load.summary()
            print(f"p99 before scale-up {before.p99:.0f} ms, after {after.p99:.0f} ms; {s}")
            assert s["errors"] == 0, s
            assert before.p99 > TARGET_MS
            assert after.p99 < TARGET_MS
            assert view.events("ScaledUp")


def test_fixed_ab_split_is_carried_by_the_gateway_within_a_few_percent(
    dataplane: Any, tmp_path: Path
) -> None:
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    with temp_namespace(kubectl, "ab") as ns:
        kubectl.apply(
            isvc(
                ns,
                replicas=1,
                variants=[{"name": "b", "weight": 30, "model": {"version": 1}}],
                router={"gateway": {"name": "local"}},
            )
        )
        view = ClusterView(kubectl, ns, "m")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(lambda: ready(view), 180, "Ready")
            load = load_on(urls, ns, "m", 15.0)
            before = gateway_counts(urls["gateway"], ns, "m", 200)
            load.start(40)
            load.join()
            after = gateway_counts(urls["gateway"], ns, "m", 200)
        s = load.summary()
        assert s["errors"] == 0, s
        n = {b: after.get(b, 0) - before.get(b, 0) for b in ("m-main", "m-b")}
        total = sum(n.values())
        assert total >= 400, n
        share = n["m-b"] / total
        print(f"A/B split measured at the gateway: m-b {100 * share:.1f}% of {total} (weight 30%)")
        assert abs(share - 0.30) < 0.06, n


# ----------------------------------------------------------------- scale-down

DOWN_RATE = 8.0  # a third of one replica's capacity at 40 ms per request


def test_scale_down_under_load_loses_no_request(dataplane: Any, tmp_path: Path) -> None:
    """Three replicas serving load one replica holds; Sluice removes two while the load
    goes on, and the preStop drain lets the gateway stop sending to them first."""
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    prom = prometheus_at(urls)
    with temp_namespace(kubectl, "down") as ns:
        # Off first: three replicas until each one serves the load.
        scaling = slo_scaling(mode="Off", scaleDown={"stabilizationSeconds": 5})
        kubectl.apply(isvc(ns, replicas=3, scaling=scaling))
        view = ClusterView(kubectl, ns, "m")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(lambda: ready(view), 240, "three replicas Ready on real tritonservers")
            load = load_on(urls, ns, "m", DOWN_RATE)
            load.start(400)
            try:
                until(lambda: len(pods_that_served(prom, ns)) == 3, 90, "all three to serve")
                view.patch_spec({"scaling": {"mode": "Auto"}})
                until(lambda: view.replicas() == 1, 150, "Sluice to scale down to one replica")
                until(
                    lambda: len(pods(kubectl, ns, "m")) == 1,
                    150,
                    "the removed pods drained, stopped and gone",
                )
                more_requests(load, int(5 * DOWN_RATE), 60, "the survivor to go on serving")
            finally:
                load.stop()
            served = pods_that_served(prom, ns)
        s = load.summary()
        downs = [e["message"] for e in view.events("ScaledDown")]
        print(f"scale-down under load: {s}; pods that served {sorted(served)}; {downs}")
        assert s["errors"] == 0, s
        assert s["requests"] >= 200, s
        assert len(served) == 3  # the removed pods had traffic when they were removed
        assert downs and all(m.startswith("main:") for m in downs)
        assert view.scaling()["desiredReplicas"] == 1


# ------------------------------------------------------------- rolling update

ROLL_RATE = 15.0  # each of two replicas at 20 ms: under a fifth busy


def test_rolling_version_update_from_an_s3_bucket_loses_no_request(
    dataplane: Any, tmp_path: Path
) -> None:
    """The model version of a running service changed under load: new pods ready before
    old ones go, each old one drained; no failed request, version 2 answers at the end.
    The repository is ``s3://acme-ml/prod/triton``: the folder MODELS/acme-ml/prod/triton/r."""
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    with temp_namespace(kubectl, "roll") as ns:
        kubectl.apply(isvc(ns, "r", repository=S3_BUCKET_REPO, replicas=2))
        view = ClusterView(kubectl, ns, "r")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(lambda: ready(view), 240, "v1 Ready")
            first = {p["metadata"]["name"] for p in pods(kubectl, ns, "r")}
            (arg,) = {
                a
                for p in pods(kubectl, ns, "r")
                for a in p["spec"]["containers"][0]["args"]
                if a.startswith("--model-repository=")
            }
            load = load_on(urls, ns, "r", ROLL_RATE)
            load.start(400)
            try:
                more_requests(load, int(3 * ROLL_RATE), 60, "version 1 to serve the load")
                view.patch_spec({"model": {"version": 2}})

                def rolled() -> bool:
                    ps = pods(kubectl, ns, "r")
                    return (
                        len(ps) == 2
                        and not {p["metadata"]["name"] for p in ps} & first
                        and all(
                            p["metadata"]["labels"]["sluice.dev/model-version"] == "2" for p in ps
                        )
                        and ready(view)
                    )

                until(rolled, 240, "both pods replaced by version 2 and the old ones gone")

                def v2_only() -> dict[str, int] | None:
                    now = load.elapsed()
                    v = load.interval(now - 5, now).versions
                    return v if set(v) == {"2"} and v["2"] >= 3 * ROLL_RATE else None

                last = until(v2_only, 60, "only version 2 answering")
            finally:
                load.stop()
        s = load.summary()
        print(f"rolling update under load: {s}; last 5 s {last}")
        assert arg == f"--model-repository={S3_BUCKET_REPO}"  # as rendered; served from MODELS
        assert s["errors"] == 0, s
        assert s["versions"].get("1", 0) > 0 and s["versions"].get("2", 0) > 0, s
        assert view.status()["variants"][0]["version"] == 2


# --------------------------------------------------------- canary rolled back

# The canary's and the baseline's 30% each: 6 req/s, 30 requests per 5 s rate window
# (a window with fewer than 20 on a side adds no evidence). The canary at 120 ms is
# then about 70% busy, main at 20 ms under 20%.
CANARY_RATE = 20.0
CANARY_ROLLOUT: dict[str, Any] = {
    "strategy": "Canary",
    "steps": [30, 45],
    "interval": "3s",
    "analysis": {"maxLatencyRatio": 2.5, "minSamples": 50, "progressDeadline": "3m"},
}


def test_slower_canary_is_rolled_back_and_the_gateway_returns_to_stable(
    dataplane: Any, tmp_path: Path
) -> None:
    """Version 2 is six times slower: the canary gets its step, the analysis fails it,
    the route goes back to stable, and what the gateway forwards follows."""
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    gw = urls["gateway"]
    main, canary, base = "c-main", "c-canary", "c-baseline"
    with temp_namespace(kubectl, "canary") as ns:
        kubectl.apply(
            isvc(ns, "c", replicas=1, router={"gateway": {"name": "local"}}, rollout=CANARY_ROLLOUT)
        )
        view = ClusterView(kubectl, ns, "c")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(
                lambda: (
                    ready(view)
                    and view.rollout().get("phase") == "Idle"
                    and gateway_weights(gw, ns, "c") == {main: 100}
                ),
                240,
                "version 1 stable, Ready, the gateway routing all to main",
            )
            load = load_on(urls, ns, "c", CANARY_RATE)
            load.start(400)
            try:
                more_requests(load, int(3 * CANARY_RATE), 60, "version 1 to serve the load")
                view.patch_spec({"model": {"version": 2}})
                # (counted, not watched: a clear regression may fail within seconds)
                until(
                    lambda: (
                        min(gateway_counts(gw, ns, "c").get(b, 0) for b in (canary, base)) >= 20
                    ),
                    180,
                    "the gateway to send the canary and the baseline their share",
                )
                rolled = until(
                    lambda: (r := view.rollout()).get("phase") == "RolledBack" and r,
                    180,
                    "the slow canary to be rolled back",
                )
                until(
                    lambda: gateway_weights(gw, ns, "c") == {main: 100},
                    60,
                    "the gateway back on stable only",
                )
                before = gateway_counts(gw, ns, "c")
                more_requests(load, int(10 * CANARY_RATE), 60, "traffic after the rollback")
                after = gateway_counts(gw, ns, "c")
                until(lambda: view.deployment("canary") is None, 90, "the canary removed")
                more_requests(load, int(2 * CANARY_RATE), 60, "traffic after the removal")
            finally:
                load.stop()
        s = load.summary()
        split = {b: after.get(b, 0) - before.get(b, 0) for b in after}
        print(
            f"canary rolled back: {rolled['message']}; gateway before the rollback {before}, "
            f"after it {split}; load {s}"
        )
        # Traffic followed the route: the canary had its share, then nothing.
        assert before.get(canary, 0) > 0 and before.get(base, 0) > 0, before
        assert split.get(main, 0) >= 8 * CANARY_RATE and set(split) - {main} <= {canary, base}
        assert split.get(canary, 0) == 0 and split.get(base, 0) == 0, split
        assert s["errors"] == 0, s
        assert s["versions"].get("2", 0) > 0  # the canary answered
        # The verdict with its numbers, in status and Events.
        assert rolled["canaryWeight"] == 0
        assert rolled["stable"]["version"] == 1 and rolled["canary"]["version"] == 2
        assert "LatencyMs Fail" in rolled["message"] and "vs baseline" in rolled["message"]
        failed = [x for x in rolled["analysis"]["signals"] if x["verdict"] == "Fail"]
        assert failed and all(x["samples"] > 0 and x["lower"] > 2.5 for x in failed), failed
        cond = view.condition("Canary")
        assert cond["status"] == "False" and cond["reason"] == "RolledBack"
        assert [e for e in view.events("AnalysisVerdict") if "Fail" in e["message"]]
        assert view.events("CanaryRolledBack")
        main_dep = view.deployment("main")
        assert main_dep is not None
        assert main_dep["metadata"]["labels"]["sluice.dev/model-version"] == "1"
