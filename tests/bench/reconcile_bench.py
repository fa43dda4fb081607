"""Reconcile cost on the real local cluster.

Compares, in one run, a reconcile that finds nothing to change (it reads and
writes nothing) with one that must re-apply a child someone edited: the time
and the number of API requests of each, and their ratio.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from sluice.reconcile.isvc import Reconciler
from sluice.reconcile.kube import Kube, load_config
from tests.support.kube import Kubectl, local_cluster, temp_namespace
from tests.support.operator import install_crds
from tests.support.wait import until

ISVC = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "bench"},
    "spec": {
        "model": {"name": "m", "repository": "s3://b/p", "version": 1},
        "replicas": 2,
        "router": {"gateway": {"name": "gw"}},
        "variants": [{"name": "b", "weight": 20, "model": {"version": 2}}],
    },
}


class CountingKube(Kube):
    """Counts API requests by wrapping the client's REST call."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.requests: dict[str, int] = {}
        original = self.api.rest_client.request

        def counted(method: str, url: str, *a: Any, **kw: Any) -> Any:
            self.requests[method] = self.requests.get(method, 0) + 1
            return original(method, url, *a, **kw)

        self.api.rest_client.request = counted

    def reset(self) -> dict[str, int]:
        out, self.requests = self.requests, {}
        return out


def run(out: Path) -> dict[str, Any]:
    with local_cluster() as kubeconfig:
        kubectl = Kubectl(kubeconfig)
        install_crds(kubectl)
        with temp_namespace(kubectl, "bench") as ns:
            obj = json.loads(json.dumps(ISVC))
            obj["metadata"]["namespace"] = ns
            kubectl.apply(obj)
            kube = CountingKube(load_config(str(kubeconfig)))
            rec = Reconciler(kube)
            rec.reconcile(ns, "bench")
            until(
                lambda: (
                    (kubectl.get("deployment", "bench-main", "-n", ns) or {})
                    .get("status", {})
                    .get("readyReplicas")
                    == 2
                ),
                60,
                "bench ready",
            )
            rec.reconcile(ns, "bench")
            kube.reset()

            noop_t, noop_req = [], []
            for _ in range(15):
                t0 = time.perf_counter()
                rec.reconcile(ns, "bench")
                noop_t.append(time.perf_counter() - t0)
                noop_req.append(kube.reset())

            fix_t, fix_req = [], []
            for i in range(15):
                kubectl.run(
                    "label",
                    "deployment",
                    "bench-b",
                    "-n",
                    ns,
                    f"sluice.dev/variant=tampered{i}",
                    "--overwrite",
                )
                kube.reset()
                t0 = time.perf_counter()
                rec.reconcile(ns, "bench")
                fix_t.append(time.perf_counter() - t0)
                fix_req.append(kube.reset())
    noop = _summary(noop_t, noop_req)
    fix = _summary(fix_t, fix_req)
    result = {
        "children": "2 Deployments, 3 Services, 1 HTTPRoute",
        "noop": noop,
        "reapply_one_child": fix,
        "time_ratio_reapply_to_noop": fix["median_ms"] / noop["median_ms"],
    }
    _plot(out, noop_t, fix_t)
    return result


def _summary(times: list[float], reqs: list[dict[str, int]]) -> dict[str, Any]:
    writes = [sum(v for k, v in r.items() if k != "GET") for r in reqs]
    return {
        "median_ms": statistics.median(times) * 1000,
        "p90_ms": sorted(times)[int(len(times) * 0.9) - 1] * 1000,
        "requests_median": statistics.median(sum(r.values()) for r in reqs),
        "writes_max": max(writes),
        "writes_min": min(writes),
    }


def _plot(out: Path, noop: list[float], fix: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.boxplot([[t * 1000 for t in noop], [t * 1000 for t in fix]])
    ax.set_xticks([1, 2], ["nothing to change", "one child edited"])
    ax.set_ylabel("reconcile, ms")
    ax.set_title("Reconcile of one InferenceService (real apiserver)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "reconcile.png", dpi=110)
    plt.close(fig)
