"""From an InferenceService object (and its status) to the objects it should own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from ..api.schema import SpecError
from ..api.v1alpha1 import (
    API_VERSION,
    KIND,
    InferenceServiceSpec,
    InferenceServiceStatus,
    check_name,
    parse_spec,
)
from ..policy.plan import Observed, plan
from ..render import Meta, Variant, render_all


def meta_of(obj: Mapping[str, Any], namespace: str | None = None) -> Meta:
    md = obj.get("metadata") or {}
    ns = md.get("namespace") or namespace or "default"
    return Meta(
        name=md["name"], namespace=ns, uid=md.get("uid", ""), generation=md.get("generation", 0)
    )


def desired(
    obj: Mapping[str, Any],
    spec: InferenceServiceSpec,
    *,
    ready: Mapping[str, int] | None = None,
    with_podmonitor: bool = False,
    namespace: str | None = None,
    status: InferenceServiceStatus | None = None,
) -> tuple[list[Variant], list[dict[str, Any]]]:
    """The variants and the objects to apply. ``status``: the object's status,
    already parsed (parsed from ``obj`` when not given)."""
    if status is None:
        status = InferenceServiceStatus.from_dict(obj.get("status"))
    variants = plan(
        spec,
        status.rollout,
        Observed(
            scaled=status.scaled_replicas(),
            ready=dict(ready or {}),
            promoted=status.experiment.promoted if status.experiment else None,
        ),
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
