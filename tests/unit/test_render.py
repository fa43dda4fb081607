"""Rendering: golden files for every sample, and the GPU placement rules."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.api.v1alpha1 import parse_spec
from sluice.reconcile.desired import render_documents
from sluice.render import Meta, Variant, deployment, render_all
from sluice.render.triton import launcher_source

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted(
    p
    for p in (REPO / "manifests" / "samples").glob("*.yaml")
    if "InferenceService" in p.read_text()
)
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SLUICE_UPDATE_GOLDEN") == "1"


def _without_launcher(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The launcher's source has its own tests (test_triton_*); goldens hold a placeholder."""
    source = launcher_source()
    for o in objs:
        if o["kind"] == "Deployment":
            for c in o["spec"]["template"]["spec"]["containers"]:
                c["command"] = ["<launcher>" if a == source else a for a in c["command"]]
    return objs


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_sample_renders_as_golden(sample: Path) -> None:
    objs = _without_launcher(render_documents(sample.read_text()))
    text = yaml.safe_dump_all(objs, sort_keys=False, width=100)
    golden = GOLDEN / f"{sample.stem}.yaml"
    if UPDATE:
        golden.write_text(text)
    assert golden.exists(), f"no golden file; run SLUICE_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == golden.read_text(), f"{sample.name} renders differently from {golden.name}"


def test_goldens_hold_the_launcher_placeholder() -> None:
    text = (GOLDEN / "resnet50-h100.yaml").read_text()
    assert "<launcher>" in text and "def main(" not in text


def test_samples_exist() -> None:
    assert len(SAMPLES) >= 3


META = Meta(name="m1", namespace="ns", uid="u-1", generation=3)


def spec(**over: Any):
    base: dict[str, Any] = {"model": {"name": "m", "repository": "s3://b/p", "version": 2}}
    base.update(over)
    return parse_spec(base)


def variant(**over: Any) -> Variant:
    v = {"name": "main", "version": 2, "image": "img:1", "repository": "s3://b/p", "replicas": 2}
    v.update(over)
    return Variant(**v)


def pod(d: dict[str, Any]) -> dict[str, Any]:
    return d["spec"]["template"]["spec"]


def test_gpu_products_become_required_node_affinity_with_toleration() -> None:
    d = deployment(META, spec(gpu={"count": 2, "products": ["NVIDIA-H100-80GB-HBM3"]}), variant())
    p = pod(d)
    terms = p["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {
                    "key": "nvidia.com/gpu.product",
                    "operator": "In",
                    "values": ["NVIDIA-H100-80GB-HBM3"],
                }
            ]
        }
    ]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in p[
        "tolerations"
    ]
    assert p["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert p["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


def test_cpu_model_never_asks_for_or_tolerates_gpus() -> None:
    s = spec(
        gpu={"count": 0},
        podTemplate={
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists"},
            ]
        },
    )
    p = pod(deployment(META, s, variant()))
    limits = p["containers"][0]["resources"]["limits"]
    assert not any(k.startswith("nvidia.com/") for k in limits)
    assert p["tolerations"] == [{"key": "spot", "operator": "Exists"}]
    pref = p["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert pref[0]["preference"]["matchExpressions"][0] == {
        "key": "nvidia.com/gpu.present",
        "operator": "DoesNotExist",
    }
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in p["affinity"]["nodeAffinity"]


def test_mig_profile_requests_mig_slices() -> None:
    p = pod(deployment(META, spec(gpu={"count": 2, "migProfile": "1g.10gb"}), variant()))
    limits = p["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "2"
    assert "nvidia.com/gpu" not in limits


def test_user_affinity_terms_each_get_the_product_constraint() -> None:
    user_terms = [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
    ]
    s = spec(
        gpu={"products": ["NVIDIA-A100-SXM4-80GB"]},
        podTemplate={
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": user_terms
                    }
                }
            }
        },
    )
    terms = pod(deployment(META, s, variant()))["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(terms) == 2
    for t in terms:
        keys = [e["key"] for e in t["matchExpressions"]]
        assert keys == ["zone", "nvidia.com/gpu.product"]
    # The parsed spec itself is not mutated by rendering.
    node = s.pod_template.affinity.node_affinity
    assert node is not None and node.required_during_scheduling_ignored_during_execution
    required = node.required_during_scheduling_ignored_during_execution
    assert len(required.node_selector_terms[0].match_expressions) == 1


def test_labels_selector_owner_and_rollout_strategy() -> None:
    d = deployment(META, spec(), variant(version=7))
    md = d["metadata"]
    assert md["name"] == "m1-main"
    assert md["labels"]["sluice.dev/inferenceservice"] == "m1"
    assert md["labels"]["sluice.dev/variant"] == "main"
    assert md["labels"]["sluice.dev/model-version"] == "7"
    assert md["labels"]["app.kubernetes.io/managed-by"] == "sluice"
    assert md["ownerReferences"][0]["uid"] == "u-1"
    assert md["ownerReferences"][0]["controller"] is True
    # The selector never includes the version: a version change is a rollout, not a new selector.
    assert d["spec"]["selector"]["matchLabels"] == {
        "sluice.dev/inferenceservice": "m1",
        "sluice.dev/variant": "main",
    }
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert d["spec"]["replicas"] == 2


def test_render_all_makes_one_deployment_and_service_per_variant_plus_apex_and_route() -> None:
    s = spec(
        router={"gateway": {"name": "gw", "namespace": "gws"}},
        variants=[{"name": "b", "weight": 30}],
    )
    objs = render_all(META, s, [variant(weight=70), variant(name="b", version=3, weight=30)])
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert kinds == [
        ("Deployment", "m1-main"),
        ("Service", "m1-main"),
        ("Deployment", "m1-b"),
        ("Service", "m1-b"),
        ("Service", "m1"),
        ("HTTPRoute", "m1"),
    ]
    route = objs[-1]
    assert route["spec"]["parentRefs"][0]["namespace"] == "gws"
    backends = route["spec"]["rules"][-1]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [("m1-main", 70), ("m1-b", 30)]
    apex = objs[4]
    assert apex["spec"]["selector"] == {
        "sluice.dev/inferenceservice": "m1",
        "sluice.dev/variant": "main",
    }


def test_no_router_no_route() -> None:
    kinds = [o["kind"] for o in render_all(META, spec(), [variant()])]
    assert "HTTPRoute" not in kinds


def test_header_match_and_mirror() -> None:
    s = spec(
        router={
            "gateway": {"name": "gw"},
            "headerMatches": [{"header": "x-variant", "value": "b", "variant": "b"}],
            "mirror": {"variant": "b", "percent": 10},
        },
        variants=[{"name": "b", "weight": 0}],
    )
    route = render_all(META, s, [variant(weight=100), variant(name="b", weight=0)])[-1]
    rules = route["spec"]["rules"]
    assert rules[0]["matches"][0]["headers"][0] == {
        "type": "Exact",
        "name": "x-variant",
        "value": "b",
    }
    assert rules[0]["backendRefs"][0]["name"] == "m1-b"
    mirror = rules[1]["filters"][0]["requestMirror"]
    assert mirror == {"backendRef": {"name": "m1-b", "port": 8000}, "percent": 10}


def test_rendering_is_deterministic() -> None:
    s = spec(gpu={"products": ["a", "b"]})
    assert render_all(META, s, [variant()]) == render_all(META, s, [variant()])
