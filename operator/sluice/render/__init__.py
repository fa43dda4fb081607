"""Render an InferenceService into the Kubernetes objects that run it.

Everything here is a pure function of (object metadata, parsed spec, plan):
no cluster, no clock. jinja2 templates lay the objects out; the values they
place are computed in Python. ``sluice render -f isvc.yaml`` prints the result.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

import jinja2
import yaml

from ..api.schema import to_dict
from ..api.v1alpha1 import API_VERSION, KIND, MAIN_VARIANT, InferenceServiceSpec
from . import triton
from .plan import Meta, Variant, deployment_name, variant_service_name

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}

LABEL_ISVC = "sluice.dev/inferenceservice"
LABEL_VARIANT = "sluice.dev/variant"
LABEL_VERSION = "sluice.dev/model-version"
MANAGED_BY = "sluice"

__all__ = [
    "LABEL_ISVC",
    "LABEL_VARIANT",
    "LABEL_VERSION",
    "Meta",
    "Variant",
    "apex_service",
    "deployment",
    "httproute",
    "podmonitor",
    "render_all",
    "selector",
    "variant_service",
]


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sluice.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    # Plain JSON (no HTML escaping): every JSON value is a valid YAML value.
    env.policies["json.dumps_function"] = json.dumps
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env


# libyaml's loader when PyYAML was built with it: rendering parses every object.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _render(template: str, **ctx: Any) -> dict[str, Any]:
    text = _env().get_template(template).render(**ctx)
    obj = yaml.load(text, Loader=_Loader)  # a safe loader (C or pure Python)
    assert isinstance(obj, dict)
    return obj


def common_labels(meta: Meta) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "triton",
        "app.kubernetes.io/instance": meta.name,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": "sluice",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_ISVC: meta.name,
    }


def selector(meta: Meta, variant: str | None = None) -> dict[str, str]:
    """Pod selector of the whole InferenceService, or of one variant."""
    sel = {LABEL_ISVC: meta.name}
    if variant is not None:
        sel[LABEL_VARIANT] = variant
    return sel


def selector_string(meta: Meta) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(meta).items())


def variant_labels(meta: Meta, v: Variant) -> dict[str, str]:
    return {
        **common_labels(meta),
        "app.kubernetes.io/version": str(v.version),
        LABEL_VARIANT: v.name,
        LABEL_VERSION: str(v.version),
    }


def owner_reference(meta: Meta) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _owned(meta: Meta, obj: dict[str, Any]) -> dict[str, Any]:
    if meta.uid:
        obj["metadata"]["ownerReferences"] = [owner_reference(meta)]
    return obj


# ------------------------------------------------------------------ placement


def affinity(spec: InferenceServiceSpec) -> dict[str, Any]:
    """GPU product node affinity merged with the user's affinity terms."""
    user: dict[str, Any] = _pruned(to_dict(spec.pod_template.affinity))
    if spec.gpu.count > 0 and spec.gpu.products:
        term = {
            "matchExpressions": [
                {"key": GPU_PRODUCT_LABEL, "operator": "In", "values": list(spec.gpu.products)}
            ]
        }
        node = user.setdefault("nodeAffinity", {})
        required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
        terms = required.setdefault("nodeSelectorTerms", [])
        if terms:
            # Terms are ORed; the product constraint must hold in each of them.
            for t in terms:
                t.setdefault("matchExpressions", []).extend(term["matchExpressions"])
        else:
            terms.append(term)
    if spec.gpu.count == 0:
        # A CPU model prefers nodes without GPUs, even where they are untainted.
        node = user.setdefault("nodeAffinity", {})
        node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", []).append(
            {
                "weight": 100,
                "preference": {
                    "matchExpressions": [{"key": GPU_PRESENT_LABEL, "operator": "DoesNotExist"}]
                },
            }
        )
    return user


def _pruned(typed: dict[str, Any]) -> dict[str, Any]:
    """The parsed affinity as pod-spec data, without the empty lists and objects the
    typed form has and the apiserver would drop (``covers`` would never hold). The
    pass-through podAffinity/podAntiAffinity are kept exactly as given."""

    def prune(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: p for k, v in x.items() if (p := prune(v)) not in ({}, [], None)}
        if isinstance(x, list):
            return [prune(i) for i in x]
        return x

    out = dict(typed)
    if "nodeAffinity" in out:
        out["nodeAffinity"] = prune(out["nodeAffinity"])
        if not out["nodeAffinity"]:
            del out["nodeAffinity"]
    return out


def tolerations(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    tols: list[dict[str, Any]] = [to_dict(t) for t in spec.pod_template.tolerations]
    if spec.gpu.count > 0:
        tols.insert(0, dict(GPU_TOLERATION))
    else:
        # Never tolerate the GPU taint for a CPU model, even if the user asked.
        tols = [t for t in tols if t.get("key") != GPU_RESOURCE]
    return tols


# -------------------------------------------------------------------- objects


def deployment(meta: Meta, spec: InferenceServiceSpec, v: Variant) -> dict[str, Any]:
    labels = variant_labels(meta, v)
    pod_labels = {**spec.pod_template.labels, **labels}
    pod_annotations = {
        **spec.pod_template.annotations,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(triton.METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    node_selector = dict(spec.pod_template.node_selector)
    return _owned(
        meta,
        _render(
            "deployment.yaml.j2",
            meta=meta,
            name=deployment_name(meta.name, v.name),
            labels=labels,
            model=spec.model.name,
            variant=v,
            selector=selector(meta, v.name),
            pod_labels=pod_labels,
            pod_annotations=pod_annotations,
            pt=spec.pod_template,
            pull_secrets=[{"name": s} for s in spec.pod_template.image_pull_secrets],
            node_selector=node_selector,
            affinity=affinity(spec),
            tolerations=tolerations(spec),
            container=triton.container(spec, v),
            volumes=triton.volumes(spec, v),
        ),
    )


def variant_service(meta: Meta, v: Variant) -> dict[str, Any]:
    labels = {**common_labels(meta), LABEL_VARIANT: v.name}
    return _owned(
        meta,
        _render(
            "service.yaml.j2",
            meta=meta,
            name=variant_service_name(meta.name, v.name),
            labels=labels,
            selector=selector(meta, v.name),
        ),
    )


def apex_service(meta: Meta) -> dict[str, Any]:
    """The InferenceService's own Service: the main variant's pods.

    Weighted splits between variants go through the HTTPRoute; the apex
    Service stays on the main variant so that its traffic never follows pod
    counts by accident.
    """
    return _owned(
        meta,
        _render(
            "service.yaml.j2",
            meta=meta,
            name=meta.name,
            labels=common_labels(meta),
            selector=selector(meta, MAIN_VARIANT),
        ),
    )


def httproute(
    meta: Meta, spec: InferenceServiceSpec, variants: Sequence[Variant]
) -> dict[str, Any] | None:
    router = spec.router
    if router is None:
        return None
    parent: dict[str, Any] = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": router.gateway.name,
    }
    if router.gateway.namespace:
        parent["namespace"] = router.gateway.namespace
    if router.gateway.section_name:
        parent["sectionName"] = router.gateway.section_name
    names = {v.name for v in variants}
    header_rules = [
        {
            "header": h.header,
            "value": h.value,
            "service": variant_service_name(meta.name, h.variant),
        }
        for h in router.header_matches
        if h.variant in names
    ]
    mirror = None
    if router.mirror and router.mirror.variant in names:
        mirror = {
            "service": variant_service_name(meta.name, router.mirror.variant),
            "percent": router.mirror.percent,
        }
    backends = [
        {"service": variant_service_name(meta.name, v.name), "weight": v.weight} for v in variants
    ]
    return _owned(
        meta,
        _render(
            "httproute.yaml.j2",
            meta=meta,
            labels=common_labels(meta),
            parent=parent,
            router=router,
            header_rules=header_rules,
            mirror=mirror,
            backends=backends,
        ),
    )


def podmonitor(meta: Meta) -> dict[str, Any]:
    return _owned(
        meta,
        _render(
            "podmonitor.yaml.j2",
            meta=meta,
            labels=common_labels(meta),
            selector=selector(meta),
        ),
    )


def render_all(
    meta: Meta,
    spec: InferenceServiceSpec,
    variants: Sequence[Variant],
    *,
    with_podmonitor: bool = False,
) -> list[dict[str, Any]]:
    """Every object the InferenceService owns, in apply order."""
    objs: list[dict[str, Any]] = []
    for v in variants:
        objs.append(deployment(meta, spec, v))
        objs.append(variant_service(meta, v))
    objs.append(apex_service(meta))
    route = httproute(meta, spec, variants)
    if route is not None:
        objs.append(route)
    if with_podmonitor:
        objs.append(podmonitor(meta))
    return objs
