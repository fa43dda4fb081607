"""The local cluster is a real one: the scheduler honours GPUs, taints and GC works."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.kube import Kubectl, temp_namespace
from tests.support.wait import never, until

GPU_NODES = {"gpu-h100", "gpu-a100"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def pod_spec(gpus: int, tolerate: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "registry.invalid/none:1",
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {},
            }
        ]
    }
    if tolerate:
        spec["tolerations"] = [GPU_TOLERATION]
    return spec


def pods(kubectl: Kubectl, ns: str, selector: str) -> list[dict[str, Any]]:
    return kubectl.get("pods", "-n", ns, "-l", selector)["items"]


@pytest.fixture
def ns(kubectl: Kubectl):
    with temp_namespace(kubectl, "cluster") as name:
        yield name


def test_three_ready_nodes_two_with_eight_gpus(kubectl: Kubectl) -> None:
    nodes = {n["metadata"]["name"]: n for n in kubectl.get("nodes")["items"]}
    assert set(nodes) == GPU_NODES | {"cpu-0"}
    for name, n in nodes.items():
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", name
        gpus = n["status"]["allocatable"].get("nvidia.com/gpu")
        assert gpus == ("8" if name in GPU_NODES else None), name
    assert (
        nodes["gpu-h100"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    )
    assert (
        nodes["gpu-a100"]["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    )


def test_server_version_is_stamped(kubectl: Kubectl) -> None:
    import json

    v = json.loads(kubectl.run("version", "-o", "json").stdout)["serverVersion"]
    assert v["gitVersion"].startswith("v1.") and v["gitVersion"] != "v0.0.0"
    assert int(v["minor"]) >= 34


def test_gpu_deployment_runs_only_on_gpu_nodes_and_is_garbage_collected(
    kubectl: Kubectl, ns: str
) -> None:
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "gpu", "namespace": ns},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "gpu"}},
                "template": {
                    "metadata": {"labels": {"app": "gpu"}},
                    "spec": pod_spec(gpus=1, tolerate=True),
                },
            },
        }
    )

    def all_running() -> list[dict[str, Any]] | None:
        ps = pods(kubectl, ns, "app=gpu")
        ok = len(ps) == 4 and all(p["status"].get("phase") == "Running" for p in ps)
        return ps if ok else None

    running = until(all_running, 90, "4 GPU pods Running")
    assert {p["spec"]["nodeName"] for p in running} <= GPU_NODES

    kubectl.run("delete", "deployment", "gpu", "-n", ns, "--wait=false")
    until(
        lambda: (
            not kubectl.get("replicasets", "-n", ns)["items"] and not pods(kubectl, ns, "app=gpu")
        ),
        90,
        "the ReplicaSet and pods to be garbage-collected",
    )


def test_nine_gpus_stay_pending_with_failed_scheduling(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "greedy", "namespace": ns},
            "spec": pod_spec(gpus=9, tolerate=True),
        }
    )

    def failed_scheduling() -> list[dict[str, Any]]:
        evs = kubectl.get("events", "-n", ns, "--field-selector", "involvedObject.name=greedy")
        return [e for e in evs["items"] if e["reason"] == "FailedScheduling"]

    events = until(failed_scheduling, 60, "a FailedScheduling event")
    assert "nvidia.com/gpu" in events[0]["message"]
    pod = kubectl.get("pod", "greedy", "-n", ns)
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_pod_without_toleration_never_lands_on_gpu_node(kubectl: Kubectl, ns: str) -> None:
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "plain", "namespace": ns},
            "spec": {
                "replicas": 6,
                "selector": {"matchLabels": {"app": "plain"}},
                "template": {
                    "metadata": {"labels": {"app": "plain"}},
                    "spec": pod_spec(gpus=0, tolerate=False),
                },
            },
        }
    )
    running = until(
        lambda: (
            (ps := pods(kubectl, ns, "app=plain"))
            and len(ps) == 6
            and all(p["status"].get("phase") == "Running" for p in ps)
            and ps
        ),
        90,
        "6 plain pods Running",
    )
    assert {p["spec"]["nodeName"] for p in running} == {"cpu-0"}

    # A pod that needs a GPU but does not tolerate the taint is never placed.
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "intolerant", "namespace": ns},
            "spec": pod_spec(gpus=1, tolerate=False),
        }
    )
    never(
        lambda: (kubectl.get("pod", "intolerant", "-n", ns) or {}).get("spec", {}).get("nodeName"),
        5,
        "a GPU pod without the toleration was scheduled",
    )
