"""Metric-gated canary rollouts: a pure state machine over ``status.rollout``.

Everything the machine needs to continue lives in status.rollout, so an
operator that restarts (or another replica that takes over) carries on where
the last one stopped. Each control cycle calls :func:`advance` with the
previous state, what the shell observed (:class:`World`) and the clock; it
returns the next state, the Events to post and the analysis it ran.

Phases::

    Idle/Succeeded/RolledBack --spec revision != stable--> Progressing (step -1, weight 0)
    Progressing: step -1 --canary ready for steps[0] and observable--> step 0 (weight steps[0])
    Progressing: step i  --interval passed, analysis passes, canary ready for steps[i+1]--> step i+1
    Progressing: last step --analysis passes--> Promoting (canary keeps its weight)
    Promoting: weight w --main runs the canary revision, rolled out at full replicas--> weight 0
    Promoting: weight 0 --the route sends the canary nothing--> Succeeded (stable = canary)
    Progressing/Promoting --failedChecks reaches failureThreshold, or no step completed
                           within progressDeadline--> RollingBack (weight 0 at once)
    RollingBack --the route no longer sends traffic to the canary--> RolledBack (canary removed)

Rules that keep traffic safe:

* A canary gets a share only once it has the ready replicas for that share
  (sized before it receives it), and its first share only once Prometheus sees
  it (its request rate is a value).
* An analysis with too little canary traffic, or with any signal missing, is
  inconclusive: neither passed nor failed (flagger#1035 rolled idle canaries
  back). Only the progress deadline ends a rollout that never gets a conclusive
  answer.
* The stable variant keeps its full replicas during the rollout (the
  autoscaler does not scale it down, see :mod:`sluice.policy.scaling`), and
  promotion moves the last weight only after the main Deployment runs the new
  revision at those replicas, all ready (flagger#1600).
* Weight leaves the canary before the canary is removed (two phases), so no
  request is routed to a backend that is gone (kserve#5983).
* A rolled-back revision is not retried until the spec changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from ..api.v1alpha1 import (
    DONE,
    IN_FLIGHT,
    AnalysisSpec,
    InferenceServiceSpec,
    RolloutStatus,
    seconds,
)
from .events import Event
from .plan import Revision, canary_replicas
from .signals import ERROR_RATE, P99_LATENCY, REQUEST_RATE, Reading

# status.rollout, typed: the API's own status type (timestamps in epoch seconds).
Rollout = RolloutStatus


def rev(r: Revision | None) -> str:
    return "none" if r is None else f"version {r.version} ({r.image})"


@dataclass(frozen=True)
class World:
    """What the shell observed for one InferenceService this cycle."""

    spec_revision: Revision
    main_replicas: int  # the main variant's replicas in the plan
    main_revision: Revision | None = None  # what the main Deployment's pods run
    main_rolled_out: bool = False  # main current, updated and ready at main_replicas
    canary_ready: int = 0  # ready pods of the canary Deployment running the canary revision
    routed_canary_weight: int | None = None  # canary weight last applied to the route
    canary: Mapping[str, Reading] | None = None
    stable: Mapping[str, Reading] | None = None


Verdict = Literal["Pass", "Fail", "Inconclusive"]


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    detail: str
    # Readings whose absence made the check inconclusive (a metrics problem,
    # as opposed to too little traffic).
    missing: tuple[tuple[str, str, Reading], ...] = ()


@dataclass(frozen=True)
class Outcome:
    rollout: Rollout | None  # None: no status.rollout (strategy Rolling)
    events: tuple[Event, ...] = ()
    check: Check | None = None


def analysis_metric(spec: InferenceServiceSpec) -> str:
    """The latency signal the analysis compares: the autoscaler's, else p99."""
    return spec.scaling.target.metric if spec.scaling is not None else P99_LATENCY


def _get(readings: Mapping[str, Reading] | None, signal: str) -> Reading:
    r = (readings or {}).get(signal)
    return r if r is not None else Reading("nodata", None, "not observed")


def analyse(
    a: AnalysisSpec,
    metric: str,
    canary: Mapping[str, Reading] | None,
    stable: Mapping[str, Reading] | None,
) -> Check:
    """One analysis of the canary against the limits and the stable variant."""
    rate = _get(canary, REQUEST_RATE)
    if not rate.ok:
        return Check(
            "Inconclusive",
            f"canary {REQUEST_RATE} is {rate.describe()}",
            (("canary", REQUEST_RATE, rate),),
        )
    if rate.num() < a.min_request_rate:
        return Check(
            "Inconclusive",
            f"the canary receives less than minRequestRate {a.min_request_rate:g} req/s",
        )
    fails: list[str] = []
    passes: list[str] = []
    unknown: list[str] = []
    missing: list[tuple[str, str, Reading]] = []

    err = _get(canary, ERROR_RATE)
    if err.ok:
        bad = err.num() > a.max_error_rate
        (fails if bad else passes).append(
            f"{ERROR_RATE} {err.num():.2%} {'>' if bad else '<='} {a.max_error_rate:.2%}"
        )
    else:
        unknown.append(f"canary {ERROR_RATE} is {err.describe()}")
        missing.append(("canary", ERROR_RATE, err))

    lat = _get(canary, metric)
    if lat.ok:
        x = lat.num()
        if a.max_latency_ms is not None:
            bad = x > a.max_latency_ms
            (fails if bad else passes).append(
                f"{metric} {x:.3g}ms {'>' if bad else '<='} maxLatencyMs {a.max_latency_ms:g}"
            )
        st = _get(stable, metric)
        if st.ok and st.num() > 0:
            limit = a.max_latency_ratio * st.num()
            bad = x > limit
            (fails if bad else passes).append(
                f"{metric} {x:.3g}ms {'>' if bad else '<='} {a.max_latency_ratio:g} x stable "
                f"{st.num():.3g}ms"
            )
        else:
            unknown.append(f"stable {metric} is {st.describe() if not st.ok else '0'}")
            if not st.ok:
                missing.append(("main", metric, st))
    else:
        unknown.append(f"canary {metric} is {lat.describe()}")
        missing.append(("canary", metric, lat))

    if fails:
        return Check("Fail", "; ".join(fails + passes))
    if unknown:
        return Check("Inconclusive", "; ".join(unknown), tuple(missing))
    return Check("Pass", "; ".join(passes) + f" at {rate.num():.3g} req/s")


def advance(spec: InferenceServiceSpec, prev: Rollout | None, w: World, now: float) -> Outcome:
    """The next rollout state. Idempotent: the same inputs give the same state."""
    ro = spec.rollout
    if ro.strategy != "Canary":
        if prev is not None and prev.phase in IN_FLIGHT and prev.canary is not None:
            return Outcome(
                None,
                (
                    Event(
                        "Warning",
                        "CanaryAbandoned",
                        f"rollout.strategy is {ro.strategy}: the canary ({rev(prev.canary)}) "
                        f"is removed and main rolls to {rev(w.spec_revision)} in place",
                    ),
                ),
            )
        return Outcome(None)

    r = prev or Rollout()
    events: list[Event] = []
    if r.stable is None:
        stable = w.main_revision or w.spec_revision
        r = Rollout(
            phase="Idle",
            stable=stable,
            message=f"{rev(stable)} is stable: the first revision is deployed without a canary",
        )

    if r.phase in DONE or r.canary is None:
        return _idle(r, w, now)
    if r.phase == "Progressing":
        return _progressing(spec, r, w, now)
    if r.phase == "Promoting":
        return _promoting(spec, r, w, now)
    return _rolling_back(r, w, events)


def _idle(r: Rollout, w: World, now: float) -> Outcome:
    if w.spec_revision == r.stable:
        return Outcome(r)
    if r.phase == "RolledBack" and r.canary == w.spec_revision:
        return Outcome(r)  # not retried until the spec changes
    started = Rollout(
        phase="Progressing",
        stable=r.stable,
        canary=w.spec_revision,
        step=-1,
        canary_weight=0,
        failed_checks=0,
        step_started_at=now,
        last_progress_at=now,
        message=f"canary {rev(w.spec_revision)} started beside stable {rev(r.stable)}; it "
        "gets traffic once it is ready for its first share",
    )
    return Outcome(started, (Event("Normal", "CanaryStarted", started.message),))


def _rollback(r: Rollout, why: str) -> Outcome:
    msg = f"rolling back canary {rev(r.canary)}: {why}"
    back = replace(r, phase="RollingBack", canary_weight=0, message=msg)
    text = f"{msg}; all traffic returns to stable {rev(r.stable)}"
    return Outcome(back, (Event("Warning", "CanaryRollingBack", text),))


def _deadline_passed(spec: InferenceServiceSpec, r: Rollout, now: float) -> bool:
    last = r.last_progress_at if r.last_progress_at is not None else now
    return now - last > seconds(spec.rollout.analysis.progress_deadline)


def _progressing(spec: InferenceServiceSpec, r: Rollout, w: World, now: float) -> Outcome:
    ro = spec.rollout
    a = ro.analysis
    steps = ro.steps
    if w.spec_revision != r.canary:
        if w.spec_revision == r.stable:
            return _rollback(r, "the spec went back to the stable revision")
        restarted = replace(
            r,
            canary=w.spec_revision,
            step=-1,
            canary_weight=0,
            failed_checks=0,
            step_started_at=now,
            last_progress_at=now,
            message=f"the spec changed during the rollout: canary restarted with "
            f"{rev(w.spec_revision)} (was {rev(r.canary)}); it gets traffic once ready",
        )
        return Outcome(restarted, (Event("Normal", "CanaryRestarted", restarted.message),))

    if _deadline_passed(spec, r, now):
        return _rollback(
            r,
            f"no step completed within progressDeadline {a.progress_deadline} (last: {r.message})",
        )

    if r.step < 0:
        need = canary_replicas(w.main_replicas, steps[0])
        if w.canary_ready < need:
            msg = (
                f"waiting for canary {rev(r.canary)} to have {need} ready replica(s) before "
                f"it gets {steps[0]}% ({w.canary_ready} ready)"
            )
            return Outcome(replace(r, message=msg))
        rate = _get(w.canary, REQUEST_RATE)
        if not rate.ok:
            msg = (
                f"canary {rev(r.canary)} is ready but not observed yet ({REQUEST_RATE} is "
                f"{rate.describe()}): it gets no traffic before its metrics can be read"
            )
            return Outcome(
                replace(r, message=msg),
                check=Check("Inconclusive", msg, (("canary", REQUEST_RATE, rate),)),
            )
        return _set_weight(r, 0, steps[0], now, f"canary has {w.canary_ready} ready replica(s)")

    started = r.step_started_at if r.step_started_at is not None else now
    if now - started < ro.interval_seconds:
        return Outcome(r)

    check = analyse(a, analysis_metric(spec), w.canary, w.stable)
    if check.verdict == "Fail":
        failed = r.failed_checks + 1
        if failed >= a.failure_threshold:
            back = _rollback(
                replace(r, failed_checks=failed),
                f"{failed} failed check(s) reached failureThreshold {a.failure_threshold}; "
                f"last at {r.canary_weight}%: {check.detail}",
            )
            return replace(back, check=check)
        msg = (
            f"check {failed}/{a.failure_threshold} failed at {r.canary_weight}%: "
            f"{check.detail}; weight held"
        )
        return Outcome(
            replace(r, failed_checks=failed, step_started_at=now, message=msg),
            (Event("Warning", "CanaryCheckFailed", msg),),
            check,
        )
    if check.verdict == "Inconclusive":
        msg = (
            f"analysis at {r.canary_weight}% is inconclusive: {check.detail}; weight held "
            f"(progressDeadline {a.progress_deadline})"
        )
        return Outcome(replace(r, message=msg), check=check)

    nxt = r.step + 1
    if nxt >= len(steps):
        msg = (
            f"analysis passed at the last step ({r.canary_weight}%: {check.detail}); "
            f"promoting: main moves to {rev(r.canary)} at {w.main_replicas} replica(s) while "
            "the canary keeps its share"
        )
        promoting = replace(
            r, phase="Promoting", step_started_at=now, last_progress_at=now, message=msg
        )
        return Outcome(promoting, (Event("Normal", "CanaryPromoting", msg),), check)
    need = canary_replicas(w.main_replicas, steps[nxt])
    if w.canary_ready < need:
        msg = (
            f"analysis passed at {r.canary_weight}%; waiting for the canary to have {need} "
            f"ready replica(s) before it gets {steps[nxt]}% ({w.canary_ready} ready)"
        )
        return Outcome(replace(r, message=msg), check=check)
    moved = _set_weight(r, nxt, steps[nxt], now, f"analysis passed: {check.detail}")
    return replace(moved, check=check)


def _set_weight(r: Rollout, step: int, weight: int, now: float, why: str) -> Outcome:
    msg = f"canary {r.canary_weight}% -> {weight}% (step {step + 1}): {why}"
    out = replace(
        r,
        step=step,
        canary_weight=weight,
        step_started_at=now,
        last_progress_at=now,
        message=msg,
    )
    return Outcome(out, (Event("Normal", "CanaryWeight", msg),))


def _promoting(spec: InferenceServiceSpec, r: Rollout, w: World, now: float) -> Outcome:
    if r.canary_weight > 0:
        if _deadline_passed(spec, r, now):
            return _rollback(
                r,
                f"main did not roll out {rev(r.canary)} within progressDeadline "
                f"{spec.rollout.analysis.progress_deadline}",
            )
        if w.main_revision == r.canary and w.main_rolled_out:
            msg = (
                f"canary {r.canary_weight}% -> 0%: main runs {rev(r.canary)} with all "
                f"{w.main_replicas} replica(s) ready and takes all traffic; the canary is "
                "removed next"
            )
            done = replace(
                r, canary_weight=0, step_started_at=now, last_progress_at=now, message=msg
            )
            return Outcome(done, (Event("Normal", "CanaryWeight", msg),))
        msg = (
            f"promoting: waiting for main to run {rev(r.canary)} with {w.main_replicas} "
            "ready replica(s) before it takes the canary's share"
        )
        return Outcome(replace(r, message=msg))
    if w.routed_canary_weight:
        return Outcome(r)  # the route still sends the canary traffic: wait for it
    msg = f"{rev(r.canary)} promoted: it passed every step and is now stable"
    out = Rollout(
        phase="Succeeded",
        stable=r.canary,
        canary=None,
        step=-1,
        canary_weight=0,
        failed_checks=r.failed_checks,
        step_started_at=None,
        last_progress_at=now,
        message=msg,
    )
    return Outcome(out, (Event("Normal", "CanaryPromoted", msg),))


def _rolling_back(r: Rollout, w: World, events: list[Event]) -> Outcome:
    if r.canary_weight:
        r = replace(r, canary_weight=0)
    if w.routed_canary_weight:
        return Outcome(r, tuple(events))
    msg = r.message.replace("rolling back", "rolled back", 1)
    out = replace(r, phase="RolledBack", step=-1, message=msg)
    text = f"{msg}; the canary is removed and stable {rev(r.stable)} serves all traffic"
    return Outcome(out, (*events, Event("Warning", "CanaryRolledBack", text)))


def condition(r: Rollout | None) -> tuple[bool, str, str] | None:
    """The Canary condition: False while or after a rollback, with why."""
    if r is None:
        return None
    ok = r.phase not in ("RollingBack", "RolledBack")
    return ok, r.phase, r.message or r.phase
