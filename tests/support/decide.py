"""Drive the pure per-InferenceService decision the way the shell does.

Status goes through its wire form between cycles (``to_dict`` after a
decision, ``from_dict`` before the next), exactly as it does through the
apiserver, so a test sees what the operator writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sluice.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus
from sluice.policy import signals as sig
from sluice.policy.control import ControlConfig, ServiceInput, decide
from sluice.policy.events import Event
from sluice.policy.readiness import DeploymentState, PodState


def deployment(
    variant: str,
    replicas: int,
    ready: int,
    version: int | None = 1,
    image: str | None = "img",
    *,
    updated: int | None = None,
) -> DeploymentState:
    """A variant's Deployment that the Deployment controller has caught up with."""
    return DeploymentState(
        name=f"x-{variant}",
        variant=variant,
        replicas=replicas,
        ready=ready,
        updated=replicas if updated is None else updated,
        available=ready,
        current=True,
        version=version,
        pods=replicas,
        image=image,
    )


def cycle(
    spec: InferenceServiceSpec,
    status: Mapping[str, Any] | None,
    obs: sig.Observations | None,
    deps: Mapping[str, DeploymentState],
    now: float,
    *,
    pods: Sequence[PodState] = (),
    generation: int = 1,
    config: ControlConfig | None = None,
    key: tuple[str, str] = ("ns", "x"),
) -> tuple[dict[str, Any] | None, list[Event]]:
    """One decision: the status to write (wire form; None: no write) and the Events."""
    out = decide(
        ServiceInput(
            namespace=key[0],
            name=key[1],
            spec=spec,
            status=InferenceServiceStatus.from_dict(status),
            generation=generation,
            observations=obs,
            deployments=deps,
            pods=tuple(pods),
            config=config or ControlConfig(),
        ),
        now,
    )
    if out.status is None:
        return None, list(out.events)
    wire = out.status.to_dict()
    # What is written reads back as exactly what was decided: a simulator that
    # carries the typed status sees what the operator would.
    assert InferenceServiceStatus.from_dict(wire) == out.status
    return wire, list(out.events)
