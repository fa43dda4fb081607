"""Decide the variants to run, their replicas and their traffic weights.

Pure: the inputs are the parsed spec, what status remembers (status.rollout,
typed as :class:`~sluice.api.v1alpha1.RolloutStatus`, and the autoscaler's
decisions) and what was observed (ready replicas). The shell reads those,
calls :func:`plan`, and renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..api.v1alpha1 import (
    BASELINE_VARIANT,
    CANARY_VARIANT,
    MAIN_VARIANT,
    InferenceServiceSpec,
    RevisionStatus,
    RolloutStatus,
)
from ..api.v1alpha1 import IN_FLIGHT as IN_FLIGHT
from ..render.plan import Variant

# A model version and image pair: the status type itself.
Revision = RevisionStatus


@dataclass(frozen=True)
class Observed:
    """What the plan needs to know about the world."""

    # Replicas the autoscaler decided per variant (applied only in Auto mode).
    scaled: Mapping[str, int] = field(default_factory=dict)
    # Ready pods per variant.
    ready: Mapping[str, int] = field(default_factory=dict)
    # An A/B winner promoted to main (status.experiment.promoted, promoteWinner).
    promoted: Revision | None = None


def spec_revision(spec: InferenceServiceSpec) -> Revision:
    return Revision(version=spec.model.version, image=spec.triton.image)


def main_revision(spec: InferenceServiceSpec, rollout: RolloutStatus) -> Revision:
    """What the main variant serves.

    With the Canary strategy the main variant stays on the stable revision until
    promotion: a spec change waits for the control loop to start a canary, and a
    rolled-back revision never reaches main. While promoting, main moves to the
    canary's revision. Without a stable revision yet (first deploy) or with the
    Rolling strategy, main serves the spec.
    """
    if spec.rollout.strategy != "Canary" or rollout.stable is None:
        return spec_revision(spec)
    if rollout.in_flight and rollout.promoted and rollout.canary is not None:
        return rollout.canary
    return rollout.stable


def base_replicas(spec: InferenceServiceSpec, variant: str, observed: Observed) -> int:
    """Replicas of a variant from spec.replicas or, in Auto mode, the autoscaler."""
    wanted = spec.replicas
    for v in spec.variants:
        if v.name == variant and v.replicas is not None:
            wanted = v.replicas
    s = spec.scaling
    if s is None or s.mode == "Off":
        return wanted
    if s.mode == "Auto" and variant in observed.scaled:
        wanted = observed.scaled[variant]
    return max(s.min_replicas, min(s.max_replicas, wanted))


def canary_replicas(main_replicas: int, share_percent: int) -> int:
    """Replicas a canary needs for ``share_percent`` of the main variant's load."""
    return max(1, math.ceil(main_replicas * share_percent / 100))


def plan(
    spec: InferenceServiceSpec,
    rollout: RolloutStatus | None = None,
    observed: Observed | None = None,
) -> list[Variant]:
    observed = observed or Observed()
    rollout = rollout or RolloutStatus()
    variants: list[Variant] = []

    if spec.rollout.strategy != "Canary":
        rollout = RolloutStatus()  # Rolling: main follows the spec; no canary
    main_rev = main_revision(spec, rollout)
    if observed.promoted is not None and spec.rollout.strategy != "Canary":
        main_rev = observed.promoted
    main_replicas = base_replicas(spec, MAIN_VARIANT, observed)
    variants.append(
        Variant(
            name=MAIN_VARIANT,
            version=main_rev.version,
            image=main_rev.image,
            repository=spec.model.repository,
            replicas=main_replicas,
            weight=100,
        )
    )

    if rollout.in_flight:
        assert rollout.canary is not None
        share = canary_share(spec, rollout)
        scaled = observed.scaled.get(CANARY_VARIANT, 0)
        variants.append(
            Variant(
                name=CANARY_VARIANT,
                version=rollout.canary.version,
                image=rollout.canary.image,
                repository=spec.model.repository,
                replicas=max(scaled, canary_replicas(main_replicas, share)),
                weight=rollout.canary_weight,
            )
        )
        if spec.rollout.baseline and rollout.stable is not None:
            # Kayenta's baseline: the stable revision with the canary's replicas and
            # share, started and removed with it, so both see the same per-pod load.
            canary = variants[-1]
            bshare = baseline_share(share)
            variants.append(
                Variant(
                    name=BASELINE_VARIANT,
                    version=rollout.stable.version,
                    image=rollout.stable.image,
                    repository=spec.model.repository,
                    replicas=canary.replicas
                    if bshare == share
                    else canary_replicas(main_replicas, bshare),
                    weight=baseline_share(rollout.canary_weight),
                )
            )

    for v in spec.variants:
        variants.append(
            Variant(
                name=v.name,
                version=v.model.version or spec.model.version,
                image=v.triton.image or spec.triton.image,
                repository=v.model.repository or spec.model.repository,
                replicas=base_replicas(spec, v.name, observed),
                weight=v.weight,
            )
        )
    return route_weights(variants, observed.ready if observed.ready else None)


def baseline_share(canary_percent: int) -> int:
    """The baseline's share beside a canary at ``canary_percent``: the same, as long as
    both fit (above 50 % the baseline takes what is left)."""
    return max(0, min(canary_percent, 100 - canary_percent))


def canary_share(spec: InferenceServiceSpec, rollout: RolloutStatus) -> int:
    """The traffic percent the canary is sized for: the share it is about to
    receive, before it receives it."""
    return max(rollout.canary_weight, _next_step(spec, rollout.canary_weight))


def _next_step(spec: InferenceServiceSpec, current: int) -> int:
    for s in spec.rollout.steps:
        if s > current:
            return s
    return current


def route_weights(variants: list[Variant], ready: Mapping[str, int] | None) -> list[Variant]:
    """Give the main variant what the others do not take; never route to a variant without
    ready pods (its share goes to the main variant; kserve#5983 sent it to 503s).

    ``ready=None`` means readiness is not known (offline rendering): weights as declared.
    """
    out = list(variants)
    others = out[1:]
    if ready is not None:
        others = [
            v if ready.get(v.name, 0) > 0 or ready.get(MAIN_VARIANT, 0) == 0 else _w(v, 0)
            for v in others
        ]
        # A canary and its baseline are compared at the same share: one without
        # traffic takes the other's away too.
        pair = {v.name: v for v in others if v.name in (CANARY_VARIANT, BASELINE_VARIANT)}
        if len(pair) == 2 and 0 in (pair[CANARY_VARIANT].weight, pair[BASELINE_VARIANT].weight):
            others = [_w(v, 0) if v.name in pair else v for v in others]
    main_weight = max(0, 100 - sum(v.weight for v in others))
    return [_w(out[0], main_weight), *others]


def _w(v: Variant, weight: int) -> Variant:
    return Variant(v.name, v.version, v.image, v.repository, v.replicas, weight)
