"""The judge: is a canary (or an A/B variant) worse, better, or not known yet?

Pure. Each control cycle the caller hands over one *batch* per compared
variant (what Prometheus says about one rate window: requests, failures and
the latency signals), the judge folds it into the accumulated evidence kept in
status, and judges every signal again. Evidence accumulates over the whole
rollout (or experiment); nothing is decided on one window.

Every signal gets a **direction** (which way is worse), a **tolerance** (how
much worse is acceptable) and a **sequential test** whose confidence holds no
matter how often the result is looked at (every cycle), because each test is
a confidence *sequence*: with probability at least ``1 - alpha`` it contains
the true difference at every time at once (Ville's inequality on a
non-negative (super)martingale). A signal's verdict is

* ``Fail``: the whole confidence interval lies beyond the tolerance: the
  candidate is worse than tolerated, with the stated confidence;
* ``Pass``: the whole interval lies within the tolerance: it is not worse than
  tolerated, with the stated confidence;
* ``Inconclusive``: neither yet, or the minimum-sample gate is not met.

Two tests, chosen by what Prometheus can give per interval:

**Error rate: two binomial proportions, from request counts.** Triton counts
successes and failures per pod (``nv_inference_request_success`` /
``_failure``); per batch the judge gets the two counts of each variant and adds
them up. The difference of the failure proportions ``d = p_cand - p_base``
gets the normal-mixture confidence sequence of Robbins (1970), in the
two-sample form of the mixture SPRT (Johari, Pekelis & Walsh, "Always valid
inference", 2017/2022)::

    d_hat +- sqrt( v (v + tau^2) / tau^2 * (2 log(1/alpha) + log((v + tau^2) / v)) )

with ``v = p~c (1 - p~c) / n_c + p~b (1 - p~b) / n_b`` the plug-in variance
(``p~ = (f + 1) / (n + 2)``, so zero failures still carry their uncertainty)
and ``tau`` the prior scale of the difference (the tolerance). Assumed:
requests fail independently with a rate that is constant during the rollout
(per variant); the normal approximation of the cumulative counts (valid for
the hundreds of requests the minimum-sample gate demands; the plug-in
variance makes the guarantee asymptotic, as in Johari et al.). Tolerance: an
absolute difference of failed fractions (0.01 = one percentage point).

**Latencies (mean, p95/p99, queue time) and custom signals: batch log-ratios.**
Prometheus gives no per-request latencies: per pod, Triton exports a
cumulative sum of durations and a count (so a batch mean that pools every
request of the variant), and summary quantiles computed per process (the tail
signal is the worst pod's). Per batch the judge takes ``x_t = log(candidate_t
/ baseline_t)``, the log-ratio of the two variants' values over the *same*
window (so load changes over time cancel), and tests the mean of ``x_t`` with
the scale-invariant mixture t-test of Lai (1976) (see Wang & Ramdas,
"Anytime-valid t-tests and confidence sequences for Gaussian means with
unknown variance", 2023)::

    M_n(mu) = (1 + n c^2)^(-1/2) * (1 - c^2 S^2 / ((1 + n c^2) V))^(-n/2)
    S = sum(x_t - mu),  V = sum((x_t - mu)^2)

a martingale under ``E[x] = mu`` for *every* variance (the variance is never
plugged in). Inverting ``M_n < 1/alpha`` gives an interval around the mean of
the log-ratios (:func:`t_halfwidth`). Assumed: the batch log-ratios are
independent and normal with a constant mean (a batch pools hundreds of
requests, so the central limit theorem applies to the mean signal; the
windows do not overlap, which the caller guarantees with ``batch_seconds``; a
quantile summary's own sliding window must not be longer than a batch, or
consecutive tail batches share requests and the stated confidence is
optimistic). Both variants must see the same load per pod (the baseline
variant does: same replicas, same traffic share) and the same number of pods,
else a worst-pod quantile compares different things. Tolerance: relative
(0.15 = the candidate may be up to 15 % slower); the interval is reported as
a ratio ``exp(mean)``.

Persistent pod-to-pod differences are variance *between* pods, not between
batches: with one pod per side, a slow node is indistinguishable from a slow
version; the tolerance must cover the spread a fleet has (documented in
docs/control.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .signals import (
    AVG_LATENCY,
    ERROR_RATE,
    P95_LATENCY,
    P99_LATENCY,
    QUEUE_TIME,
    REQUEST_RATE,
    Reading,
)

Verdict = Literal["Pass", "Fail", "Inconclusive"]
Kind = Literal["proportion", "ratio", "difference"]
Direction = Literal["lower", "higher"]  # which values are better

# Prior scale of the standardised effect (mean / sd of the batch log-ratios) in
# Lai's mixture: c = 2 makes the interval finite from 5 batches on and costs
# little later (the half-width at 20 batches is within 5 % of c = 1's).
T_MIXTURE_SCALE = 2.0

LATENCY_SIGNALS = (AVG_LATENCY, P95_LATENCY, P99_LATENCY, QUEUE_TIME)


@dataclass(frozen=True)
class Criterion:
    """How one signal is judged."""

    signal: str
    kind: Kind
    # proportion: absolute difference; ratio: relative (0.15 = 15 %); difference: absolute
    tolerance: float
    direction: Direction = "lower"


@dataclass(frozen=True)
class Gate:
    """The minimum-sample gate, and the confidence of every interval."""

    alpha: float = 0.01  # 1 - confidence; holds over the whole rollout
    min_requests: float = 500  # requests per side over the accumulated batches
    min_batches: int = 5  # batches (ratio signals)
    min_batch_requests: float = 20  # a batch with fewer requests on a side adds no evidence


@dataclass(frozen=True)
class Batch:
    """One variant over one rate window: counts and signal values."""

    requests: float
    failures: float
    values: Mapping[str, float] = field(default_factory=dict)  # finite values only

    @classmethod
    def from_readings(cls, readings: Mapping[str, Reading], window_seconds: float) -> Batch | None:
        """A batch from a variant's readings over a ``window_seconds`` rate window:
        counts are rate x window. None when the request rate is not a value (missing
        data is never evidence); zero traffic is a batch with no requests."""
        rate = readings.get(REQUEST_RATE)
        if rate is None or not rate.ok:
            return None
        n = max(0.0, rate.num()) * window_seconds
        err = readings.get(ERROR_RATE)
        f = max(0.0, min(1.0, err.num())) * n if err is not None and err.ok else None
        values = {
            s: r.num()
            for s, r in readings.items()
            if s not in (REQUEST_RATE, ERROR_RATE) and r.ok and math.isfinite(r.num())
        }
        if f is None:
            # No failure count (for example no requests): keep it out of the
            # error-rate evidence by marking the batch as count-less.
            return cls(n, math.nan, values)
        return cls(n, f, values)


@dataclass(frozen=True)
class Evidence:
    """What has been accumulated for one signal (kept in status)."""

    signal: str
    batches: int = 0
    # ratio signals: sums of x = log(candidate / baseline), of x^2, of the logs
    sum_x: float = 0.0
    sum_x2: float = 0.0
    sum_log_candidate: float = 0.0
    sum_log_baseline: float = 0.0
    # proportion signals (and the sample count of every signal): requests and failures
    candidate_requests: float = 0.0
    candidate_failures: float = 0.0
    baseline_requests: float = 0.0
    baseline_failures: float = 0.0

    def to_status(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "sumX": _r(self.sum_x),
            "sumX2": _r(self.sum_x2),
            "sumLogCandidate": _r(self.sum_log_candidate),
            "sumLogBaseline": _r(self.sum_log_baseline),
            "candidateRequests": _r(self.candidate_requests),
            "candidateFailures": _r(self.candidate_failures),
            "baselineRequests": _r(self.baseline_requests),
            "baselineFailures": _r(self.baseline_failures),
        }

    @classmethod
    def from_status(cls, signal: str, d: Mapping[str, Any] | None) -> Evidence:
        d = d or {}

        def f(k: str) -> float:
            try:
                x = float(d.get(k) or 0.0)
            except (TypeError, ValueError):
                return 0.0
            return x if math.isfinite(x) else 0.0

        return cls(
            signal=signal,
            batches=int(f("batches")),
            sum_x=f("sumX"),
            sum_x2=f("sumX2"),
            sum_log_candidate=f("sumLogCandidate"),
            sum_log_baseline=f("sumLogBaseline"),
            candidate_requests=f("candidateRequests"),
            candidate_failures=f("candidateFailures"),
            baseline_requests=f("baselineRequests"),
            baseline_failures=f("baselineFailures"),
        )


def _r(x: float) -> float:
    """Round for status (12 significant digits: sums stay exact enough to continue)."""
    return float(f"{x:.12g}")


@dataclass(frozen=True)
class Judgement:
    """The verdict on one signal, with the numbers behind it."""

    signal: str
    kind: Kind
    direction: Direction
    tolerance: float
    candidate: float | None  # pooled error rate, or geometric mean of the batch values
    baseline: float | None
    effect: float | None  # proportion: difference; ratio: candidate / baseline
    lower: float | None  # confidence interval of the effect
    upper: float | None
    confidence: float
    samples: int  # requests of the smaller side
    batches: int
    verdict: Verdict
    reason: str

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "signal": self.signal,
            "direction": self.direction,
            "tolerance": self.tolerance,
            "confidence": self.confidence,
            "samples": self.samples,
            "batches": self.batches,
            "verdict": self.verdict,
            "reason": self.reason,
        }
        for k, v in (
            ("candidate", self.candidate),
            ("baseline", self.baseline),
            ("effect", self.effect),
            ("lower", self.lower),
            ("upper", self.upper),
        ):
            if v is not None and math.isfinite(v):
                out[k] = _sig(v)
        return out

    def describe(self) -> str:
        """One line for Events and messages: value vs baseline, tolerance, samples."""
        if self.candidate is None or self.baseline is None:
            return f"{self.signal} {self.verdict} ({self.reason})"
        has_ci = self.lower is not None and self.upper is not None and math.isfinite(self.upper)
        if self.kind == "difference":
            vals = f"{self.candidate:.4g} vs baseline {self.baseline:.4g}"
            tol = f"tolerance {'+' if self.direction == 'lower' else '-'}{self.tolerance:g}"
            ci = f", difference {self.lower:+.4g}..{self.upper:+.4g}" if has_ci else ""
        elif self.kind == "proportion":
            vals = f"{self.candidate:.2%} vs baseline {self.baseline:.2%}"
            tol = f"tolerance +{self.tolerance:.2%}"
            ci = (
                f", difference {self.lower:+.2%}..{self.upper:+.2%}"
                if self.lower is not None and self.upper is not None and math.isfinite(self.upper)
                else ""
            )
        else:
            vals = f"{self.candidate:.3g} vs baseline {self.baseline:.3g}"
            tol = f"tolerance {self.tolerance:.0%}"
            ci = (
                f", ratio {self.lower:.3g}..{self.upper:.3g}"
                if self.lower is not None and self.upper is not None and math.isfinite(self.upper)
                else ""
            )
        return (
            f"{self.signal} {self.verdict}: {vals} ({tol}{ci} at {self.confidence:.0%} "
            f"confidence, {self.samples} requests, {self.batches} batches)"
        )


def _sig(x: float) -> float:
    if x == 0:
        return 0.0
    digits = max(0, 4 - math.floor(math.log10(abs(x))))
    return round(x, digits)


# ---------------------------------------------------------------- the tests

_NO_EVIDENCE = "minimum sample not reached (no window with values on both sides yet)"


def t_halfwidth(n: int, var: float, alpha: float, c: float = T_MIXTURE_SCALE) -> float:
    """Half-width of Lai's always-valid interval for a normal mean, unknown variance.

    ``var`` is the biased sample variance (sum of squared deviations / n). The
    interval is ``mean +- halfwidth``; ``inf`` when there is not enough data yet.
    Derived by inverting ``M_n(mu) < 1/alpha`` (module docstring): with
    ``q = (alpha^2 / (1 + n c^2))^(1/n)`` and ``g = n c^2 / (1 + n c^2)``,
    ``(mean - mu)^2 / var < (1 - q) / (q - 1 + g)``.
    """
    if n < 2:
        return math.inf
    cc = c * c
    q = (alpha * alpha / (1.0 + n * cc)) ** (1.0 / n)
    g = n * cc / (1.0 + n * cc)
    d = q - 1.0 + g
    if d <= 0:
        return math.inf
    return math.sqrt(max(var, 0.0) * (1.0 - q) / d)


def mixture_halfwidth(v: float, alpha: float, tau: float) -> float:
    """Half-width of Robbins' normal-mixture confidence sequence for an estimate
    with variance ``v`` (mixing N(0, tau^2) over the effect)."""
    if v <= 0:
        return 0.0
    t2 = tau * tau
    return math.sqrt(v * (v + t2) / t2 * (2.0 * math.log(1.0 / alpha) + math.log((v + t2) / v)))


# ---------------------------------------------------------------- accumulate


def accumulate(
    evidence: Mapping[str, Evidence],
    criteria: Sequence[Criterion],
    candidate: Batch,
    baseline: Batch,
    gate: Gate = Gate(),
) -> dict[str, Evidence]:
    """The evidence with one more pair of batches (same window for both sides)."""
    out = dict(evidence)
    if candidate.requests < gate.min_batch_requests or baseline.requests < gate.min_batch_requests:
        return out  # too few requests in this window on one side: no evidence either way
    for c in criteria:
        e = out.get(c.signal) or Evidence(c.signal)
        if c.kind == "proportion":
            if math.isnan(candidate.failures) or math.isnan(baseline.failures):
                continue
            e = replace(
                e,
                batches=e.batches + 1,
                candidate_requests=e.candidate_requests + candidate.requests,
                candidate_failures=e.candidate_failures + candidate.failures,
                baseline_requests=e.baseline_requests + baseline.requests,
                baseline_failures=e.baseline_failures + baseline.failures,
            )
        else:
            a = candidate.values.get(c.signal)
            b = baseline.values.get(c.signal)
            if a is None or b is None:
                continue  # not a value on one side: no evidence
            if c.kind == "difference":
                la, lb = a, b
            elif a > 0 and b > 0:
                la, lb = math.log(a), math.log(b)
            else:
                continue  # a ratio of values that are not positive: no evidence
            x = la - lb
            e = replace(
                e,
                batches=e.batches + 1,
                sum_x=e.sum_x + x,
                sum_x2=e.sum_x2 + x * x,
                sum_log_candidate=e.sum_log_candidate + la,
                sum_log_baseline=e.sum_log_baseline + lb,
                candidate_requests=e.candidate_requests + candidate.requests,
                baseline_requests=e.baseline_requests + baseline.requests,
            )
        out[c.signal] = e
    return out


# --------------------------------------------------------------------- judge


def judge(c: Criterion, e: Evidence | None, gate: Gate = Gate()) -> Judgement:
    """The verdict on one signal from its evidence."""
    e = e or Evidence(c.signal)
    samples = int(min(e.candidate_requests, e.baseline_requests))
    conf = 1.0 - gate.alpha
    if c.kind == "proportion":
        return _judge_proportion(c, e, gate, samples, conf)
    return _judge_ratio(c, e, gate, samples, conf)


def _judge_proportion(
    c: Criterion, e: Evidence, gate: Gate, samples: int, conf: float
) -> Judgement:
    nc, nb = e.candidate_requests, e.baseline_requests
    if nc <= 0 or nb <= 0:
        return Judgement(
            c.signal, c.kind, c.direction, c.tolerance, None, None, None, None, None, conf,
            samples, e.batches, "Inconclusive", _NO_EVIDENCE,
        )  # fmt: skip
    pc, pb = e.candidate_failures / nc, e.baseline_failures / nb
    sc = (e.candidate_failures + 1) / (nc + 2)
    sb = (e.baseline_failures + 1) / (nb + 2)
    v = sc * (1 - sc) / nc + sb * (1 - sb) / nb
    d = pc - pb
    w = mixture_halfwidth(v, gate.alpha, max(c.tolerance, 1e-6))
    lo, hi = d - w, d + w
    # "worse" is a higher failed fraction unless the direction says otherwise
    worse_lo, worse_hi = (lo, hi) if c.direction == "lower" else (-hi, -lo)
    verdict, reason = _verdict(worse_lo, worse_hi, c.tolerance, samples, gate, e.batches, 1)
    return Judgement(
        c.signal, c.kind, c.direction, c.tolerance, pc, pb, d, lo, hi, conf, samples,
        e.batches, verdict, reason,
    )  # fmt: skip


def _judge_ratio(c: Criterion, e: Evidence, gate: Gate, samples: int, conf: float) -> Judgement:
    n = e.batches
    if n == 0:
        return Judgement(
            c.signal, c.kind, c.direction, c.tolerance, None, None, None, None, None, conf,
            samples, n, "Inconclusive", _NO_EVIDENCE,
        )  # fmt: skip
    mean = e.sum_x / n
    var = max(0.0, e.sum_x2 / n - mean * mean)
    w = t_halfwidth(n, var, gate.alpha)
    lo, hi = mean - w, mean + w
    worse_lo, worse_hi = (lo, hi) if c.direction == "lower" else (-hi, -lo)
    diff = c.kind == "difference"
    tol = c.tolerance if diff else math.log1p(c.tolerance)
    verdict, reason = _verdict(worse_lo, worse_hi, tol, samples, gate, n, gate.min_batches)
    if diff:
        return Judgement(
            c.signal, c.kind, c.direction, c.tolerance, e.sum_log_candidate / n,
            e.sum_log_baseline / n, mean, lo, hi, conf, samples, n, verdict, reason,
        )  # fmt: skip
    return Judgement(
        c.signal,
        c.kind,
        c.direction,
        c.tolerance,
        math.exp(e.sum_log_candidate / n),
        math.exp(e.sum_log_baseline / n),
        math.exp(mean),
        math.exp(lo) if math.isfinite(lo) else 0.0,
        math.exp(hi) if math.isfinite(hi) else math.inf,
        conf,
        samples,
        n,
        verdict,
        reason,
    )


def _verdict(
    worse_lo: float,
    worse_hi: float,
    tol: float,
    samples: int,
    gate: Gate,
    batches: int,
    min_batches: int,
) -> tuple[Verdict, str]:
    """Fail or Pass when the interval of "how much worse" is beyond or within the
    tolerance; the gate only holds back a Pass (a clear regression fails early,
    the interval already accounts for how little was seen)."""
    if worse_lo > tol:
        return "Fail", "worse than tolerated"
    if samples < gate.min_requests or batches < min_batches:
        return "Inconclusive", (
            f"minimum sample not reached ({samples}/{gate.min_requests:g} requests, "
            f"{batches}/{min_batches} batches)"
        )
    if worse_hi < tol:
        return "Pass", "within tolerance"
    return "Inconclusive", "not enough evidence either way"


def overall(judgements: Iterable[Judgement]) -> Verdict:
    """Fail if any signal fails; Pass if every signal passes; else Inconclusive."""
    vs = [j.verdict for j in judgements]
    if "Fail" in vs:
        return "Fail"
    if vs and all(v == "Pass" for v in vs):
        return "Pass"
    return "Inconclusive"


# ----------------------------------------------------------------- A/B tests

Better = Literal["candidate", "baseline", "none"]


def better(j: Judgement) -> tuple[Better, str]:
    """Which side is better on one signal (two-sided: the interval excludes no
    difference), and by how much; 'none' until the evidence says so."""
    if j.lower is None or j.upper is None or (j.verdict == "Inconclusive" and _gated(j)):
        return "none", "Inconclusive"
    zero = 1.0 if j.kind == "ratio" else 0.0
    cand_lower = j.upper < zero  # candidate's values are lower than baseline's
    cand_higher = j.lower > zero
    if not (cand_lower or cand_higher):
        return "none", "no difference shown"
    cand_better = cand_lower if j.direction == "lower" else cand_higher
    return ("candidate" if cand_better else "baseline"), "difference shown"


def _gated(j: Judgement) -> bool:
    return j.reason.startswith("minimum sample")


def default_criteria(
    latency_signals: Sequence[str], error_tolerance: float, latency_tolerance: float
) -> list[Criterion]:
    out = [Criterion(ERROR_RATE, "proportion", error_tolerance)]
    out += [Criterion(s, "ratio", latency_tolerance) for s in latency_signals]
    return out
