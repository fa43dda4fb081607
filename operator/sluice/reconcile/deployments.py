"""The Triton Deployments, one per variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..policy.readiness import DeploymentState, deployment_problem
from ..render import LABEL_VARIANT, LABEL_VERSION, Meta
from .apply import SyncResult, owned_selector, sync_kind
from .kube import Kube

API_VERSION, KIND = "apps/v1", "Deployment"


def observe(live: Mapping[str, Any]) -> DeploymentState:
    md, spec, st = live["metadata"], live.get("spec") or {}, live.get("status") or {}
    return DeploymentState(
        name=md["name"],
        variant=(md.get("labels") or {}).get(LABEL_VARIANT, ""),
        replicas=int(spec.get("replicas") or 0),
        ready=int(st.get("readyReplicas") or 0),
        updated=int(st.get("updatedReplicas") or 0),
        available=int(st.get("availableReplicas") or 0),
        current=int(st.get("observedGeneration") or 0) >= int(md.get("generation") or 0),
        version=_int((md.get("labels") or {}).get(LABEL_VERSION)),
        pods=int(st.get("replicas") or 0),
        image=triton_image(live),
        problem=deployment_problem(st.get("conditions") or []),
    )


def triton_image(dep: Mapping[str, Any]) -> str | None:
    """The image of the Deployment's Triton container."""
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for c in containers:
        if c.get("name") == "triton":
            return str(c.get("image"))
    return None


def _int(s: str | None) -> int | None:
    return int(s) if s and s.isdigit() else None


def sync(kube: Kube, meta: Meta, desired: Sequence[Mapping[str, Any]]) -> SyncResult:
    return sync_kind(kube, meta, API_VERSION, KIND, desired)


def observe_all(result: SyncResult) -> dict[str, DeploymentState]:
    states = [observe(o) for o in result.live.values()]
    return {s.variant: s for s in states}


def ready_counts(kube: Kube, meta: Meta) -> dict[str, int]:
    """Ready pods per variant now, before anything is applied (for route weights)."""
    out: dict[str, int] = {}
    for o in kube.list(API_VERSION, KIND, meta.namespace, owned_selector(meta)):
        st = observe(o)
        out[st.variant] = st.ready
    return out
