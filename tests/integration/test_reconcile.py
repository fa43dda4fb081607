"""The operator against a real apiserver: samples become Ready and stay as rendered."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.api.v1alpha1 import InferenceServiceStatus
from sluice.reconcile.desired import render_documents
from sluice.reconcile.isvc import Reconciler
from sluice.reconcile.kube import Kube, load_config
from tests.support.invalid_specs import ACCEPTED, CASES, Case
from tests.support.kube import Kubectl, temp_namespace
from tests.support.operator import running_operator
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "manifests" / "samples"
ISVC = "inferenceservices.sluice.dev"


def sample(name: str, ns: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((SAMPLES / name).read_text()) if d]
    for d in docs:
        if d["kind"] != "PersistentVolume":
            d["metadata"]["namespace"] = ns
        else:  # cluster-scoped: one per test namespace
            d["metadata"]["name"] = f"{d['metadata']['name']}-{ns}"
        if d["kind"] == "PersistentVolumeClaim":
            d["spec"]["volumeName"] = f"{d['spec']['volumeName']}-{ns}"
    return docs


def isvc(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = kubectl.get(ISVC, name, "-n", ns)
    return result


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def ready_and_current(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    obj = isvc(kubectl, ns, name)
    if not obj:
        return None
    st = obj.get("status") or {}
    current = st.get("observedGeneration") == obj["metadata"]["generation"]
    ok = condition(obj, "Ready").get("status") == "True" and current
    return obj if ok else None


def pods(kubectl: Kubectl, ns: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.get(
        "pods", "-n", ns, "-l", f"sluice.dev/inferenceservice={name}"
    )["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl, kubeconfig: Path, crds: None) -> Iterator[str]:
    with (
        temp_namespace(kubectl, "reconcile") as name,
        running_operator(kubeconfig, [name]),
    ):
        kubectl.apply(sample("model-store-pvc.yaml", name))
        yield name
    kubectl.run("delete", "pv", f"sluice-sample-model-store-{name}", "--wait=false", check=False)


@pytest.fixture(scope="module")
def samples_ready(kubectl: Kubectl, ns: str) -> dict[str, dict[str, Any]]:
    for f in ("resnet50-h100.yaml", "text-embed-cpu.yaml", "bert-ab.yaml"):
        kubectl.apply(sample(f, ns))
    return {
        name: until(lambda n=name: ready_and_current(kubectl, ns, n), 120, f"{name} Ready")
        for name in ("resnet50", "text-embed", "bert")
    }


# ------------------------------------------------------------------ apply-time


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_spec_is_rejected_at_apply(kubectl: Kubectl, crds: None, case: Case) -> None:
    obj = case.obj()
    obj["metadata"]["namespace"] = "default"
    r = kubectl.run("apply", "-f", "-", stdin=json.dumps(obj), check=False)
    assert r.returncode != 0, f"{case.id} was accepted"
    assert case.api_says in r.stderr, r.stderr
    assert isvc(kubectl, "default", obj["metadata"]["name"]) is None


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_valid_edge_case_is_accepted_at_apply(kubectl: Kubectl, crds: None, case: Case) -> None:
    obj = case.obj()
    obj["metadata"]["namespace"] = "default"
    r = kubectl.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(obj), check=False)
    assert r.returncode == 0, r.stderr
    # What Sluice renders from it is accepted too: the rules refuse no less than needed.
    children = [
        o
        for o in render_documents(yaml.safe_dump(obj), namespace="default")
        if o["kind"] in ("Deployment", "Service", "HTTPRoute")
    ]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": children})
    r = kubectl.run(
        "apply", "--server-side", "--dry-run=server", "-f", "-", stdin=body, check=False
    )
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------- reconcile


def test_samples_become_ready_with_status(samples_ready: dict[str, dict[str, Any]]) -> None:
    st = samples_ready["resnet50"]["status"]
    assert st["model"] == "resnet50" and st["version"] == 3
    assert st["ready"] == "2/2" and st["replicas"] == 2
    assert st["url"].startswith("http://resnet50.")
    assert st["selector"] == "sluice.dev/inferenceservice=resnet50,sluice.dev/variant=main"
    variants = {v["name"]: v for v in samples_ready["bert"]["status"]["variants"]}
    assert variants["main"]["version"] == 2 and variants["b"]["version"] == 3
    assert condition(samples_ready["bert"], "TrafficRouted")["status"] == "True"
    for obj in samples_ready.values():
        assert condition(obj, "SpecValid")["status"] == "True"
        assert condition(obj, "Progressing")["status"] == "False"
        # One timestamp format; and what the apiserver stored is exactly the typed
        # status the operator wrote (the CRD's schema pruned nothing).
        for c in obj["status"]["conditions"]:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", c["lastTransitionTime"])
        assert InferenceServiceStatus.from_dict(obj["status"]).to_dict() == obj["status"]


def test_h100_sample_lands_only_on_the_h100_node(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    ps = pods(kubectl, ns, "resnet50")
    assert len(ps) == 2
    assert {p["spec"]["nodeName"] for p in ps} == {"gpu-h100"}


def test_cpu_sample_lands_only_on_the_cpu_node(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    ps = pods(kubectl, ns, "text-embed")
    assert ps and {p["spec"]["nodeName"] for p in ps} == {"cpu-0"}
    limits = ps[0]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in limits


def test_ab_route_splits_by_declared_weights(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    route = kubectl.get("httproutes.gateway.networking.k8s.io", "bert", "-n", ns)
    backends = route["spec"]["rules"][-1]["backendRefs"]
    assert {b["name"]: b["weight"] for b in backends} == {"bert-main": 80, "bert-b": 20}


def test_edits_to_a_child_deployment_are_reverted(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    patch = {
        "metadata": {"labels": {"sluice.dev/variant": "tampered"}},
        "spec": {
            "replicas": 5,
            "template": {
                "spec": {"containers": [{"name": "triton", "image": "evil/triton:latest"}]}
            },
        },
    }
    kubectl.run(
        "patch",
        "deployment",
        "resnet50-main",
        "-n",
        ns,
        "--type=strategic",
        "-p",
        json.dumps(patch),
    )

    def restored() -> bool:
        d = kubectl.get("deployment", "resnet50-main", "-n", ns)
        return (
            d["spec"]["replicas"] == 2
            and d["metadata"]["labels"]["sluice.dev/variant"] == "main"
            and d["spec"]["template"]["spec"]["containers"][0]["image"].startswith(
                "nvcr.io/nvidia/tritonserver:"
            )
        )

    until(restored, 60, "the operator to put the Deployment back")
    until(lambda: ready_and_current(kubectl, ns, "resnet50"), 90, "resnet50 Ready again")


def test_deleted_child_service_is_recreated(kubectl: Kubectl, ns: str, samples_ready: dict) -> None:
    kubectl.run("delete", "service", "text-embed-main", "-n", ns)
    until(
        lambda: kubectl.get("service", "text-embed-main", "-n", ns),
        60,
        "the variant Service to be recreated",
    )


def test_reconcile_with_nothing_to_change_writes_nothing(
    kubectl: Kubectl, kubeconfig: Path, ns: str, samples_ready: dict
) -> None:
    until(lambda: ready_and_current(kubectl, ns, "bert"), 60, "bert Ready")

    def versions() -> dict[str, str]:
        out = {}
        for kind in (ISVC, "deployments", "services", "httproutes.gateway.networking.k8s.io"):
            for o in (
                kubectl.get(kind, "-n", ns, "-l", "app.kubernetes.io/instance=bert")["items"]
                if kind != ISVC
                else [isvc(kubectl, ns, "bert")]
            ):
                assert o is not None
                out[f"{kind}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
        return out

    # Settle: the running operator may still be finishing a cycle.
    before = until(
        lambda: (v := versions()) == versions() and v, 30, "a quiet moment", interval=1.0
    )
    reconciler = Reconciler(Kube(load_config(str(kubeconfig))))
    for _ in range(3):
        reconciler.reconcile(ns, "bert")
    assert versions() == before
    assert len(before) == 7  # the isvc, 2 Deployments, 3 Services and the HTTPRoute
    assert any(k.startswith("httproutes") for k in before)


def test_kubectl_scale_sets_spec_replicas(kubectl: Kubectl, ns: str, samples_ready: dict) -> None:
    kubectl.run("scale", f"{ISVC}/text-embed", "-n", ns, "--replicas=3")
    obj = isvc(kubectl, ns, "text-embed")
    assert obj is not None and obj["spec"]["replicas"] == 3
    until(
        lambda: kubectl.get("deployment", "text-embed-main", "-n", ns)["spec"]["replicas"] == 3,
        60,
        "the Deployment to follow kubectl scale",
    )
    obj = until(lambda: ready_and_current(kubectl, ns, "text-embed"), 90, "3 replicas Ready")
    assert obj["status"]["replicas"] == 3
    scale = json.loads(
        kubectl.run(
            "get",
            "--raw",
            f"/apis/sluice.dev/v1alpha1/namespaces/{ns}/inferenceservices/text-embed/scale",
        ).stdout
    )
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3


def test_version_change_rolls_pods_to_the_new_version(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    kubectl.run(
        "patch",
        ISVC,
        "resnet50",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": {"version": 4}}}),
    )
    obj = until(
        lambda: (
            (o := ready_and_current(kubectl, ns, "resnet50")) and o["status"]["version"] == 4 and o
        ),
        120,
        "resnet50 Ready on version 4",
    )
    assert obj["status"]["ready"] == "2/2"
    ps = pods(kubectl, ns, "resnet50")
    assert {p["metadata"]["labels"]["sluice.dev/model-version"] for p in ps} == {"4"}


def test_deleting_the_inferenceservice_removes_every_child(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    kubectl.run("delete", ISVC, "bert", "-n", ns, "--wait=true", "--timeout=60s")

    def leftovers() -> list[str]:
        out = []
        for kind in (
            "deployments",
            "replicasets",
            "pods",
            "services",
            "httproutes.gateway.networking.k8s.io",
        ):
            items = kubectl.get(kind, "-n", ns, "-l", "sluice.dev/inferenceservice=bert")["items"]
            out += [f"{kind}/{i['metadata']['name']}" for i in items]
        return out

    until(lambda: not leftovers(), 90, "every child of bert to be gone")


# --------------------------------------------------------- bad input, no loss


def test_unschedulable_pods_are_explained_in_the_ready_condition(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    obj = sample("text-embed-cpu.yaml", ns)[0]
    obj["metadata"]["name"] = "no-claim"
    obj["spec"]["model"]["repository"] = "pvc://missing-claim/triton"
    kubectl.apply(obj)

    def explained() -> str | None:
        c = condition(isvc(kubectl, ns, "no-claim"), "Ready")
        msg = str(c.get("message", ""))
        return msg if c.get("status") == "False" and "missing-claim" in msg else None

    msg = until(explained, 60, "Ready=False naming the missing claim")
    assert "main 0/1 ready (version 1): pod no-claim-main-" in msg
    kubectl.run("delete", ISVC, "no-claim", "-n", ns)


def test_stored_invalid_spec_becomes_a_condition_and_nothing_is_lost(
    kubectl: Kubectl, ns: str, samples_ready: dict
) -> None:
    """An object stored before a CRD upgrade tightened a rule is not crash-looped on.

    The CRD is installed without its CEL rules for a moment (as an older CRD
    would be), an object that breaks one is stored, and the rules come back.
    The operator must report the problem in status, leave the running fleet
    as it was, and serve again once the spec is fixed.
    """
    crd = kubectl.get("crd", ISVC)
    loose = copy.deepcopy(crd)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        loose["metadata"].pop(key, None)
    loose.pop("status", None)
    spec_schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    _strip_rules(spec_schema)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(loose))
    try:
        good = sample("text-embed-cpu.yaml", ns)[0]
        good["metadata"]["name"] = "legacy"
        kubectl.apply(good)
        until(lambda: ready_and_current(kubectl, ns, "legacy"), 90, "legacy Ready")
        deployment_before = kubectl.get("deployment", "legacy-main", "-n", ns)

        bad = copy.deepcopy(good)
        bad["spec"]["scaling"] = {"minReplicas": 4, "maxReplicas": 2, "target": {"value": 50}}
        kubectl.apply(bad)  # accepted: the loose CRD has no CEL rules
    finally:
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))

    def invalid() -> dict[str, Any] | None:
        o = isvc(kubectl, ns, "legacy")
        c = condition(o, "SpecValid")
        current = o and o["status"].get("observedGeneration") == o["metadata"]["generation"]
        return o if c.get("status") == "False" and current else None

    obj = until(invalid, 60, "SpecValid=False on the stored invalid object")
    assert "scaling.minReplicas must be <= scaling.maxReplicas" in obj["status"]["specError"]
    assert condition(obj, "Ready")["reason"] == "InvalidSpec"
    events = kubectl.get(
        "events", "-n", ns, "--field-selector", "involvedObject.name=legacy,reason=InvalidSpec"
    )["items"]
    assert events and "minReplicas" in events[0]["message"]
    # Nothing lost: the fleet keeps running as it was.
    deployment_after = kubectl.get("deployment", "legacy-main", "-n", ns)
    assert deployment_after["metadata"]["generation"] == deployment_before["metadata"]["generation"]
    assert deployment_after["status"].get("readyReplicas") == 1

    # The operator is still healthy and serving: fixing the spec recovers.
    kubectl.run(
        "patch",
        ISVC,
        "legacy",
        "-n",
        ns,
        "--type=json",
        "-p",
        json.dumps([{"op": "remove", "path": "/spec/scaling"}]),
    )
    obj = until(lambda: ready_and_current(kubectl, ns, "legacy"), 60, "legacy Ready again")
    assert condition(obj, "SpecValid")["status"] == "True"
    assert "specError" not in obj["status"]


def _strip_rules(schema: dict[str, Any]) -> None:
    schema.pop("x-kubernetes-validations", None)
    for sub in (schema.get("properties") or {}).values():
        _strip_rules(sub)
    if "items" in schema:
        _strip_rules(schema["items"])
