"""Status of an InferenceService from what was planned and what was observed.

Pure, over the typed status. Conditions written here: SpecValid, Ready,
Progressing, TrafficRouted. Other writers (the control decision,
:mod:`sluice.policy.control`) own MetricsAvailable and Canary and set theirs
with the same :meth:`~sluice.api.v1alpha1.InferenceServiceStatus.with_condition`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..api.v1alpha1 import MAIN_VARIANT, InferenceServiceStatus, VariantStatus
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
    # What the Deployment's own conditions say blocks it (ReplicaFailure: the
    # ReplicaSet cannot create pods; ProgressDeadlineExceeded), for the Ready message.
    problem: str | None = None

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


def deployment_problem(conditions: Sequence[Mapping[str, Any]]) -> str | None:
    """What a Deployment's conditions say stops it: the ReplicaSet could not
    create pods (a missing ServiceAccount or PriorityClass, a quota, a policy:
    the FailedCreate the ReplicaSet controller reports), or no progress within
    the Deployment's progressDeadlineSeconds."""
    for c in conditions:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return f"ReplicaFailure ({c.get('reason') or 'FailedCreate'}): {c.get('message', '')}"
    for c in conditions:
        if (
            c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
        ):
            return f"ProgressDeadlineExceeded: {c.get('message', '')}"
    return None


# Container waiting reasons that do not go away by themselves.
STUCK_REASONS = (
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
)


def pod_problems(pods: Sequence[Mapping[str, Any]], variant_label: str) -> dict[str, str]:
    """Why pods of each variant are not running: the first unschedulable or
    stuck container reason found, for the Ready message."""
    out: dict[str, str] = {}
    for p in pods:
        variant = ((p.get("metadata") or {}).get("labels") or {}).get(variant_label)
        if not variant or variant in out:
            continue
        why = _pod_problem(p)
        if why:
            out[variant] = f"pod {p['metadata']['name']} {why}"
    return out


def _pod_problem(p: Mapping[str, Any]) -> str | None:
    st = p.get("status") or {}
    for c in st.get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"unschedulable: {c.get('message', '')}"
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") not in STUCK_REASONS:
            continue
        why = f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": ")
        last = (cs.get("lastState") or {}).get("terminated") or {}
        if last:
            why += f" (last exit code {last.get('exitCode')}"
            why += f", {last['reason']})" if last.get("reason") else ")"
        return why
    return None


def invalid_spec_status(
    status: InferenceServiceStatus, error: str, generation: int, now: float
) -> InferenceServiceStatus:
    """Status for a spec the operator cannot serve: say why; touch nothing else."""
    new = status.with_condition("SpecValid", False, "InvalidSpec", error, now, generation)
    new = new.with_condition(
        "Ready",
        False,
        "InvalidSpec",
        f"the spec cannot be served; the running fleet is left as it was: {error}",
        now,
        generation,
    )
    return replace(new, spec_error=error, observed_generation=generation)


def apply_failed_status(
    status: InferenceServiceStatus, reason: str, message: str, generation: int, now: float
) -> InferenceServiceStatus:
    """Status when the children could not be written (the apiserver refused one,
    or rendering failed): nothing was changed, so everything else stays as it was."""
    text = f"nothing was changed, the running fleet is left as it was: {message}"
    new = status.with_condition("Ready", False, reason, text, now, generation)
    new = new.with_condition("Progressing", False, reason, text, now, generation)
    return replace(new, observed_generation=generation)


def served_status(
    status: InferenceServiceStatus,
    *,
    model: str,
    variants: Sequence[Variant],
    states: Mapping[str, DeploymentState],
    generation: int,
    url: str,
    selector: str,
    route: tuple[bool, str, str] | None,
    rollout_in_flight: bool,
    now: float,
    problems: Mapping[str, str] | None = None,
) -> InferenceServiceStatus:
    """Status after a reconcile that applied the plan.

    ``route`` is None without spec.router, else (ok, reason, message).
    """
    new = replace(status, spec_error=None)
    new = new.with_condition("SpecValid", True, "Valid", "the spec is valid", now, generation)

    lagging: list[str] = []
    vstatus: list[VariantStatus] = []
    total_ready = total_wanted = 0
    for v in variants:
        st = states.get(v.name)
        ready = st.ready if st else 0
        total_ready += ready
        total_wanted += v.replicas
        if st is None or not st.rolled_out(v.replicas):
            reasons = [st.problem if st else None, (problems or {}).get(v.name)]
            why = "; ".join(r for r in reasons if r)
            lagging.append(
                f"{v.name} {ready}/{v.replicas} ready (version {v.version})"
                + (f": {why}" if why else "")
            )
        vstatus.append(
            VariantStatus(
                name=v.name,
                version=v.version,
                image=v.image,
                replicas=st.replicas if st else 0,
                ready_replicas=ready,
                desired_replicas=v.replicas,
                weight=v.weight,
                deployment=st.name if st else None,
            )
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
    new = new.with_condition("Ready", *ready_c, now, generation)

    if rollout_in_flight:
        prog = (True, "CanaryInProgress", "a canary rollout is under way")
    elif lagging:
        prog = (True, "RollingOut", "waiting for " + "; ".join(lagging))
    else:
        prog = (False, "Complete", "every variant runs its desired version and replicas")
    new = new.with_condition("Progressing", *prog, now, generation)

    if route is not None:
        new = new.with_condition("TrafficRouted", *route, now, generation)
    else:
        new = new.without_condition("TrafficRouted")

    return replace(
        new,
        observed_generation=generation,
        url=url,
        model=model,
        version=main.version,
        replicas=main_state.replicas if main_state else 0,
        ready_replicas=total_ready,
        ready=f"{total_ready}/{total_wanted}",
        selector=selector,
        variants=tuple(vstatus),
    )
