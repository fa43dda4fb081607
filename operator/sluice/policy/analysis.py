"""One comparison (canary vs baseline, or A/B variant vs main) over the typed status.

Pure glue between the spec, ``status.*.analysis`` and :mod:`sluice.policy.judge`:
which signals are judged with which tolerance, one batch per rate window
(windows never overlap: a batch is taken only when a whole window has passed
since the last one), the verdicts, and Events when a verdict changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..api.v1alpha1 import (
    AnalysisStatus,
    CustomSignal,
    ExperimentSpec,
    InferenceServiceSpec,
    SignalVerdict,
)
from . import judge as J
from .events import Event
from .signals import AVG_LATENCY, ERROR_RATE, P99_LATENCY, Reading


def tail_metric(spec: InferenceServiceSpec) -> str:
    """The tail latency signal: the autoscaler's, else p99."""
    return spec.scaling.target.metric if spec.scaling is not None else P99_LATENCY


def canary_criteria(spec: InferenceServiceSpec) -> list[J.Criterion]:
    a = spec.rollout.analysis
    tol = a.max_latency_ratio - 1.0
    out = [
        J.Criterion(ERROR_RATE, "proportion", a.max_error_rate_increase),
        J.Criterion(AVG_LATENCY, "ratio", tol),
    ]
    tail = tail_metric(spec)
    if tail != AVG_LATENCY:
        out.append(J.Criterion(tail, "ratio", tol))
    return out + [custom_criterion(c, c.tolerance) for c in a.custom_signals]


def custom_criterion(c: CustomSignal, tolerance: float) -> J.Criterion:
    """A custom signal's criterion: one observation per rate window (its value on each
    side), judged as log-ratios (Ratio) or differences (Difference)."""
    kind: J.Kind = "difference" if c.compare == "Difference" else "ratio"
    return J.Criterion(c.name, kind, tolerance, "higher" if c.direction == "higher" else "lower")


def custom_templates(spec: InferenceServiceSpec) -> dict[str, str]:
    """The PromQL templates of the custom signals this spec judges (canary analysis and
    experiment), by signal name."""
    out = {c.name: c.query for c in spec.rollout.analysis.custom_signals}
    if spec.experiment is not None:
        out.update({c.name: c.query for c in spec.experiment.custom_signals})
    return out


def canary_gate(spec: InferenceServiceSpec) -> J.Gate:
    a = spec.rollout.analysis
    return J.Gate(alpha=1.0 - a.confidence, min_requests=a.min_samples)


# Experiments report who is better; the tolerance only scales the prior of the
# error-rate test (a difference of the order of half a percentage point).
EXPERIMENT_ERROR_SCALE = 0.005


def experiment_criteria(e: ExperimentSpec) -> list[J.Criterion]:
    out = [
        J.Criterion(s, "proportion", EXPERIMENT_ERROR_SCALE)
        if s == ERROR_RATE
        else J.Criterion(s, "ratio", 0.0)
        for s in e.signals
    ]
    # Custom signals: who is better (two-sided), so no tolerance.
    return out + [custom_criterion(c, 0.0) for c in e.custom_signals]


def experiment_gate(e: ExperimentSpec) -> J.Gate:
    return J.Gate(alpha=1.0 - e.confidence, min_requests=e.min_samples)


# ------------------------------------------------------------------ evidence


def _evidence(sv: SignalVerdict) -> J.Evidence:
    return J.Evidence(
        signal=sv.signal,
        batches=sv.batches,
        sum_x=sv.sum_x,
        sum_x2=sv.sum_x2,
        sum_log_candidate=sv.sum_log_candidate,
        sum_log_baseline=sv.sum_log_baseline,
        candidate_requests=sv.candidate_requests,
        candidate_failures=sv.candidate_failures,
        baseline_requests=sv.baseline_requests,
        baseline_failures=sv.baseline_failures,
    )


def _finite(x: float | None) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def _status(j: J.Judgement, e: J.Evidence, better: str | None) -> SignalVerdict:
    def r(x: float) -> float:
        return float(f"{x:.12g}")

    return SignalVerdict(
        signal=j.signal,
        kind=j.kind,
        direction=j.direction,
        candidate=_finite(j.candidate),
        baseline=_finite(j.baseline),
        tolerance=j.tolerance,
        effect=_finite(j.effect),
        lower=_finite(j.lower),
        upper=_finite(j.upper),
        confidence=round(j.confidence, 6),
        samples=j.samples,
        batches=j.batches,
        verdict=j.verdict,
        better=better,
        reason=j.reason,
        sum_x=r(e.sum_x),
        sum_x2=r(e.sum_x2),
        sum_log_candidate=r(e.sum_log_candidate),
        sum_log_baseline=r(e.sum_log_baseline),
        candidate_requests=r(e.candidate_requests),
        candidate_failures=r(e.candidate_failures),
        baseline_requests=r(e.baseline_requests),
        baseline_failures=r(e.baseline_failures),
    )


@dataclass(frozen=True)
class Comparison:
    status: AnalysisStatus
    judgements: tuple[J.Judgement, ...]
    verdict: J.Verdict
    better: str | None  # experiments: the variant shown better overall

    def describe(self) -> str:
        return "; ".join(j.describe() for j in self.judgements)

    def worse(self) -> list[J.Judgement]:
        """Signals on which the candidate is shown worse but not yet shown within
        tolerance (nor beyond it): a step waits for the evidence to decide."""
        out = []
        for j in self.judgements:
            if j.lower is None or j.upper is None or j.verdict == "Pass":
                continue
            zero = 1.0 if j.kind == "ratio" else 0.0
            if (j.lower > zero) if j.direction == "lower" else (j.upper < zero):
                out.append(j)
        return out

    def gated(self) -> bool:
        """Whether some signal still lacks the minimum sample."""
        return any(j.reason.startswith("minimum sample") for j in self.judgements)


def start(candidate: str, baseline: str, now: float) -> AnalysisStatus:
    """A fresh comparison: its first window begins now (when traffic starts)."""
    return AnalysisStatus(candidate=candidate, baseline=baseline, last_batch_at=now)


def compare(
    criteria: Sequence[J.Criterion],
    gate: J.Gate,
    prev: AnalysisStatus,
    cand: Mapping[str, Reading] | None,
    base: Mapping[str, Reading] | None,
    now: float,
    window_seconds: float,
) -> Comparison:
    """Fold this cycle's readings in (when a whole window has passed since the last
    batch) and judge every signal."""
    ev = {sv.signal: _evidence(sv) for sv in prev.signals}
    last = prev.last_batch_at
    if last is None:
        last = now  # the first window starts now
    elif now - last >= window_seconds - 1e-6:
        cb = J.Batch.from_readings(cand or {}, window_seconds)
        bb = J.Batch.from_readings(base or {}, window_seconds)
        if cb is not None and bb is not None:
            ev = J.accumulate(ev, criteria, cb, bb, gate)
            last = now
        # else: no values this cycle; the next cycle with values closes the window
    judgements = tuple(J.judge(c, ev.get(c.signal), gate) for c in criteria)
    overall = J.overall(judgements)
    bests = [J.better(j)[0] for j in judgements]
    names = {"candidate": prev.candidate, "baseline": prev.baseline, "none": None}
    # Overall winner: better on the first signal, worse on none.
    winner: str | None = None
    if bests and bests[0] != "none":
        first = bests[0]
        other = "baseline" if first == "candidate" else "candidate"
        if other not in bests:
            winner = names[first]
    sigs = tuple(
        _status(j, ev.get(j.signal) or J.Evidence(j.signal), names[b])
        for j, b in zip(judgements, bests, strict=True)
    )
    st = AnalysisStatus(
        candidate=prev.candidate,
        baseline=prev.baseline,
        verdict=overall,
        better=winner,
        last_batch_at=last,
        signals=sigs,
    )
    return Comparison(st, judgements, overall, winner)


def verdict_events(
    before: AnalysisStatus | None, after: Comparison, what: str, experiment: bool = False
) -> list[Event]:
    """An Event for every signal whose verdict (or, in an experiment, better side) changed."""
    old = {s.signal: s for s in (before.signals if before else ())}
    out: list[Event] = []
    for sv, j in zip(after.status.signals, after.judgements, strict=True):
        o = old.get(sv.signal)
        changed = (o is None and sv.verdict != "Inconclusive") or (
            o is not None and o.verdict != sv.verdict
        )
        if experiment:
            changed = (o.better if o else None) != sv.better
        if not changed:
            continue
        if experiment:
            who = f"{sv.better} is better" if sv.better else "no difference shown"
            out.append(Event("Normal", "ExperimentVerdict", f"{what}: {who}: {j.describe()}"))
        else:
            typ = "Warning" if sv.verdict == "Fail" else "Normal"
            out.append(Event(typ, "AnalysisVerdict", f"{what}: {j.describe()}"))
    return out
