"""One pure control decision per InferenceService per cycle.

The shell (:mod:`sluice.reconcile.control`) reads the world once per cycle
(Prometheus, the Deployments, their pods), turns it into a
:class:`ServiceInput` per InferenceService, calls :func:`decide` and writes
what it returns. A simulator drives the very same function with made-up but
typed deployments, pods, observations and a clock.

The decision, in order:

1. **The canary step** (:func:`canary_step`): the rollout state machine of
   :mod:`sluice.policy.canary` over a :class:`~sluice.policy.canary.World`
   built from the input (:func:`canary_world`).
2. **The plan** that follows from the new rollout state
   (:func:`sluice.policy.plan.plan`).
3. **The scaling step** (:func:`scaling_step`): one
   :func:`sluice.policy.scaling.decide` per planned variant, over a
   :class:`~sluice.policy.scaling.ScaleInput` each (:func:`scale_inputs`).
4. **Signals and conditions**: the per-variant signals side by side, the
   MetricsAvailable condition (did the decisions have what they need?) and
   the Canary condition.

Level-triggered: observed values move every cycle, but they are rewritten
only when a decision changes with them or when the recorded ones are older
than the refresh period; a cycle that changes nothing that matters returns
``status=None`` and no Events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..api.v1alpha1 import (
    BASELINE_VARIANT,
    CANARY_VARIANT,
    MAIN_VARIANT,
    AnalysisStatus,
    ExperimentStatus,
    InferenceServiceSpec,
    InferenceServiceStatus,
    RevisionStatus,
    RolloutStatus,
    ScalingStatus,
    Signals,
)
from ..render.plan import Variant
from . import analysis
from . import canary as canary_policy
from . import scaling as scaling_policy
from . import signals as sig
from .events import Event
from .plan import Observed, Revision, canary_replicas, canary_share, plan, spec_revision
from .readiness import DeploymentState, PodState

METRICS_CONDITION = "MetricsAvailable"
CANARY_CONDITION = "Canary"

# (variant, signal, reading): a signal a decision needed and did not get.
Missing = tuple[str, str, sig.Reading]


def uses_metrics(spec: InferenceServiceSpec) -> bool:
    """Whether decisions (or the A/B comparison) of this spec read Prometheus."""
    return (
        (spec.scaling is not None and spec.scaling.mode != "Off")
        or spec.rollout.strategy == "Canary"
        or bool(spec.variants)
    )


# ----------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ControlConfig:
    """The shell's settings that change decisions."""

    # Observed values are rewritten at most this often unless a decision
    # changes with them (seconds).
    signals_refresh: float = 60.0
    # Whether a Prometheus is configured at all (sluice run --prometheus-url).
    prometheus_configured: bool = True
    # The {window} of every rate() (s): the judge takes one batch of evidence per window.
    rate_window_seconds: float = 60.0


@dataclass(frozen=True)
class ServiceInput:
    """Everything one InferenceService's decision depends on, typed."""

    namespace: str
    name: str
    spec: InferenceServiceSpec
    status: InferenceServiceStatus
    generation: int
    # What Prometheus said this cycle (fleet-wide, looked up by this service's
    # key), or None when the service reads no metrics.
    observations: sig.Observations | None
    # The variant's Deployment, by variant name.
    deployments: Mapping[str, DeploymentState] = field(default_factory=dict)
    # Every pod of the service (all variants).
    pods: Sequence[PodState] = ()
    config: ControlConfig = field(default_factory=ControlConfig)
    # metadata.annotations: the one-shot rollout requests (sluice.dev/abort, ...).
    annotations: Mapping[str, str] = field(default_factory=dict)

    def requests(self) -> dict[str, str]:
        """One-shot request tokens by kind, from the annotations."""
        out = {}
        for kind in ("abort", "promote", "retry"):
            v = self.annotations.get(f"sluice.dev/{kind}")
            if v:
                out[kind] = str(v)
        return out

    def readings(self, variant: str) -> dict[str, sig.Reading]:
        if self.observations is None:
            return {}
        return self.observations.variant((self.namespace, self.name, variant))

    def pods_of(self, variant: str) -> list[PodState]:
        return [p for p in self.pods if p.variant == variant]

    @property
    def ready(self) -> dict[str, int]:
        """Ready pods per variant."""
        return {v: d.ready for v, d in self.deployments.items()}


# ----------------------------------------------------------------- output


@dataclass(frozen=True)
class ServiceDecision:
    """The new status (None: nothing worth writing changed) and the Events to post."""

    status: InferenceServiceStatus | None
    events: tuple[Event, ...] = ()


def decide(inp: ServiceInput, now: float) -> ServiceDecision:
    """The control decision of one InferenceService at ``now`` (epoch seconds)."""
    # Status keeps milliseconds: decide on the time as it will be recorded.
    now = math.floor(now * 1000) / 1000
    spec, old = inp.spec, inp.status
    events: list[Event] = []
    # 0. The A/B experiment's verdicts (and a promoted winner, which main then serves).
    experiment, ev = experiment_step(inp, now)
    events.extend(ev)
    old_promoted = old.experiment.promoted if old.experiment else None
    observed = Observed(
        scaled=old.scaled_replicas(),
        ready=inp.ready,
        promoted=experiment.promoted if experiment else old_promoted,
    )

    # 1. The canary state machine.
    outcome = canary_step(inp, plan(spec, old.rollout, observed), now)
    events.extend(outcome.events)

    # 2. The plan that follows from it.
    variants = plan(spec, outcome.rollout, observed)
    missing: list[Missing] = []
    if outcome.check is not None:
        missing.extend(m for m in outcome.check.missing if inp.ready.get(m[0], 0) > 0)

    # 3. One scaling decision per variant.
    if spec.scaling is not None and spec.scaling.mode != "Off":
        step = scaling_step(inp, variants, outcome.rollout, now)
        events.extend(step.events)
        missing.extend(step.missing)
        scaling = step.entries
    else:
        scaling = ()

    # 4. Signals side by side, and whether the decisions had what they need.
    if uses_metrics(spec) and inp.observations is not None:
        rows, rate_missing = signal_rows(inp, variants, now)
        missing.extend(rate_missing)
        new = replace(
            old, rollout=outcome.rollout, experiment=experiment, scaling=scaling, signals=rows
        )
        new, ev = metrics_condition(
            new, missing, now, inp.generation, configured=inp.config.prometheus_configured
        )
        events.extend(ev)
    else:
        new = replace(
            old, rollout=outcome.rollout, experiment=experiment, scaling=scaling, signals=()
        )
        new = new.without_condition(METRICS_CONDITION)

    cc = canary_policy.condition(outcome.rollout)
    if cc is None:
        new = new.without_condition(CANARY_CONDITION)
    else:
        new = new.with_condition(CANARY_CONDITION, *cc, now, inp.generation)

    if new.same_as(old):
        return ServiceDecision(None)
    return ServiceDecision(new, tuple(events))


# --------------------------------------------------------- the experiment


def experiment_step(inp: ServiceInput, now: float) -> tuple[ExperimentStatus | None, list[Event]]:
    """Every A/B variant judged against main, one batch per rate window; the winner
    named once conclusive, and promoted to main with promoteWinner."""
    spec, old = inp.spec, inp.status.experiment
    e = spec.experiment
    if e is None or not spec.variants:
        return None, []
    if old is not None and old.promoted is not None:
        return old, []  # decided and promoted: the experiment is over
    events: list[Event] = []
    crit = analysis.experiment_criteria(e)
    gate = analysis.experiment_gate(e)
    prev = {a.candidate: a for a in (old.variants if old else ())}
    out: list[AnalysisStatus] = []
    main_ready = inp.ready.get(MAIN_VARIANT, 0)
    for v in spec.variants:
        before = prev.get(v.name)
        if before is None or main_ready == 0 or inp.ready.get(v.name, 0) == 0:
            # Evidence starts once both serve (their first window begins now).
            out.append(before or analysis.start(v.name, MAIN_VARIANT, now))
            continue
        cmp = analysis.compare(
            crit, gate, before, inp.readings(v.name), inp.readings(MAIN_VARIANT), now,
            inp.config.rate_window_seconds,
        )  # fmt: skip
        events.extend(
            analysis.verdict_events(before, cmp, f"experiment {v.name} vs main", experiment=True)
        )
        out.append(cmp.status)
    winners = [a.better for a in out if a.better is not None]
    winner: str | None = None
    if winners:
        # A variant better than main wins; main wins only if better than every variant.
        challengers = [w for w in winners if w != MAIN_VARIANT]
        if challengers:
            winner = challengers[0]
        elif len(winners) == len(out):
            winner = MAIN_VARIANT
    before_winner = old.winner if old else None
    promoted: RevisionStatus | None = None
    msg = (
        f"{winner} is better (on {e.signals[0]}, and worse on no signal)"
        if winner
        else "inconclusive: no variant is shown better than main yet"
    )
    if winner is not None and winner != before_winner:
        events.append(Event("Normal", "ExperimentWinner", f"experiment: {msg}"))
    if winner is not None and winner != MAIN_VARIANT and e.promote_winner:
        v = next(x for x in spec.variants if x.name == winner)
        promoted = RevisionStatus(
            version=v.model.version or spec.model.version, image=v.triton.image or spec.triton.image
        )
        msg += f"; promoted: main now serves version {promoted.version} ({promoted.image})"
        events.append(Event("Normal", "ExperimentPromoted", f"experiment: {msg}"))
    return ExperimentStatus(
        variants=tuple(out), winner=winner, promoted=promoted, message=msg
    ), events


# ------------------------------------------------------------- the canary


def canary_world(inp: ServiceInput, before: Sequence[Variant]) -> canary_policy.World:
    """What the canary state machine sees, from the plan before this cycle's step."""
    prev = inp.status.rollout
    main_replicas = next(v for v in before if v.name == MAIN_VARIANT).replicas
    main = inp.deployments.get(MAIN_VARIANT)
    main_rev = None
    if main is not None and main.version is not None and main.image:
        main_rev = Revision(main.version, main.image)
    canary_ready = 0
    canary = inp.deployments.get(CANARY_VARIANT)
    if (
        prev is not None
        and prev.canary is not None
        and canary is not None
        and canary.version == prev.canary.version
        and canary.image == prev.canary.image
    ):
        canary_ready = canary.current_ready
    routed = None
    routed_variant = inp.status.variant(CANARY_VARIANT)
    if routed_variant is not None:
        routed = int(routed_variant.weight or 0)
    return canary_policy.World(
        spec_revision=spec_revision(inp.spec),
        main_replicas=main_replicas,
        main_revision=main_rev,
        # Every wanted replica runs the current template and is ready; no old pod left.
        main_rolled_out=bool(
            main is not None
            and main.replicas == main_replicas
            and main.current_ready >= main_replicas
        ),
        canary_ready=canary_ready,
        routed_canary_weight=routed,
        canary=inp.readings(CANARY_VARIANT),
        stable=inp.readings(MAIN_VARIANT),
        baseline=inp.readings(BASELINE_VARIANT),
        baseline_ready=_baseline_ready(inp, prev),
        window_seconds=inp.config.rate_window_seconds,
        requests=inp.requests(),
    )


def _baseline_ready(inp: ServiceInput, prev: RolloutStatus | None) -> int:
    """Ready baseline pods that run the stable revision."""
    dep = inp.deployments.get(BASELINE_VARIANT)
    if prev is None or prev.stable is None or dep is None:
        return 0
    if dep.version != prev.stable.version or dep.image != prev.stable.image:
        return 0
    return dep.current_ready


def canary_step(inp: ServiceInput, before: Sequence[Variant], now: float) -> canary_policy.Outcome:
    """The next rollout state, its Events and the analysis it ran."""
    return canary_policy.advance(inp.spec, inp.status.rollout, canary_world(inp, before), now)


# ------------------------------------------------------------- the scaling


@dataclass(frozen=True)
class ScalingStep:
    entries: tuple[ScalingStatus, ...]
    events: tuple[Event, ...]
    missing: tuple[Missing, ...]


def scale_inputs(
    inp: ServiceInput,
    variants: Sequence[Variant],
    rollout: RolloutStatus | None,
    now: float,
) -> list[scaling_policy.ScaleInput]:
    """One autoscaler input per planned variant."""
    s = inp.spec.scaling
    assert s is not None
    rs = rollout or RolloutStatus()
    main = next(v for v in variants if v.name == MAIN_VARIANT)
    out: list[scaling_policy.ScaleInput] = []
    for v in variants:
        dep = inp.deployments.get(v.name)
        floor = (
            canary_replicas(main.replicas, canary_share(inp.spec, rs))
            if v.name == CANARY_VARIANT
            else 0
        )
        hold = (
            "a canary rollout is in flight: the stable variant keeps the replicas "
            "it needs to take all traffic back"
            if v.name == MAIN_VARIANT and rs.in_flight
            else None
        )
        pods = inp.pods_of(v.name)
        out.append(
            scaling_policy.ScaleInput(
                variant=v.name,
                current=v.replicas,
                ready=dep.ready if dep else 0,
                starting=sum(1 for p in inp.pods_of(v.name) if p.starting(s.warmup_seconds, now)),
                signals=inp.readings(v.name),
                previous=scaling_policy.Previous.from_status(inp.status.scaling_for(v.name)),
                hold_down=hold,
                floor=floor,
                window_seconds=inp.config.rate_window_seconds,
                load_times=tuple(
                    p.ready_since - p.created
                    for p in pods
                    if p.ready and p.ready_since is not None and p.created is not None
                ),
                ready_for=min(
                    (
                        now - p.ready_since
                        for p in pods
                        if p.ready and not p.deleting and p.ready_since is not None
                    ),
                    default=None,
                ),
                loading_ages=tuple(
                    now - p.created
                    for p in pods
                    if not p.ready and not p.deleting and p.created is not None
                ),
            )
        )
    return out


def scaling_step(
    inp: ServiceInput,
    variants: Sequence[Variant],
    rollout: RolloutStatus | None,
    now: float,
) -> ScalingStep:
    """The autoscaler's decision for every planned variant, as status entries."""
    s = inp.spec.scaling
    assert s is not None
    entries: list[ScalingStatus] = []
    events: list[Event] = []
    missing: list[Missing] = []
    for si in scale_inputs(inp, variants, rollout, now):
        d = scaling_policy.decide(s, si, now)
        old = inp.status.scaling_for(si.variant)
        entry = d.to_status(sig.to_status(si.signals, now))
        if (
            old is not None
            and scaling_policy.significant(old) == scaling_policy.significant(entry)
            and not _outdated(old.signals, entry.signals, now, inp.config.signals_refresh)
        ):
            entry = old
        entries.append(entry)
        before_desired = old.desired_replicas if old else d.current
        if d.desired != before_desired:
            events.append(scale_event(d))
        if inp.ready.get(si.variant, 0) > 0:
            missing.extend((si.variant, m[0], m[1]) for m in d.missing)
    return ScalingStep(tuple(entries), tuple(events), tuple(missing))


def scale_event(d: scaling_policy.Decision) -> Event:
    if not d.applied:
        return Event(
            "Normal", "ScaleRecommended", f"{d.variant} (Observe mode, not applied): {d.reason}"
        )
    reason = "ScaledUp" if d.desired > d.current else "ScaledDown"
    return Event("Normal", reason, f"{d.variant}: {d.reason}")


# ------------------------------------------------------- signals, conditions


def signal_rows(
    inp: ServiceInput, variants: Sequence[Variant], now: float
) -> tuple[tuple[Signals, ...], list[Missing]]:
    """status.signals, one row per planned variant, and the variants that have
    ready pods but no request rate (what tells idle, 0, from unobserved)."""
    rows: list[Signals] = []
    missing: list[Missing] = []
    for v in variants:
        r = inp.readings(v.name)
        row = sig.to_status(r, now, v.name)
        old = inp.status.signals_for(v.name)
        if (
            old is not None
            and old.shape() == row.shape()
            and not _outdated(old, row, now, inp.config.signals_refresh)
        ):
            row = old
        rows.append(row)
        if inp.ready.get(v.name, 0) > 0:
            rate = r.get(sig.REQUEST_RATE)
            if rate is not None and not rate.ok:
                missing.append((v.name, sig.REQUEST_RATE, rate))
    return tuple(rows), missing


def _outdated(old: Signals | None, new: Signals | None, now: float, refresh: float) -> bool:
    """Whether recorded signals should be replaced by new ones of the same shape:
    only when their values differ and the record is older than the refresh period
    (a cycle that observes nothing new writes nothing)."""
    if _values(old) == _values(new):
        return False
    t = old.observed_at if old is not None else None
    return t is None or now - t >= refresh


def _values(row: Signals | None) -> tuple[object, ...] | None:
    return None if row is None else row.values()


def metrics_condition(
    status: InferenceServiceStatus,
    missing: Sequence[Missing],
    now: float,
    generation: int,
    configured: bool = True,
) -> tuple[InferenceServiceStatus, list[Event]]:
    """MetricsAvailable: whether Prometheus answered every signal the decisions
    need; an Event when it goes False (or changes why) and when it comes back."""
    before = status.condition(METRICS_CONDITION)
    # One entry per (variant, signal), in a stable order.
    uniq = {(v, s): r for v, s, r in missing}
    items = [(v, s, uniq[(v, s)]) for v, s in sorted(uniq)]
    if not configured:
        status = status.with_condition(
            METRICS_CONDITION,
            False,
            "PrometheusNotConfigured",
            "no Prometheus is configured (sluice run --prometheus-url): autoscaling and canary "
            "analysis cannot decide; replicas and weights stay as they are",
            now,
            generation,
        )
    elif items:
        kinds = {r.kind for _, _, r in items}
        reason = (
            "QueryFailed" if "error" in kinds else "NoData" if "nodata" in kinds else "NotANumber"
        )
        msg = (
            sig.describe_missing(items)
            + ". Decisions that need these signals are frozen: no scale-up, no scale-down, "
            "no canary step"
        )
        status = status.with_condition(METRICS_CONDITION, False, reason, msg, now, generation)
    else:
        status = status.with_condition(
            METRICS_CONDITION,
            True,
            "MetricsAvailable",
            "Prometheus answered every signal the decisions need",
            now,
            generation,
        )
    after = status.condition(METRICS_CONDITION)
    assert after is not None
    events: list[Event] = []
    was = (before.status, before.reason) if before else (None, None)
    if after.status == "False" and was != ("False", after.reason):
        events.append(Event("Warning", "MetricsUnavailable", after.message))
    elif after.status == "True" and was[0] == "False":
        events.append(Event("Normal", "MetricsAvailable", "metrics are back: control resumes"))
    return status, events
