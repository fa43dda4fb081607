"""Status of an InferenceService from what was planned and what was observed.

Pure. Conditions written here: SpecValid, Ready, Progressing, TrafficRouted.
Other writers (the control loop) own MetricsAvailable, Scaling and Canary and
merge theirs with :func:`set_condition` the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..api.v1alpha1 import MAIN_VARIANT
from ..render.plan import Variant


@dataclass(frozen=True)
class DeploymentState:
    """What the status and policies need to know of one variant's Deployment."""

    name: str
    variant: str
    replicas: int
    ready: int
    updated: int
    available: int
    current: bool  # the Deployment controller has seen the latest spec
    version: int | None = None
    pods: int | None = None  # status.replicas: old and new pods not yet terminated
    image: str | None = None  # the Triton container's image in the pod template

    @property
    def current_ready(self) -> int:
        """Ready pods running the Deployment's current template.

        A lower bound: while a rolling update still has old pods, those are
        assumed to be the ready ones. 0 while the Deployment controller has not
        seen the latest template.
        """
        if not self.current:
            return 0
        total = self.pods or 0
        return max(0, min(self.updated, self.ready - max(0, total - self.updated)))

    def rolled_out(self, wanted: int) -> bool:
        """The latest spec runs on exactly ``wanted`` ready pods and no old pod is left."""
        return (
            self.current
            and self.replicas == wanted
            and self.updated >= wanted
            and self.ready >= wanted
            and (self.pods is None or self.pods == wanted)
        )


@dataclass(frozen=True)
class PodState:
    """What the policies need to know of one pod of a variant."""

    name: str
    variant: str
    created: float | None = None  # creationTimestamp, epoch seconds
    ready: bool = False  # the Ready condition is True
    # When the Ready condition last became True (its lastTransitionTime): with
    # ``created``, how long the pod took to load its model.
    ready_since: float | None = None
    deleting: bool = False  # has a deletionTimestamp

    def starting(self, warmup: float, now: float) -> bool:
        """Not ready yet, not going away, and younger than ``warmup`` seconds."""
        return (
            not self.deleting
            and not self.ready
            and self.created is not None
            and now - self.created < warmup
        )


def pod_problems(pods: Sequence[Mapping[str, Any]], variant_label: str) -> dict[str, str]:
    """Why pods of each variant are not running: the first unschedulable or
    waiting reason found, for the Ready message."""
    out: dict[str, str] = {}
    for p in pods:
        variant = ((p.get("metadata") or {}).get("labels") or {}).get(variant_label)
        if not variant or variant in out:
            continue
        st = p.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False":
                out[variant] = f"pod {p['metadata']['name']} unschedulable: {c.get('message', '')}"
                break
        else:
            for cs in st.get("containerStatuses") or []:
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in ("CrashLoopBackOff", "ImagePullBackOff",
                                             "ErrImagePull", "CreateContainerConfigError"):
                    out[variant] = (
                        f"pod {p['metadata']['name']} {waiting['reason']}: "
                        f"{waiting.get('message', '')}".rstrip(": ")
                    )
                    break
    return out


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    now: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Replace one condition, keeping lastTransitionTime unless its status changes."""
    st = ("True" if status else "False") if isinstance(status, bool) else status
    out: list[dict[str, Any]] = []
    found = False
    for c in conditions:
        if c.get("type") != type_:
            out.append(dict(c))
            continue
        found = True
        ltt = c.get("lastTransitionTime") if c.get("status") == st else now
        out.append(_cond(type_, st, reason, message, ltt or now, generation))
    if not found:
        out.append(_cond(type_, st, reason, message, now, generation))
    return out


def get_condition(conditions: Sequence[Mapping[str, Any]], type_: str) -> Mapping[str, Any] | None:
    for c in conditions:
        if c.get("type") == type_:
            return c
    return None


def _cond(
    type_: str, status: str, reason: str, message: str, ltt: str, gen: int | None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ltt,
    }
    if gen is not None:
        c["observedGeneration"] = gen
    return c


def invalid_spec_status(
    status: Mapping[str, Any], error: str, generation: int, now: str
) -> dict[str, Any]:
    """Status for a spec the operator cannot serve: say why; touch nothing else."""
    new = dict(status)
    conds = status.get("conditions") or []
    conds = set_condition(conds, "SpecValid", False, "InvalidSpec", error, now, generation)
    conds = set_condition(
        conds,
        "Ready",
        False,
        "InvalidSpec",
        f"the spec cannot be served; the running fleet is left as it was: {error}",
        now,
        generation,
    )
    new["conditions"] = conds
    new["specError"] = error
    new["observedGeneration"] = generation
    return new


def served_status(
    status: Mapping[str, Any],
    *,
    model: str,
    variants: Sequence[Variant],
    states: Mapping[str, DeploymentState],
    generation: int,
    url: str,
    selector: str,
    route: tuple[bool, str, str] | None,
    rollout_in_flight: bool,
    now: str,
    problems: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Status after a reconcile that applied the plan.

    ``route`` is None without spec.router, else (ok, reason, message).
    """
    new = {k: v for k, v in status.items() if k != "specError"}
    conds: list[dict[str, Any]] = list(status.get("conditions") or [])
    conds = set_condition(conds, "SpecValid", True, "Valid", "the spec is valid", now, generation)

    lagging: list[str] = []
    vstatus: list[dict[str, Any]] = []
    total_ready = total_wanted = 0
    for v in variants:
        st = states.get(v.name)
        ready = st.ready if st else 0
        total_ready += ready
        total_wanted += v.replicas
        if st is None or not st.rolled_out(v.replicas):
            why = (problems or {}).get(v.name)
            lagging.append(
                f"{v.name} {ready}/{v.replicas} ready (version {v.version})"
                + (f": {why}" if why else "")
            )
        vstatus.append(
            {
                "name": v.name,
                "version": v.version,
                "image": v.image,
                "replicas": st.replicas if st else 0,
                "readyReplicas": ready,
                "desiredReplicas": v.replicas,
                "weight": v.weight,
                "deployment": st.name if st else None,
            }
        )
    main = next(v for v in variants if v.name == MAIN_VARIANT)
    main_state = states.get(MAIN_VARIANT)

    if main.replicas == 0:
        ready_c = (False, "ScaledToZero", "spec.replicas is 0: no pod serves the model")
    elif lagging:
        ready_c = (False, "RollingOut", "waiting for " + "; ".join(lagging))
    else:
        ready_c = (
            True,
            "Serving",
            f"{total_ready} pod(s) serve {model} across {len(variants)} variant(s)",
        )
    conds = set_condition(conds, "Ready", *ready_c, now, generation)

    if rollout_in_flight:
        prog = (True, "CanaryInProgress", "a canary rollout is under way")
    elif lagging:
        prog = (True, "RollingOut", "waiting for " + "; ".join(lagging))
    else:
        prog = (False, "Complete", "every variant runs its desired version and replicas")
    conds = set_condition(conds, "Progressing", *prog, now, generation)

    if route is not None:
        conds = set_condition(conds, "TrafficRouted", *route, now, generation)
    else:
        conds = [c for c in conds if c.get("type") != "TrafficRouted"]

    new.update(
        {
            "observedGeneration": generation,
            "conditions": conds,
            "url": url,
            "model": model,
            "version": main.version,
            "replicas": main_state.replicas if main_state else 0,
            "readyReplicas": total_ready,
            "ready": f"{total_ready}/{total_wanted}",
            "selector": selector,
            "variants": vstatus,
        }
    )
    return new
