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
6. **Evidence (policy Demand).** Outside overload (measured on the queue), a
   scale-up needs readings that support it: none when the service time alone
   is over the target (``ServiceTimeBound``: replicas only lower queueing), and
   none from latency readings over too few requests (``TooFewRequests``, see
   :func:`min_samples`); corrections are not learnt from those either. Until
   the correction has been measured once, the observed target signal must be
   over the target as well and bounds the scale-up proportionally. One check,
   :func:`_evidence`.
7. **Rollout hold.** While a canary rollout is in flight the stable variant is
   never scaled down: it must be able to take all traffic back (flagger#1600).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from ..api.v1alpha1 import ScalingSpec, ScalingStatus, Signals
from . import queueing
from .signals import (
    BATCH_SIZE,
    BATCH_SIZE_NOW,
    COMPUTE_TIME,
    COMPUTE_TIME_NOW,
    P95_TYPICAL,
    P99_TYPICAL,
    PENDING,
    PENDING_GROWTH,
    QUEUE_TIME,
    RATE_1M_AGO,
    RATE_2M_AGO,
    RATE_3M_AGO,
    RATE_NOW,
    REQUEST_RATE,
    SCRAPE_SECONDS,
    Reading,
)

UP, DOWN = "Up", "Down"


@dataclass(frozen=True)
class Previous:
    """What the last decision for this variant remembered (from status.scaling)."""

    desired: int | None = None
    pending_direction: str | None = None
    pending_since: float | None = None
    last_scale_time: float | None = None
    # Policy Demand's memory: the most replicas asked for while a scale-down
    # stabilises, the model's correction factor and the measured load time.
    pending_replicas: int | None = None
    pending_low_replicas: int | None = None
    pending_low_since: float | None = None
    correction: float | None = None
    tail_correction: float | None = None
    load_time: float | None = None
    overloaded_at: float | None = None
    demand: float | None = None

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
            pending_replicas=entry.pending_replicas,
            pending_low_replicas=entry.pending_low_replicas,
            pending_low_since=entry.pending_low_since,
            correction=entry.correction,
            tail_correction=entry.tail_correction,
            load_time=entry.load_time_seconds,
            overloaded_at=entry.overloaded_at,
            demand=entry.demand,
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
    # Model-load times of the variant's ready pods (creation to ready, seconds),
    # and the ages of its pods that are still loading.
    load_times: tuple[float, ...] = ()
    loading_ages: tuple[float, ...] = ()
    # How long the youngest ready pod has been ready (None: unknown): the rate
    # windows describe the current fleet only once it has been stable that long.
    ready_for: float | None = None
    # The rate window of the signals (seconds): with the rate, how many requests
    # the latency readings of this cycle rest on.
    window_seconds: float = 60.0


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
    # Policy Demand: the numbers behind the decision.
    pending_replicas: int | None = None
    pending_low: tuple[int, float] | None = None
    demand: float | None = None
    capacity: float | None = None
    correction: float | None = None
    tail_correction: float | None = None
    predicted: float | None = None
    load_time: float | None = None
    overloaded_at: float | None = None

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
            pending_replicas=self.pending_replicas if pending else None,
            pending_low_replicas=self.pending_low[0] if pending and self.pending_low else None,
            pending_low_since=self.pending_low[1] if pending and self.pending_low else None,
            demand=_r(self.demand),
            capacity_per_replica=_r(self.capacity),
            correction=None if self.correction is None else round(self.correction, 4),
            tail_correction=None
            if self.tail_correction is None
            else round(self.tail_correction, 4),
            predicted_latency_ms=_r(self.predicted),
            load_time_seconds=None if self.load_time is None else round(self.load_time, 1),
            overloaded_at=self.overloaded_at,
            signals=signals,
        )


def _r(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return round(x, max(0, 3 - math.floor(math.log10(abs(x)))))


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
        entry.pending_replicas,
        entry.pending_low_replicas,
        entry.pending_low_since,
        # What policy Demand remembers: rewritten when it moves by about 10 %.
        None if not entry.correction else round(math.log(entry.correction) / math.log(1.1)),
        None
        if not entry.tail_correction
        else round(math.log(entry.tail_correction) / math.log(1.05)),
        None if entry.load_time_seconds is None else round(entry.load_time_seconds / 5),
        entry.overloaded_at,
    )


def _decision(
    spec: ScalingSpec,
    inp: ScaleInput,
    desired: int,
    code: str,
    reason: str,
    *,
    last: float | None,
    pending: tuple[str, float] | None = None,
    missing: tuple[tuple[str, Reading], ...] = (),
    observed: float | None = None,
    **numbers: Any,
) -> Decision:
    """The one builder of a :class:`Decision` (both policies): what is fixed by
    the spec and the input, plus the decision's own fields."""
    return Decision(
        variant=inp.variant,
        current=inp.current,
        desired=desired,
        applied=spec.mode == "Auto",
        metric=spec.target.metric,
        target=spec.target.value,
        code=code,
        reason=reason,
        observed=observed,
        pending_direction=pending[0] if pending else None,
        pending_since=pending[1] if pending else None,
        last_scale_time=last,
        missing=missing,
        **numbers,
    )


def decide(spec: ScalingSpec, inp: ScaleInput, now: float) -> Decision:
    """The variant's replicas by ``spec.policy``: Demand (default) or Proportional."""
    if spec.policy == "Proportional":
        return proportional(spec, inp, now)
    return demand(spec, inp, now)


def proportional(spec: ScalingSpec, inp: ScaleInput, now: float) -> Decision:
    """The earlier rule: replicas x observed/target of the target signal."""
    metric, target = spec.target.metric, spec.target.value
    lo, hi = spec.min_replicas, spec.max_replicas
    cur, prev = inp.current, inp.previous
    applied = spec.mode == "Auto"

    out = partial(_decision, spec, inp, last=prev.last_scale_time)

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


# ------------------------------------------------------------------ Demand

# The correction factor is kept within this range: a bad reading moves it, never far.
CORRECTION_RANGE = (0.25, 4.0)
# It is measured only where queueing is measurable and the M/G/1 model holds:
# utilisation within these bounds, no pod starting, the fleet unchanged for a
# rate window and a scrape (SETTLE_SECONDS), and a steady rate (the last minute
# within STEADY of the one before: the queue time of a changing load is not the
# queue time of its mean).
LEARN_RHO = (0.15, 0.9)
SETTLE_SECONDS = 90.0
STEADY = 0.1
# The tail correction is measured where the model's prediction is at least this
# fraction of the target (the region it is used in), and kept within TAIL_RANGE.
TAIL_NEAR = 0.8
TAIL_RANGE = (0.5, 2.0)
# A queue backlog is sized to drain within one model-load time, at least this;
# and never with less than this share of the old pods' speed (more replicas
# than that buy little: each old pod still serves its share of new arrivals).
DRAIN_MIN_SECONDS = 60.0
DRAIN_SHARE = 0.25
# Default scale-down stabilisation of policy Demand: twice the model-load time
# within these bounds (seconds); see down_stabilization().
DOWN_STABILIZATION = (60.0, 300.0)
# No trend is read from the offset rate windows within their span of an overload.
TREND_QUIET_SECONDS = 240.0
# Evidence. A latency reading over too few requests is one request's latency,
# not a property of the fleet (Triton counts even its model_warmup request: one
# cold 265 ms request once read as an idle service's p99). A p-quantile over n
# requests is the ceil(p n)-th of them; below n = 1 / (1 - p) that is the slowest
# one, which a single request decides: a quantile target (and the typical pod's
# quantile, for the tail correction) needs that many requests per pod in its
# window. A mean (compute, queue and average latency, fleet counters) needs
# MIN_MEAN_SAMPLES, the usual n for a mean's normal approximation. Below these
# no latency reading scales up or corrects the model; the queue still does.
MIN_MEAN_SAMPLES = 30


def min_samples(metric: str) -> int:
    """Requests a reading of ``metric`` must rest on to count as evidence."""
    p = queueing.QUANTILE.get(metric)
    return MIN_MEAN_SAMPLES if p is None else math.ceil(1.0 / (1.0 - p) - 1e-9)


def measured_load_time(spec: ScalingSpec, inp: ScaleInput) -> float | None:
    """Creation-to-ready of the variant's pods (the longest seen), or what status
    remembered; a pod still loading for longer raises it, within warmupSeconds."""
    bound = float(spec.warmup_seconds) if spec.warmup_seconds > 0 else math.inf
    seen = [d for d in inp.load_times if 0 <= d <= bound]
    lt = max(seen) if seen else inp.previous.load_time
    loading = [min(a, bound) for a in inp.loading_ages if a >= 0]
    if loading and (lt is None or max(loading) > lt):
        lt = max(loading)
    return lt


def down_stabilization(spec: ScalingSpec, load_time: float | None) -> float:
    """How long a scale-down must be called for first (policy Demand).

    ``scaleDown.stabilizationSeconds`` when set. Otherwise twice the measured
    model-load time, within DOWN_STABILIZATION: a spare replica is kept about as
    long as getting it back would take (the ski-rental rule: holding for the
    re-acquisition cost is never worse than twice the best choice in hindsight),
    and never shorter than a rate window plus a scrape, so noise does not flap.
    """
    if spec.scale_down.stabilization_seconds is not None:
        return float(spec.scale_down.stabilization_seconds)
    if load_time is None:
        return float(DOWN_STABILIZATION[1])
    return min(max(2.0 * load_time, DOWN_STABILIZATION[0]), DOWN_STABILIZATION[1])


def demand(spec: ScalingSpec, inp: ScaleInput, now: float) -> Decision:
    """Size the variant from its demand through the M/G/1 model (:mod:`.queueing`)."""
    metric = spec.target.metric
    lo, hi = spec.min_replicas, spec.max_replicas
    cur, prev = inp.current, inp.previous
    applied = spec.mode == "Auto"
    floor = max(lo, inp.floor)
    load_time = measured_load_time(spec, inp)
    sig = inp.signals
    rd = sig.get(metric)
    observed = rd.num() if rd is not None and rd.ok else None

    def out(
        desired: int,
        code: str,
        reason: str,
        *,
        pending: tuple[str, float] | None = None,
        pending_replicas: int | None = None,
        pending_low: tuple[int, float] | None = None,
        last: float | None = prev.last_scale_time,
        missing: tuple[tuple[str, Reading], ...] = (),
        numbers: dict[str, float | None] | None = None,
    ) -> Decision:
        n = numbers or {}
        return _decision(
            spec,
            inp,
            desired,
            code,
            reason,
            last=last,
            pending=pending,
            missing=missing,
            observed=observed,
            pending_replicas=pending_replicas if pending else None,
            pending_low=pending_low if pending else None,
            demand=n.get("demand"),
            capacity=n.get("capacity"),
            correction=n.get("correction", prev.correction),
            tail_correction=n.get("tail_correction", prev.tail_correction),
            predicted=n.get("predicted"),
            load_time=load_time,
            overloaded_at=n.get("overloaded_at", prev.overloaded_at),
        )

    if cur > hi or cur < lo:
        bounded = min(hi, max(lo, cur))
        return out(
            bounded,
            "ScaleUp" if bounded > cur else "ScaleDown",
            f"{cur} replicas is outside [minReplicas {lo}, maxReplicas {hi}]: {cur} -> {bounded}",
            last=now,
        )

    rate = sig.get(REQUEST_RATE) or Reading("error", None, "not queried")
    if not rate.ok:
        return out(
            cur,
            "MetricsUnavailable",
            f"holding {cur} replicas: {REQUEST_RATE} is {rate.describe()}; "
            "missing data never scales in either direction",
            missing=((REQUEST_RATE, rate),),
        )

    numbers: dict[str, float | None] = {}
    held: str | None = None  # why a scale-up the model asked for is not taken
    if rate.num() == 0:
        need_up, need_down = lo, lo
        why = "no requests (request rate 0)"
        numbers["demand"] = 0.0
    else:
        compute = sig.get(COMPUTE_TIME) or Reading("error", None, "not queried")
        if not compute.ok or compute.num() <= 0:
            return out(
                cur,
                "MetricsUnavailable",
                f"holding {cur} replicas: {COMPUTE_TIME} is {compute.describe()} at "
                f"{rate.num():.3g} req/s; missing data never scales in either direction",
                missing=((COMPUTE_TIME, compute),),
            )
        need_up, need_down, why, numbers, held = _size(
            spec, inp, rate.num(), compute.num(), load_time, now
        )

    if need_up > cur:
        if cur >= hi:
            return out(cur, "AtMaxReplicas", f"{why}, but at maxReplicas {hi}", numbers=numbers)
        proposal = min(hi, cur + spec.up_step, need_up)
        since = (
            prev.pending_since
            if prev.pending_direction == UP and prev.pending_since is not None
            else now
        )
        if now - since < spec.up_stabilization:
            return out(
                cur,
                "Stabilizing",
                f"{why}: {cur} -> {proposal} once this has held for {spec.up_stabilization}s "
                f"(for {now - since:.0f}s so far)",
                pending=(UP, since),
                pending_replicas=proposal,
                numbers=numbers,
            )
        return _act(out, prev, applied, cur, proposal, UP, since, why, now, numbers)

    proposal = max(floor, cur - spec.down_step, need_down)
    if proposal >= cur:
        code = "AtMinReplicas" if cur <= floor and rate.num() == 0 else "Steady"
        if cur <= floor and need_down <= floor:
            code = "AtMinReplicas"
        if held:
            code = held
        return out(cur, code, f"{why}: {cur} replicas", numbers=numbers)
    if inp.hold_down:
        return out(cur, "HeldDuringRollout", f"{why}, but {inp.hold_down}", numbers=numbers)

    # Scale-down stabilisation, HPA's rule (the highest call of the window) kept in
    # two levels: every call since ``since`` allowed ``high``; every call since
    # ``low_since`` allowed ``low`` < high.
    stab = down_stabilization(spec, load_time)
    if prev.pending_direction == DOWN and prev.pending_since is not None:
        since = prev.pending_since
        high = max(proposal, prev.pending_replicas or proposal)
        low: tuple[int, float] | None = None
        if prev.pending_low_replicas is not None and prev.pending_low_since is not None:
            low = (max(proposal, prev.pending_low_replicas), prev.pending_low_since)
        if proposal < (low[0] if low else high):
            low = (proposal, now) if low is None or low[0] >= high else low
        if low is not None and low[0] >= high:
            low = None
    else:
        since, high, low = now, proposal, None
    # The lowest level that has held for the window, else wait.
    if low is not None and now - low[1] >= stab:
        return _act(out, prev, applied, cur, low[0], DOWN, since, why, now, numbers)
    if now - since >= stab:
        if low is None:
            return _act(out, prev, applied, cur, high, DOWN, since, why, now, numbers)
        if high < cur:
            # The higher level has held: go there, keep waiting for the lower one.
            d = _act(out, prev, applied, cur, high, DOWN, since, why, now, numbers)
            if applied:
                return replace(
                    d,
                    pending_direction=DOWN,
                    pending_since=low[1],
                    pending_replicas=low[0],
                    pending_low=None,
                )
            return d
        since, high, low = low[1], low[0], None
    return out(
        cur,
        "Stabilizing",
        f"{why}: {cur} -> {high} once this has held for {stab:g}s (for {now - since:.0f}s so far)"
        + (f", then {low[0]}" if low else ""),
        pending=(DOWN, since),
        pending_replicas=high,
        pending_low=low,
        numbers=numbers,
    )


def _act(
    out: Callable[..., Decision],
    prev: Previous,
    applied: bool,
    cur: int,
    proposal: int,
    direction: str,
    since: float,
    why: str,
    now: float,
    numbers: dict[str, float | None],
) -> Decision:
    if proposal == cur:
        return out(cur, "Steady", f"{why}: {cur} replicas", numbers=numbers)
    last = now if proposal != prev.desired else prev.last_scale_time
    verb = "scale" if applied else "would scale"
    return out(
        proposal,
        "ScaleUp" if direction == UP else "ScaleDown",
        f"{why}: {verb} {cur} -> {proposal}",
        # In Observe mode nothing is applied: the recommendation stays pending.
        pending=None if applied else (direction, since),
        pending_replicas=proposal,
        last=last,
        numbers=numbers,
    )


def _opt(signals: Mapping[str, Reading], name: str) -> float | None:
    r = signals.get(name)
    return r.num() if r is not None and r.ok else None


def _requests(metric: str, rate: float, inp: ScaleInput) -> tuple[float, int]:
    """The requests a reading of ``metric`` rests on this cycle, and the least it
    needs (:func:`min_samples`): per pod for a quantile (Triton's summaries are
    per process), over the fleet for a mean (fleet sums of counters)."""
    n = rate * inp.window_seconds
    if metric in queueing.QUANTILE:
        n /= max(inp.ready, 1)
    return n, min_samples(metric)


def _count(metric: str) -> str:
    return "per pod" if metric in queueing.QUANTILE else "in the window"


def _size(
    spec: ScalingSpec,
    inp: ScaleInput,
    rate: float,
    exec_ms: float,
    load_time: float | None,
    now: float,
) -> tuple[int, int, str, dict[str, float | None], str | None]:
    """Replicas needed to go up to and down to, why, the numbers behind it, and
    the code of a hold when the readings do not support the scale-up asked for."""
    metric, target = spec.target.metric, spec.target.value
    lo, hi = spec.min_replicas, spec.max_replicas
    sig = inp.signals
    prev = inp.previous
    batch = _opt(sig, BATCH_SIZE)
    batch = batch if batch is not None and batch >= 1 else 1.0
    work = exec_ms / batch  # instance time per request, ms
    queue = _opt(sig, QUEUE_TIME)
    backlog = _opt(sig, PENDING)
    growth = _opt(sig, PENDING_GROWTH)
    ago1 = _opt(sig, RATE_1M_AGO)
    ago2 = _opt(sig, RATE_2M_AGO)

    # Overload: the queues already hold more than the target's worth of work per
    # ready pod. Completions are then capped by the pods, not set by the arrivals:
    # the arrival rate is the latest completion rate plus the queue's growth.
    ready = max(inp.ready, 1)
    overloaded = bool(backlog) and backlog is not None and backlog * work / ready >= target
    overloaded_at = now if overloaded else prev.overloaded_at
    # Within the offset windows' span (4 minutes) of an overload, those windows
    # show how fast capacity came, not a trend, and the queue time shows the
    # backlog draining, not the model: neither is learnt from then.
    quiet = overloaded_at is None or now - overloaded_at >= TREND_QUIET_SECONDS

    # Correction: measured over predicted (M/M/1) mean queue time, where measurable.
    k = prev.correction
    measured: float | None = None
    rho_now = queueing.utilisation(rate / inp.ready, work) if inp.ready > 0 else None
    # The ready fleet is the one the rate windows describe once its youngest pod
    # has been ready for a window and a scrape, and no pod left it since: a
    # scale-up whose pods are still loading does not change it (the ReplicaSet
    # removes loading pods first), a recent scale-down otherwise may have.
    settled = (
        inp.ready_for is not None
        and inp.ready_for >= SETTLE_SECONDS
        and (
            prev.last_scale_time is None
            or now - prev.last_scale_time >= SETTLE_SECONDS
            or inp.starting > 0
        )
    )
    ref = ago1 if ago1 is not None else _opt(sig, RATE_NOW)
    steady = ref is not None and abs(rate - ref) <= STEADY * max(rate, ref)
    if (
        queue is not None
        and rho_now is not None
        and LEARN_RHO[0] <= rho_now <= LEARN_RHO[1]
        and settled
        and steady
        and quiet
        and _requests(QUEUE_TIME, rate, inp)[0] >= MIN_MEAN_SAMPLES
    ):
        expected = queueing.mean_wait_ms(rho_now, work, 1.0)
        if expected > 0:
            measured = min(max(queue / expected, CORRECTION_RANGE[0]), CORRECTION_RANGE[1])
            k = measured
    if k is None:
        k = 1.0

    # Tail correction: the typical pod's measured quantile over the model's, taken
    # near the target (where the model is used), on the same steady fleet.
    kt = prev.tail_correction
    tail_measured = False
    typical_signal = {"p99LatencyMs": P99_TYPICAL, "p95LatencyMs": P95_TYPICAL}.get(metric)
    typical = _opt(sig, typical_signal) if typical_signal else None
    if (
        typical is not None
        and rho_now is not None
        and rho_now < 1
        and settled
        and steady
        and quiet
        and _requests(metric, rate, inp)[0] >= min_samples(metric)
    ):
        model = queueing.predict_ms(metric, rate / inp.ready, work, exec_ms, k)
        if math.isfinite(model) and model >= TAIL_NEAR * target:
            kt = min(max(typical / model, TAIL_RANGE[0]), TAIL_RANGE[1])
            tail_measured = True
    if kt is None:
        kt = 1.0

    # Demand: arrivals (completions plus queue growth) and the rise a sustained
    # trend brings over one model-load time. When the last scrape interval's rate
    # is above the window's by more than Poisson noise (3 standard deviations),
    # the load has just jumped: size for it now.
    now_rate = _opt(sig, RATE_NOW)
    noise = 3 * math.sqrt(rate / SCRAPE_SECONDS)  # of a scrape interval's Poisson count
    base = rate
    jumped = False
    # Within a rate window and a scrape of a scale-down the last scrape interval's
    # rate still counts the removed pods: a range selector keeps a series' samples
    # up to its staleness marker, so irate() adds their last rate to the survivors',
    # which already took their share over. No jump is read from it then (the queue
    # still shows an overload). The last change removed pods when none is starting
    # and none became ready since.
    since_scale = None if prev.last_scale_time is None else now - prev.last_scale_time
    removed = (
        since_scale is not None
        and since_scale < inp.window_seconds + SCRAPE_SECONDS
        and inp.starting == 0
        and (inp.ready_for is None or inp.ready_for >= since_scale)
    )
    if now_rate is not None and not removed and now_rate > rate + noise:
        base, jumped = now_rate, True
    # While (and for a rate window after) the variant is overloaded, completions
    # are capped by the pods and then swollen by the drain: the last scrape
    # interval's completions plus the queue's growth over the same interval are
    # the arrivals. A queue that grows holds its pods busy: they complete at full
    # speed, so the arrivals are at least that plus the growth.
    mu = 1000.0 / work if work > 0 else math.inf  # requests per second at rho = 1
    # A pod that became ready within the last two scrapes mixes two fleets in
    # those instantaneous readings (its own series start, old pods still drain):
    # they then never raise the demand above the last decision's.
    recent = overloaded_at is not None and now - overloaded_at < SETTLE_SECONDS
    fresh = inp.ready_for is not None and inp.ready_for < 2 * SCRAPE_SECONDS
    if (overloaded or recent) and now_rate is not None:
        base, jumped = now_rate, True
        if overloaded and not fresh and growth is not None and growth > 0:
            base = max(base, inp.ready * mu)
    arrivals = _arrivals(base, growth)
    if (overloaded or recent) and fresh and prev.demand is not None:
        arrivals = min(arrivals, prev.demand)
    lt = load_time or 0.0
    rise = 0.0
    ago3 = _opt(sig, RATE_3M_AGO)
    if quiet and ago1 is not None and ago2 is not None and ago3 is not None:
        # A trend rises in each of the last three minutes; a jump shows in at most
        # two of them (the minute windows on either side of it).
        per_minute = min(rate - ago1, ago1 - ago2, ago2 - ago3)
        if per_minute > 0:
            rise = per_minute * lt / 60.0
    need = arrivals + rise

    # Backlog: the queued requests sit in the ready pods' FIFO queues; capacity
    # that arrives only takes new requests away from them. By the time the pods
    # that are loading are ready the backlog has grown at the queue's measured
    # growth; after that, each old pod drains at its full speed minus its share
    # of the arrivals. Replicas for that to take at most one model-load time (at
    # least DRAIN_MIN_SECONDS) - counting the pods already starting, so a
    # backlog they will drain is not sized for again.
    drain_n = 0
    drain_s = max(DRAIN_MIN_SECONDS, lt)
    future = 0.0
    if backlog and backlog > 0 and math.isfinite(mu):
        ages = [a for a in inp.loading_ages if a >= 0]
        until = max(0.0, lt - min(ages)) if ages else (lt if overloaded else 0.0)
        # Measured, not modelled: with dynamic batching the pods' saturated
        # throughput is well above what the window's batch size says.
        future = backlog + max(0.0, growth or 0.0) * until
        per_pod = future / ready / drain_s
        speed = max(mu - per_pod, mu * DRAIN_SHARE)
        drain_n = min(hi + 1, math.ceil(arrivals / speed - 1e-9))

    cap = queueing.capacity(metric, target / kt, work, exec_ms, k)
    cap_down = queueing.capacity(metric, target * (1 - spec.tolerance) / kt, work, exec_ms, k)
    up = queueing.replicas_for(need, cap, hi)
    down_arrivals = max(arrivals, _arrivals(rate, growth))
    # A drop, the mirror of a jump: the last scrape interval's rate below the
    # window's by more than Poisson noise sizes the scale-down now, instead of
    # once the window has caught up (it lags a sudden drop by a minute). Not
    # while a pod has just become ready (its series' first sample adds nothing to
    # irate() yet its share is taken) nor around an overload (completions are
    # capped, then swollen by the drain). The stabilisation window still decides
    # when to act: it keeps the highest call.
    dropped = (
        now_rate is not None
        and not (overloaded or recent or fresh)
        and now_rate < rate - noise
    )
    if dropped and now_rate is not None:
        down_arrivals = _arrivals(now_rate, growth)
    down = queueing.replicas_for(down_arrivals, cap_down, hi)
    need_up = max(lo, up if up is not None else hi + 1, drain_n)
    need_down = max(lo, down if down is not None else hi, drain_n)
    # Replicas lower latency only by lowering queueing: the readings must support
    # a scale-up (:func:`_evidence`). At least the replicas that keep up with the
    # arrivals at all (rho < 1), and those the backlog needs, are always supported.
    keep_up = queueing.replicas_for(need, mu, hi)
    least = max(lo, drain_n, keep_up if keep_up is not None else hi + 1)
    rd = sig.get(metric)
    need_up, held, hold_why = _evidence(
        spec,
        inp,
        rate=rate,
        need_up=need_up,
        least=least,
        cap=cap,
        overloaded=overloaded,
        calibrated=measured is not None or prev.correction is not None,
        observed=rd.num() if rd is not None and rd.ok else None,
        queue=queue,
        exec_ms=exec_ms,
        tail=kt,
    )
    at = min(hi, need_up)
    predicted = kt * queueing.predict_ms(metric, need / at, work, exec_ms, k)
    last = f", {base:.3g} in the last scrape" if jumped else ""
    if dropped:
        last = f", down to {now_rate:.3g} in the last scrape"
    parts = [f"completing {rate:.3g}{last}"]
    if growth is not None and abs(growth) >= 0.05 * max(rate, 1.0):
        parts.append(f"queue growth {growth:+.3g}")
    if overloaded:
        parts.append("overloaded")
    if rise:
        parts.append(f"trend +{rise:.3g} over load time {lt:.0f}s")
    why = (
        f"demand {need:.3g} req/s ({', '.join(parts)}); one replica serves {cap:.3g} req/s "
        f"within {metric} {target:g}ms (M/G/1: {exec_ms:.3g}ms per execution, batch "
        f"{batch:.2g}{_batch_now(sig, batch)}, "
        f"correction {k:.2f}{' measured' if measured is not None else ''}, "
        f"tail {kt:.2f}{' measured' if tail_measured else ''}); "
        f"predicted {metric} {_fmt(predicted)} at {at} replicas"
    )
    if drain_n > (up or 0) and future:
        why += (
            f"; backlog {backlog:.0f} (about {future:.0f} once the loading pods are ready) "
            f"drains within {drain_s:.0f}s at {drain_n} replicas"
        )
    why += hold_why
    numbers: dict[str, float | None] = {
        "demand": need,
        "capacity": cap,
        "correction": k if (measured is not None or prev.correction is not None) else None,
        "predicted": predicted,
        "tail_correction": kt if (tail_measured or prev.tail_correction is not None) else None,
        "measured": measured if measured is not None else prev.correction,
        "overloaded_at": overloaded_at,
    }
    return need_up, need_down, why, numbers, held


def _arrivals(rate: float, growth: float | None) -> float:
    """Arrivals from a completion ``rate``: plus the queue's growth (requests that
    arrived and are not completed yet), when it is known."""
    return max(0.0, rate + growth) if growth is not None else rate


def _batch_now(sig: Mapping[str, Reading], batch: float) -> str:
    """The last scrape's batch size and execution time, when the pods batch at
    least one request more there than over the window (dynamic batching under a
    rising load): shown, not sized from (docs/control.md, Dynamic batching)."""
    b_now, e_now = _opt(sig, BATCH_SIZE_NOW), _opt(sig, COMPUTE_TIME_NOW)
    if b_now is None or e_now is None or b_now < batch + 1:
        return ""
    return f" ({b_now:.2g} at {e_now:.3g}ms in the last scrape)"


def _evidence(
    spec: ScalingSpec,
    inp: ScaleInput,
    *,
    rate: float,
    need_up: int,
    least: int,
    cap: float,
    overloaded: bool,
    calibrated: bool,
    observed: float | None,
    queue: float | None,
    exec_ms: float,
    tail: float,
) -> tuple[int, str | None, str]:
    """The replicas up to which the readings support a scale-up to ``need_up``, the
    code of the hold when they support less, and what to add to the reason.

    Replicas lower latency only by lowering queueing. Unless the queues say the
    pods are overloaded (they then hold more than the target's worth of work and
    the sizing stands), a scale-up rests on the latency readings and the model:

    * none when the service time alone is over the target (``ServiceTimeBound``:
      no replica count meets it), and none from compute and queue times over
      fewer than MIN_MEAN_SAMPLES requests (``TooFewRequests``); ``least`` (the
      replicas that keep up with the arrivals and the backlog) always stands;
    * until the correction has been measured once the model is only a prior
      (M/M/1, pessimistic for most models): the observed target signal must be
      over the target, over enough requests (:func:`min_samples`; in overload
      the queue is the evidence), and then bounds the scale-up proportionally.
    """
    metric, target = spec.target.metric, spec.target.value
    cur = inp.current
    held: str | None = None
    why = ""
    if not overloaded and need_up > cur:
        n_mean = _requests(COMPUTE_TIME, rate, inp)[0]
        if cap <= 0:
            # Even with no queueing at all the latency is the service time: no
            # replica count meets the target, and more only cost.
            queued = f"{queue:.3g}ms queued" if queue is not None else "queue time unknown"
            why = (
                f"; latency is service-time bound: {exec_ms:.3g}ms compute per execution "
                f"(tail {tail:.2f}) of the {target:g}ms {metric} target, {queued}: no replica "
                "count meets it, replicas would not help"
            )
            held = "ServiceTimeBound"
        elif n_mean < MIN_MEAN_SAMPLES:
            why = (
                f"; the compute and queue times rest on {n_mean:.3g} requests in the window, "
                f"fewer than {MIN_MEAN_SAMPLES}: no evidence for a scale-up (the queue is)"
            )
            held = "TooFewRequests"
        if held and least < need_up:
            need_up = least
            if least > cur:
                why += f"; {least} replicas keep up with the arrivals and the backlog"
        else:
            held, why = None, ""
    if not calibrated and need_up > cur:
        n, enough = _requests(metric, rate, inp)
        thin = n < enough and not overloaded
        if observed is not None and observed > target and thin and not held:
            why += (
                f"; the model is not calibrated yet and {metric} {observed:.3g}ms rests on "
                f"{n:.3g} requests {_count(metric)}, fewer than {enough}: one request's "
                "latency is no evidence for a scale-up"
            )
            need_up = cur
            held = "TooFewRequests"
        elif observed is None or observed <= target:
            why += f"; the model is not calibrated yet and {metric} is within target"
            need_up = cur
        else:
            bound = max(cur, math.ceil(max(inp.ready, 1) * observed / target))
            if bound < need_up:
                why += (
                    f"; the model is not calibrated yet: at most {bound} replicas, "
                    f"{metric} {observed:.3g}ms x {inp.ready} ready / target {target:g}ms"
                )
                need_up = bound
    return need_up, held, why


def _fmt(x: float) -> str:
    return f"{x:.3g}ms" if math.isfinite(x) else "unbounded (overloaded)"
