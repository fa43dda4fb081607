"""From an InferenceService object (and its status) to the objects it should own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..api.schema import SpecError
from ..api.v1alpha1 import API_VERSION, KIND, InferenceServiceSpec, check_name, parse_spec
from ..policy.plan import Observed, Revision, RolloutState, plan
from ..render import Meta, Variant, render_all


def meta_of(obj: Mapping[str, Any], namespace: str | None = None) -> Meta:
    md = obj.get("metadata") or {}
    ns = md.get("namespace") or namespace or "default"
    return Meta(
        name=md["name"], namespace=ns, uid=md.get("uid", ""), generation=md.get("generation", 0)
    )


def rollout_state(status: Mapping[str, Any] | None) -> RolloutState:
    r = (status or {}).get("rollout") or {}

    def rev(d: Mapping[str, Any] | None) -> Revision | None:
        return Revision(int(d["version"]), str(d["image"])) if d else None

    return RolloutState(
        phase=r.get("phase", "Idle"),
        stable=rev(r.get("stable")),
        canary=rev(r.get("canary")),
        canary_weight=int(r.get("canaryWeight", 0)),
        promoted=r.get("phase") == "Promoting",
    )


def scaled_replicas(status: Mapping[str, Any] | None) -> dict[str, int]:
    return {
        s["variant"]: int(s["desiredReplicas"])
        for s in (status or {}).get("scaling") or []
        if s.get("applied") and "desiredReplicas" in s
    }


def desired(
    obj: Mapping[str, Any],
    spec: InferenceServiceSpec,
    *,
    ready: Mapping[str, int] | None = None,
    with_podmonitor: bool = False,
    namespace: str | None = None,
) -> tuple[list[Variant], list[dict[str, Any]]]:
    status = obj.get("status") or {}
    variants = plan(
        spec,
        rollout_state(status),
        Observed(scaled=scaled_replicas(status), ready=dict(ready or {})),
    )
    meta = meta_of(obj, namespace)
    return variants, render_all(meta, spec, variants, with_podmonitor=with_podmonitor)


def render_documents(text: str, namespace: str | None = None) -> list[dict[str, Any]]:
    """``sluice render``: every InferenceService in a YAML stream, rendered offline."""
    out: list[dict[str, Any]] = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
            raise SpecError(
                "", f"expected {API_VERSION} {KIND}, got {doc.get('apiVersion')} {doc.get('kind')}"
            )
        name = (doc.get("metadata") or {}).get("name")
        if not name:
            raise SpecError("metadata.name", "is required")
        check_name(name)
        spec = parse_spec(doc.get("spec"))
        _, objs = desired(doc, spec, namespace=namespace)
        out.extend(objs)
    return out
