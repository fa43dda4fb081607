"""The loop closed on the local data plane: Sluice's pods run real tritonservers.

A cluster with the data plane (hack/localcluster.py --dataplane): every pod Sluice
renders runs its Triton container as a local process, its probes drive readiness,
the gateway routes over ready EndpointSlices and Prometheus scrapes the pods with
the PodMonitor's labels. Load goes through the gateway with tritonclient.

Asserts the loop's outcomes, not today's policy numbers: load above one replica's
capacity -> Sluice scales up -> the added pods are ready and take traffic -> p99
falls back under the target, with no failed request; a fixed A/B split is carried
by the gateway within a few percent of its weights.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    models = tmp_path_factory.mktemp("models")
    hack_module("models").write_model(models / "models" / "triton", "m", {1: SERVICE_MS})
    lc = localcluster_module()
    cluster = lc.Cluster(root=REPO / ".cluster-dataplane-test", dataplane=True, models=models)
    cluster.up()
    try:
        install_crds(Kubectl(cluster.kubeconfig))
        yield cluster
    finally:
        cluster.down()
    assert cluster.strays() == []


def isvc(ns: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": ns},
        "spec": {
            "model": {"name": "m", "repository": "s3://models/triton", "version": 1},
            "gpu": {"count": 0},
            "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
            **spec,
        },
    }


def test_load_over_capacity_scales_up_and_p99_comes_back_under_target(
    dataplane: Any, tmp_path: Path
) -> None:
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    prom = PrometheusServer.__new__(PrometheusServer)
    prom.port = int(urls["prometheus"].rsplit(":", 1)[1])
    load_mod = hack_module("load")
    with temp_namespace(kubectl, "loop") as ns:
        scaling = {
            "mode": "Auto",
            "minReplicas": 1,
            "maxReplicas": 3,
            "target": {"metric": "p99LatencyMs", "value": TARGET_MS},
            "warmupSeconds": 30,
        }
        kubectl.apply(isvc(ns, replicas=1, scaling=scaling))
        view = ClusterView(kubectl, ns, "m")
        with control_operator(dataplane.kubeconfig, ns, urls["prometheus"], tmp_path):
            until(
                lambda: view.condition("Ready").get("status") == "True",
                180,
                "the InferenceService Ready on a real tritonserver",
            )
            url = urls["gateway"].removeprefix("http://") + f"/{ns}/m"
            load = load_mod.Load(url, "m", rate=lambda t: RATE, workers=32)

            def served() -> bool:
                load.describe()  # the gateway routes to the ready pod
                return True

            until(served, 60, "the gateway to route to the ready pod", ignore=(Exception,))
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


def gateway_counts(url: str, ns: str, route: str) -> dict[str, int]:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/_gateway/stats", timeout=5) as r:
        rows = json.loads(r.read())
    out: dict[str, int] = {}
    for row in rows:
        if row["namespace"] == ns and row["route"] == route and row["code"] == 200:
            out[row["backend"]] = out.get(row["backend"], 0) + row["count"]
    return out


def test_fixed_ab_split_is_carried_by_the_gateway_within_a_few_percent(
    dataplane: Any, tmp_path: Path
) -> None:
    kubectl = Kubectl(dataplane.kubeconfig)
    urls = dataplane.urls()
    load_mod = hack_module("load")
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
            until(lambda: view.condition("Ready").get("status") == "True", 180, "Ready")
            load = load_mod.Load(
                urls["gateway"].removeprefix("http://") + f"/{ns}/m", "m", lambda t: 15.0, 16
            )
            load.wait_served()
            before = gateway_counts(urls["gateway"], ns, "m")
            load.start(40)
            load.join()
            after = gateway_counts(urls["gateway"], ns, "m")
        s = load.summary()
        assert s["errors"] == 0, s
        n = {b: after.get(b, 0) - before.get(b, 0) for b in ("m-main", "m-b")}
        total = sum(n.values())
        assert total >= 400, n
        share = n["m-b"] / total
        print(f"A/B split measured at the gateway: m-b {100 * share:.1f}% of {total} (weight 30%)")
        assert abs(share - 0.30) < 0.06, n
