"""Latency-SLO autoscaling: one pure decision per variant per control cycle.

The inputs are the variant's replicas, its ready and starting pods, its
signals (:mod:`sluice.policy.signals`), what the previous decision remembered
(status.scaling) and the clock. The output is a :class:`Decision` with the
replicas wanted, a one-word code and a sentence that says why.

The rule, in order:

1. **Missing data freezes.** Without a request-rate value, or (when there is
   traffic) without a value of the target metric, nothing changes in either
   direction and the decision says which signal is missing and why.
2. **Zero traffic is a value.** A request rate of 0 means idle: the variant
   is allowed down to ``minReplicas`` (its latency signals are not numbers
   then, and are not needed).
3. **Proportional.** With traffic, ``ratio = observed / target``. Above
   ``1 + tolerance`` the variant needs ``ceil(ready * ratio)`` replicas, below
   ``1 - tolerance`` it needs ``ceil(current * ratio)``; inside the band nothing
   changes. Each decision moves at most ``maxStep`` replicas (at least one when
   it moves) and stays within ``[minReplicas, maxReplicas]``.
4. **Stabilisation.** A direction must be called for continuously for its
   stabilisation time before replicas change; a cycle that calls for the other
   direction, for no change, or has no data, restarts the clock.
5. **Warm-up.** While wanted replicas are not ready yet and are still within
   ``warmupSeconds`` (of their creation, or of the last scale-up), they count as
   coming capacity: no further scale-up until they are ready or the bound
   passes.
6. **Rollout hold.** While a canary rollout is in flight the stable variant is
   never scaled down: it must be able to take all traffic back (flagger#1600).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.v1alpha1 import ScalingSpec, ScalingStatus, Signals
from .signals import REQUEST_RATE, Reading

UP, DOWN = "Up", "Down"


@dataclass(frozen=True)
class Previous:
    """What the last decision for this variant remembered (from status.scaling)."""

    desired: int | None = None
    pending_direction: str | None = None
    pending_since: float | None = None
    last_scale_time: float | None = None

    @classmethod
    def from_status(cls, entry: ScalingStatus | None) -> Previous:
        if entry is None:
            return cls()
        pdir = entry.pending_direction
        return cls(
            desired=entry.desired_replicas,
            pending_direction=pdir if pdir in (UP, DOWN) else None,
            pending_since=entry.pending_since,
            last_scale_time=entry.last_scale_time,
        )


@dataclass(frozen=True)
class ScaleInput:
    variant: str
    current: int  # replicas the operator wants now (the previous decision when applied)
    ready: int  # ready pods of the variant
    signals: Mapping[str, Reading]
    starting: int = 0  # pods not ready yet, created less than warmupSeconds ago
    previous: Previous = field(default_factory=Previous)
    hold_down: str | None = None  # why scale-down is not allowed now
    # Fewest replicas the plan will run anyway (a canary sized for its traffic share).
    floor: int = 0


@dataclass(frozen=True)
class Decision:
    variant: str
    current: int
    desired: int
    applied: bool
    metric: str
    target: float
    code: str
    reason: str
    observed: float | None = None
    pending_direction: str | None = None
    pending_since: float | None = None
    last_scale_time: float | None = None
    # Signals whose absence froze the decision: (signal, reading).
    missing: tuple[tuple[str, Reading], ...] = ()

    @property
    def changes(self) -> bool:
        return self.desired != self.current

    def to_status(self, signals: Signals | None = None) -> ScalingStatus:
        pending = self.pending_direction is not None and self.pending_since is not None
        return ScalingStatus(
            variant=self.variant,
            current_replicas=self.current,
            desired_replicas=self.desired,
            applied=self.applied,
            metric=self.metric,
            target=self.target,
            reason=f"{self.code}: {self.reason}",
            observed=None if self.observed is None else round(self.observed, 3),
            last_scale_time=self.last_scale_time,
            pending_direction=self.pending_direction if pending else None,
            pending_since=self.pending_since if pending else None,
            signals=signals,
        )


def significant(entry: ScalingStatus) -> tuple[Any, ...]:
    """The parts of a status.scaling entry whose change is worth a status write.

    Observed values move every cycle; they are rewritten only with a decision
    that changes or when the shell refreshes them.
    """
    return (
        entry.variant,
        entry.current_replicas,
        entry.desired_replicas,
        entry.applied,
        entry.metric,
        entry.target,
        entry.code,
        entry.pending_direction,
        entry.pending_since,
        entry.last_scale_time,
    )


def decide(spec: ScalingSpec, inp: ScaleInput, now: float) -> Decision:
    metric, target = spec.target.metric, spec.target.value
    lo, hi = spec.min_replicas, spec.max_replicas
    cur, prev = inp.current, inp.previous
    applied = spec.mode == "Auto"

    def out(
        desired: int,
        code: str,
        reason: str,
        *,
        observed: float | None = None,
        pending: tuple[str, float] | None = None,
        last: float | None = prev.last_scale_time,
        missing: tuple[tuple[str, Reading], ...] = (),
    ) -> Decision:
        return Decision(
            variant=inp.variant,
            current=cur,
            desired=desired,
            applied=applied,
            metric=metric,
            target=target,
            code=code,
            reason=reason,
            observed=observed,
            pending_direction=pending[0] if pending else None,
            pending_since=pending[1] if pending else None,
            last_scale_time=last,
            missing=missing,
        )

    # Bounds changed under us (spec edit): follow them at once.
    if cur > hi or cur < lo:
        bounded = min(hi, max(lo, cur))
        return out(
            bounded,
            "ScaleUp" if bounded > cur else "ScaleDown",
            f"{cur} replicas is outside [minReplicas {lo}, maxReplicas {hi}]: {cur} -> {bounded}",
            last=now,
        )

    rate = inp.signals.get(REQUEST_RATE) or Reading("error", None, "not queried")
    if not rate.ok:
        return out(
            cur,
            "MetricsUnavailable",
            f"holding {cur} replicas: {REQUEST_RATE} is {rate.describe()}; "
            "missing data never scales in either direction",
            missing=((REQUEST_RATE, rate),),
        )

    observed: float | None = None
    if rate.num() == 0:
        direction: str | None = DOWN
        raw = lo
        why = "no requests (request rate 0)"
    else:
        m = inp.signals.get(metric) or Reading("error", None, "not queried")
        if not m.ok:
            return out(
                cur,
                "MetricsUnavailable",
                f"holding {cur} replicas: {metric} is {m.describe()} at "
                f"{rate.num():.3g} req/s; missing data never scales in either direction",
                missing=((metric, m),),
            )
        observed = m.num()
        ratio = observed / target
        if ratio > 1 + spec.tolerance:
            direction = UP
            raw = math.ceil(max(inp.ready, 1) * ratio)
            why = (
                f"{metric} {observed:.3g}ms > target {target:g}ms by more than "
                f"{spec.tolerance:.0%} (ratio {ratio:.2f}, {inp.ready} ready)"
            )
        elif ratio < 1 - spec.tolerance:
            direction = DOWN
            raw = math.ceil(cur * ratio)
            why = (
                f"{metric} {observed:.3g}ms < target {target:g}ms by more than "
                f"{spec.tolerance:.0%} (ratio {ratio:.2f})"
            )
        else:
            direction = None
            raw = cur
            why = f"{metric} {observed:.3g}ms is within {spec.tolerance:.0%} of target {target:g}ms"

    if direction is None:
        return out(cur, "Steady", f"{why}: {cur} replicas", observed=observed)

    if direction == UP:
        if cur >= hi:
            return out(cur, "AtMaxReplicas", f"{why}, but at maxReplicas {hi}", observed=observed)
        proposal = min(hi, cur + spec.up_step, max(cur + 1, raw))
        stab = spec.up_stabilization
    else:
        floor = max(lo, inp.floor)
        proposal = max(floor, cur - spec.down_step, raw)
        if proposal >= cur:
            code = "AtMinReplicas" if cur <= floor else "Steady"
            return out(cur, code, f"{why}: {cur} replicas", observed=observed)
        if inp.hold_down:
            return out(cur, "HeldDuringRollout", f"{why}, but {inp.hold_down}", observed=observed)
        stab = spec.down_stabilization

    since = (
        prev.pending_since
        if prev.pending_direction == direction and prev.pending_since is not None
        else now
    )
    if now - since < stab:
        return out(
            cur,
            "Stabilizing",
            f"{why}: {cur} -> {proposal} once this has held for {stab}s "
            f"(for {now - since:.0f}s so far)",
            observed=observed,
            pending=(direction, since),
        )

    unready = cur - inp.ready
    if direction == UP and unready > 0:
        recent = prev.last_scale_time is not None and now - prev.last_scale_time < (
            spec.warmup_seconds
        )
        if inp.starting > 0 or recent:
            return out(
                cur,
                "WarmingUp",
                f"{why}, but {unready} replica(s) are starting and count as coming capacity "
                f"(within warmupSeconds {spec.warmup_seconds})",
                observed=observed,
                pending=(direction, since),
            )

    # Act. In Observe mode nothing is applied, so the pending direction stays:
    # the recommendation holds for as long as the signal does.
    last = now if proposal != prev.desired else prev.last_scale_time
    verb = "scale" if applied else "would scale"
    return out(
        proposal,
        "ScaleUp" if direction == UP else "ScaleDown",
        f"{why}: {verb} {cur} -> {proposal}",
        observed=observed,
        pending=None if applied else (direction, since),
        last=last,
    )
