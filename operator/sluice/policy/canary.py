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
    Progressing/Promoting --a signal fails, an abort request, or no traffic yet within
                           progressDeadline--> RollingBack (weight 0 at once)
    Progressing: analysis inconclusive at progressDeadline --onInconclusive Pause-->
                 awaitingDecision (weight held; the evidence or a promote/abort request
                 decides) | --onInconclusive Rollback--> RollingBack
    RollingBack --the route no longer sends traffic to the canary--> RolledBack (canary removed)

Rules that keep traffic safe:

* A canary gets a share only once it has the ready replicas for that share
  (sized before it receives it), and its first share only once Prometheus sees
  it (its request rate is a value).
* An analysis with too little canary traffic, or with any signal missing, is
  inconclusive: neither passed nor failed (flagger#1035 rolled idle canaries
  back). At the progress deadline an inconclusive rollout is held for a decision
  (``onInconclusive: Pause``, the default, as Argo Rollouts pauses on an
  Inconclusive analysis) or rolled back (``Rollback``); a canary that never got
  traffic is rolled back.
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
from dataclasses import dataclass, field, replace
from typing import Literal

from ..api.v1alpha1 import (
    BASELINE_VARIANT,
    CANARY_VARIANT,
    DONE,
    IN_FLIGHT,
    MAIN_VARIANT,
    AnalysisSpec,
    HandledRequests,
    InferenceServiceSpec,
    RolloutStatus,
    seconds,
)
from . import analysis as an
from .events import Event
from .plan import Revision, baseline_share, canary_replicas
from .signals import ERROR_RATE, P99_LATENCY, REQUEST_RATE, Reading, describe_missing

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
    # The baseline variant (the stable revision beside the canary, same replicas and
    # share); with spec.rollout.baseline false the canary is compared with main.
    baseline: Mapping[str, Reading] | None = None
    baseline_ready: int = 0  # ready pods of the baseline Deployment (stable revision)
    # The rate window of the readings (s): one batch of evidence per window.
    window_seconds: float = 60.0
    # One-shot requests from annotations: {"abort"|"promote"|"retry": token}.
    requests: Mapping[str, str] = field(default_factory=dict)


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
    if r.stable is None:
        stable = w.main_revision or w.spec_revision
        r = Rollout(
            phase="Idle",
            stable=stable,
            message=f"{rev(stable)} is stable: the first revision is deployed without a canary",
        )

    r, control_events, forced = _requests(spec, r, w, now)
    if forced is not None:
        return replace(forced, events=(*control_events, *forced.events))
    if control_events:
        out = advance_phase(spec, r, w, now)
        return replace(out, events=(*control_events, *out.events))
    return advance_phase(spec, r, w, now)


def advance_phase(spec: InferenceServiceSpec, r: Rollout, w: World, now: float) -> Outcome:
    if r.phase in DONE or r.canary is None:
        return _idle(r, w, now)
    if r.phase == "Progressing":
        return _progressing(spec, r, w, now)
    if r.phase == "Promoting":
        return _promoting(spec, r, w, now)
    return _rolling_back(r, w, [])


def _handled(r: Rollout, kind: str, token: str) -> Rollout:
    h = r.handled or HandledRequests()
    return replace(r, handled=replace(h, **{kind: token}))


def _requests(
    spec: InferenceServiceSpec, r: Rollout, w: World, now: float
) -> tuple[Rollout, tuple[Event, ...], Outcome | None]:
    """Act on new one-shot request tokens (each once), in the order abort, promote,
    retry. Returns the rollout with the tokens acknowledged, the Events, and the
    outcome when a request decided this cycle."""
    events: list[Event] = []
    h = r.handled or HandledRequests()
    for kind in ("abort", "promote", "retry"):
        token = w.requests.get(kind)
        if not token or token == getattr(h, kind):
            continue
        r = _handled(r, kind, token)
        if kind == "abort":
            if r.phase in ("Progressing", "Promoting") and r.canary is not None:
                out = _rollback(r, f"aborted by request (sluice.dev/abort={token})")
                return r, tuple(events), out
            events.append(_ignored(kind, token, r))
        elif kind == "promote":
            if r.phase == "Progressing" and r.canary is not None and r.step >= 0:
                msg = (
                    f"promoted by request (sluice.dev/promote={token}), skipping the remaining "
                    f"steps and analysis at {r.canary_weight}%: main moves to {rev(r.canary)} "
                    f"at {w.main_replicas} replica(s) while the canary keeps its share"
                )
                out = Outcome(
                    replace(
                        r, phase="Promoting", step_started_at=now, last_progress_at=now,
                        message=msg, awaiting_decision=False,
                    ),
                    (Event("Normal", "CanaryPromoting", msg),),
                )  # fmt: skip
                return r, tuple(events), out
            events.append(_ignored(kind, token, r))
        else:
            if r.phase == "RolledBack" and r.canary == w.spec_revision:
                started = _start(r, w, now, f"retry requested (sluice.dev/retry={token}): ")
                return r, tuple(events), started
            events.append(_ignored(kind, token, r))
    return r, tuple(events), None


def _ignored(kind: str, token: str, r: Rollout) -> Event:
    where = {
        "abort": "only a Progressing or Promoting rollout can be aborted",
        "promote": "only a Progressing canary that has traffic can be promoted",
        "retry": "only a RolledBack revision that the spec still names can be retried",
    }[kind]
    return Event(
        "Warning", "RequestIgnored", f"{kind} request {token} ignored in phase {r.phase}: {where}"
    )


def _idle(r: Rollout, w: World, now: float) -> Outcome:
    if w.spec_revision == r.stable:
        return Outcome(r)
    if r.phase == "RolledBack" and r.canary == w.spec_revision:
        return Outcome(r)  # not retried until the spec changes (or sluice retry)
    return _start(r, w, now)


def _start(r: Rollout, w: World, now: float, why: str = "") -> Outcome:
    started = Rollout(
        phase="Progressing",
        stable=r.stable,
        canary=w.spec_revision,
        step=-1,
        canary_weight=0,
        failed_checks=0,
        step_started_at=now,
        last_progress_at=now,
        handled=r.handled,
        message=f"{why}canary {rev(w.spec_revision)} started beside stable {rev(r.stable)}; "
        "it gets traffic once it is ready for its first share",
    )
    return Outcome(started, (Event("Normal", "CanaryStarted", started.message),))


def _rollback(r: Rollout, why: str) -> Outcome:
    msg = f"rolling back canary {rev(r.canary)}: {why}"
    back = replace(r, phase="RollingBack", canary_weight=0, message=msg, awaiting_decision=False)
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
            awaiting_decision=False,
            message=f"the spec changed during the rollout: canary restarted with "
            f"{rev(w.spec_revision)} (was {rev(r.canary)}); it gets traffic once ready",
        )
        return Outcome(restarted, (Event("Normal", "CanaryRestarted", restarted.message),))

    # The progress deadline: a canary that never got traffic (not ready, or not
    # observed) is rolled back; an inconclusive analysis pauses for a decision
    # (onInconclusive Pause, below) or rolls back (Rollback).
    deadline = _deadline_passed(spec, r, now) and not r.awaiting_decision
    if deadline and (r.step < 0 or a.on_inconclusive == "Rollback"):
        return _rollback(
            r,
            f"no step completed within progressDeadline {a.progress_deadline} (last: {r.message})",
        )

    if ro.paused:
        # Held where it is; the deadline does not run while paused.
        r = replace(r, last_progress_at=now, paused=True)
    elif r.paused:
        r = replace(r, paused=False, last_progress_at=now)

    if r.step < 0:
        need = canary_replicas(w.main_replicas, steps[0])
        base_need = _baseline_need(spec, w.main_replicas, steps[0])
        if w.canary_ready < need or w.baseline_ready < base_need:
            msg = (
                f"waiting for canary {rev(r.canary)} to have {need} ready replica(s)"
                + (f" and the baseline {base_need}" if base_need else "")
                + f" before it gets {steps[0]}% ({w.canary_ready} ready"
                + (f", baseline {w.baseline_ready}" if base_need else "")
                + ")"
            )
            return Outcome(replace(r, message=msg))
        missing = _unobserved(spec, w)
        if missing:
            msg = (
                f"canary {rev(r.canary)} is ready but not observed yet ("
                + ", ".join(f"{v} {REQUEST_RATE} is {rd.describe()}" for v, _, rd in missing)
                + "): it gets no traffic before its metrics can be read"
            )
            return Outcome(
                replace(r, message=msg), check=Check("Inconclusive", msg, tuple(missing))
            )
        if ro.paused:
            return Outcome(replace(r, message="paused (spec.rollout.paused) before the first step"))
        moved = _set_weight(r, 0, steps[0], now, f"canary has {w.canary_ready} ready replica(s)")
        assert moved.rollout is not None
        fresh = an.start(CANARY_VARIANT, _baseline_name(spec), now)
        return replace(moved, rollout=replace(moved.rollout, analysis=fresh))

    # Every cycle with traffic: fold in the evidence, judge every signal.
    prev_an = r.analysis or an.start(CANARY_VARIANT, _baseline_name(spec), now)
    base = w.baseline if spec.rollout.baseline else w.stable
    cmp = an.compare(
        an.canary_criteria(spec),
        an.canary_gate(spec),
        prev_an,
        w.canary,
        base,
        now,
        w.window_seconds,
    )
    events = an.verdict_events(r.analysis, cmp, f"canary vs {prev_an.baseline}")
    r = replace(r, analysis=cmp.status)
    check = Check(cmp.verdict, cmp.describe(), _unobserved(spec, w, with_latency=True))
    if cmp.verdict == "Fail":
        failed = [j for j in cmp.judgements if j.verdict == "Fail"]
        back = _rollback(
            replace(r, failed_checks=r.failed_checks + 1),
            f"at {r.canary_weight}%: " + "; ".join(j.describe() for j in failed),
        )
        return replace(back, events=(*events, *back.events), check=check)

    if deadline:
        # Neither shown worse nor within tolerance: not a reason to roll back a version
        # that may be fine, nor to promote one that may not be. Hold and ask (Argo
        # Rollouts pauses on an Inconclusive AnalysisRun the same way).
        msg = (
            f"analysis still inconclusive at {r.canary_weight}% after progressDeadline "
            f"{a.progress_deadline}: "
            + (describe_missing(check.missing) + "; " if check.missing else "")
            + f"{cmp.describe()}; the canary holds {r.canary_weight}% awaiting a decision: "
            "the evidence still decides (a Fail rolls back, a Pass moves on), or "
            "sluice promote / sluice abort"
        )
        held = replace(r, awaiting_decision=True, message=msg)
        return Outcome(held, (*events, Event("Warning", "CanaryInconclusive", msg)), check)

    if check.missing:
        # Never act on missing data: no step, no promotion (a Fail above needs none).
        msg = (
            f"analysis at {r.canary_weight}% is inconclusive: "
            + describe_missing(check.missing)
            + f"; weight held (progressDeadline {a.progress_deadline})"
        )
        return Outcome(replace(r, message=msg), tuple(events), check)

    if ro.paused:
        msg = f"paused (spec.rollout.paused) at {r.canary_weight}%: {cmp.verdict} so far"
        return Outcome(replace(r, message=msg), tuple(events), check)

    started = r.step_started_at if r.step_started_at is not None else now
    if now - started < ro.interval_seconds:
        return Outcome(r, tuple(events), check)

    nxt = r.step + 1
    if nxt >= len(steps):
        if cmp.verdict != "Pass":
            msg = (
                f"at the last step ({r.canary_weight}%), waiting for every signal to pass "
                f"before promotion: {cmp.describe()} (progressDeadline {a.progress_deadline})"
            )
            return Outcome(replace(r, message=msg), tuple(events), check)
        msg = (
            f"every signal passed at the last step ({r.canary_weight}%: {cmp.describe()}); "
            f"promoting: main moves to {rev(r.canary)} at {w.main_replicas} replica(s) while "
            "the canary keeps its share"
        )
        promoting = replace(
            r, phase="Promoting", step_started_at=now, last_progress_at=now, message=msg,
            awaiting_decision=False,
        )  # fmt: skip
        return Outcome(promoting, (*events, Event("Normal", "CanaryPromoting", msg)), check)
    if cmp.gated():
        msg = (
            f"analysis at {r.canary_weight}% has too few samples to move on: {cmp.describe()}; "
            f"weight held (progressDeadline {a.progress_deadline})"
        )
        return Outcome(replace(r, message=msg), tuple(events), check)
    worse = cmp.worse()
    if worse:
        msg = (
            f"analysis at {r.canary_weight}%: the canary is worse than the baseline, so far "
            "within tolerance: " + "; ".join(j.describe() for j in worse) + "; weight held "
            f"until the evidence decides (progressDeadline {a.progress_deadline})"
        )
        return Outcome(replace(r, message=msg), tuple(events), check)
    need = canary_replicas(w.main_replicas, steps[nxt])
    base_need = _baseline_need(spec, w.main_replicas, steps[nxt])
    if w.canary_ready < need or w.baseline_ready < base_need:
        msg = (
            f"no regression at {r.canary_weight}%; waiting for the canary to have {need} "
            f"ready replica(s)" + (f" and the baseline {base_need}" if base_need else "")
            + f" before it gets {steps[nxt]}% ({w.canary_ready} ready)"
        )  # fmt: skip
        return Outcome(replace(r, message=msg), tuple(events), check)
    moved = _set_weight(r, nxt, steps[nxt], now, f"no regression: {cmp.describe()}")
    return replace(moved, events=(*events, *moved.events), check=check)


def _baseline_name(spec: InferenceServiceSpec) -> str:
    return BASELINE_VARIANT if spec.rollout.baseline else MAIN_VARIANT


def _baseline_need(spec: InferenceServiceSpec, main_replicas: int, share: int) -> int:
    """Ready pods the baseline needs before the canary gets ``share`` percent."""
    if not spec.rollout.baseline:
        return 0
    return canary_replicas(main_replicas, baseline_share(share))


def _unobserved(
    spec: InferenceServiceSpec, w: World, with_latency: bool = False
) -> tuple[tuple[str, str, Reading], ...]:
    """Readings the analysis needs that are not values (a metrics problem)."""
    sides = [("canary", w.canary)]
    sides.append(("baseline", w.baseline) if spec.rollout.baseline else ("main", w.stable))
    signals = [REQUEST_RATE]
    if with_latency:
        signals += [c.signal for c in an.canary_criteria(spec) if c.kind != "proportion"]
    out = []
    for name, rd in sides:
        for sname in signals:
            x = _get(rd, sname)
            if not x.ok and not (sname != REQUEST_RATE and _idle_side(rd)):
                out.append((name, sname, x))
    return tuple(out)


def _idle_side(rd: Mapping[str, Reading] | None) -> bool:
    rate = _get(rd, REQUEST_RATE)
    return rate.ok and rate.num() == 0


def _set_weight(r: Rollout, step: int, weight: int, now: float, why: str) -> Outcome:
    msg = f"canary {r.canary_weight}% -> {weight}% (step {step + 1}): {why}"
    out = replace(
        r,
        step=step,
        canary_weight=weight,
        step_started_at=now,
        last_progress_at=now,
        message=msg,
        awaiting_decision=False,
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
