"""The plan: which variants exist, what each serves, replicas and weights.

The plan is the one input besides the spec that rendering needs. Policies
(:mod:`sluice.policy`) decide it; rendering only lays it out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One variant as it will be rendered: a Deployment and a Service."""

    name: str
    version: int
    image: str
    repository: str
    replicas: int
    weight: int = 0  # traffic percent on the HTTPRoute's weighted rule


@dataclass(frozen=True)
class Meta:
    """What rendering needs of the InferenceService object itself."""

    name: str
    namespace: str
    uid: str = ""
    generation: int = 0


def deployment_name(isvc: str, variant: str) -> str:
    return f"{isvc}-{variant}"


def variant_service_name(isvc: str, variant: str) -> str:
    return f"{isvc}-{variant}"
