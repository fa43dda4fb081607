"""Signals: what Prometheus says about each variant, and what that is worth.

Pure. The shell (:mod:`sluice.reconcile.prometheus`) sends the queries built
here and hands back the raw answers; this module turns them into
:class:`Reading` values keyed by ``(namespace, inferenceservice, variant)``.

Every reading is exactly one of

* a **value** (a finite number; zero traffic is the value ``0``),
* **no data** (no series for the variant),
* **not a number** (NaN or ±Inf, for example a latency over zero requests),
* an **error** (Prometheus unreachable, the query rejected, an ambiguous answer).

Only a value drives a decision. Nothing here ever turns a missing reading
into a number (KEDA turned null into 0 and scaled fleets to their minimum at
peak: kedacore/keda#3065).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# Re-exported: the one status timestamp format.
from ..api.schema import format_time as format_time
from ..api.schema import parse_time as parse_time
from ..api.v1alpha1 import Signals

REQUEST_RATE = "requestRate"
ERROR_RATE = "errorRate"
AVG_LATENCY = "avgLatencyMs"
QUEUE_TIME = "queueTimeMs"
P95_LATENCY = "p95LatencyMs"
P99_LATENCY = "p99LatencyMs"
COMPUTE_TIME = "computeTimeMs"
BATCH_SIZE = "batchSize"
COMPUTE_TIME_NOW = "computeTimeNowMs"
BATCH_SIZE_NOW = "batchSizeNow"
PENDING = "pendingRequests"
PENDING_GROWTH = "pendingGrowth"
P95_TYPICAL = "p95LatencyTypicalMs"
P99_TYPICAL = "p99LatencyTypicalMs"
RATE_NOW = "requestRateNow"
RATE_1M_AGO = "requestRate1mAgo"
RATE_2M_AGO = "requestRate2mAgo"
RATE_3M_AGO = "requestRate3mAgo"
SIGNALS = (
    REQUEST_RATE,
    ERROR_RATE,
    AVG_LATENCY,
    QUEUE_TIME,
    P95_LATENCY,
    P99_LATENCY,
    COMPUTE_TIME,
    BATCH_SIZE,
    PENDING,
    PENDING_GROWTH,
    RATE_NOW,
    RATE_1M_AGO,
    RATE_2M_AGO,
    RATE_3M_AGO,
    P95_TYPICAL,
    P99_TYPICAL,
    COMPUTE_TIME_NOW,
    BATCH_SIZE_NOW,
)
# The scrape interval of the pods (the rendered PodMonitor's): irate() spans it.
SCRAPE_SECONDS = 15.0

# The labels every result is grouped by. Pods carry them as sluice.dev/* labels;
# the PodMonitor (or a plain Prometheus's relabelling) copies them onto each series.
GROUP_LABELS = ("namespace", "inferenceservice", "variant")
_BY = "sum by (namespace, inferenceservice, variant)"
_MAX_BY = "max by (namespace, inferenceservice, variant)"
_AVG_BY = "avg by (namespace, inferenceservice, variant)"


def _rate(metric: str) -> str:
    return f"{_BY} (rate({metric}{{{{selector}}}}[{{window}}]))"


def _irate(metric: str) -> str:
    return f"{_BY} (irate({metric}{{{{selector}}}}[{{window}}]))"


_SUCCESS = _rate("nv_inference_request_success")
_FAILURE = _rate("nv_inference_request_failure")
_SUMMARY = "nv_inference_request_summary_us"

# Built-in PromQL templates over Triton's own metrics. ``{selector}`` becomes
# label matchers (without braces) and ``{window}`` the rate window; the
# placeholders are replaced textually, never with str.format, because PromQL
# is full of braces.
BUILTIN_QUERIES: dict[str, str] = {
    # Successful plus failed requests per second. `or` keeps the variant when a
    # Triton build exports no failure series yet.
    REQUEST_RATE: f"({_SUCCESS} + {_FAILURE}) or {_SUCCESS}",
    # Failed fraction of requests: NaN (not a value) when there were no requests.
    ERROR_RATE: f"{_FAILURE} / ({_SUCCESS} + {_FAILURE})",
    # Mean end-to-end server latency: total duration over successful requests.
    AVG_LATENCY: f"{_rate('nv_inference_request_duration_us')} / {_SUCCESS} / 1000",
    # Mean time a request waited in Triton's scheduler queue.
    QUEUE_TIME: f"{_rate('nv_inference_queue_duration_us')} / {_SUCCESS} / 1000",
    # Tail latency. Triton's summary quantiles are computed per process over a
    # sliding window (about 60 s) and cannot be averaged across pods; the bound
    # used is the worst pod of the variant (max over pods). `max` skips pods
    # whose quantile is NaN (no requests in their window).
    P95_LATENCY: f'{_MAX_BY} ({_SUMMARY}{{{{selector}},quantile="0.95"}}) / 1000',
    P99_LATENCY: f'{_MAX_BY} ({_SUMMARY}{{{{selector}},quantile="0.99"}}) / 1000',
    # What the demand-based policy sizes from. Fleet sums of counters are
    # additive: unlike the worst pod's quantile, they do not drift with the
    # number of pods.
    # Compute time per inference: the execution's time, shared by its batch
    # (Triton adds each request's compute duration; a batch of b adds b times).
    COMPUTE_TIME: (
        f"{_rate('nv_inference_compute_infer_duration_us')} / {_rate('nv_inference_count')} / 1000"
    ),
    # Average dynamic batch size (Triton's metrics docs: inference / execution count).
    BATCH_SIZE: f"{_rate('nv_inference_count')} / {_rate('nv_inference_exec_count')}",
    # The same pair over the last scrape interval (irate): with dynamic batching
    # the batch size grows with the load, and while the pods are overloaded this
    # is the execution time and batch size they reach saturated, where the rate
    # window still mostly shows the calmer minute before.
    COMPUTE_TIME_NOW: (
        f"{_irate('nv_inference_compute_infer_duration_us')} / "
        f"{_irate('nv_inference_count')} / 1000"
    ),
    BATCH_SIZE_NOW: f"{_irate('nv_inference_count')} / {_irate('nv_inference_exec_count')}",
    # Requests waiting in the schedulers' queues, and how fast that grows: in
    # overload the success counter shows only the completions, the queue the rest.
    # The growth spans the last two scrapes (30 s at the 15 s scrape interval), not
    # the rate window: a queue that starts growing is seen within one scrape.
    PENDING: f"{_BY} (nv_inference_pending_request_count{{{{selector}}}})",
    PENDING_GROWTH: f"{_BY} (deriv(nv_inference_pending_request_count{{{{selector}}}}[30s]))",
    # The typical pod's tail: the mean over pods of their own quantile (pods with
    # no requests in their window, NaN, left out). An estimate of one pod's
    # quantile when the Service spreads requests evenly; unlike the worst pod's
    # it does not drift up with the number of pods. Used to correct the
    # queueing model's tail, never as a bound.
    P95_TYPICAL: f'{_AVG_BY} ({_SUMMARY}{{{{selector}},quantile="0.95"}} >= 0) / 1000',
    P99_TYPICAL: f'{_AVG_BY} ({_SUMMARY}{{{{selector}},quantile="0.99"}} >= 0) / 1000',
    # The request rate between the last two scrapes: reacts within one scrape
    # interval where rate() averages the whole window.
    RATE_NOW: f"{_BY} (irate(nv_inference_request_success{{{{selector}}}}[{{window}}]))",
    # The request rate over the minute one and two minutes ago: with the current
    # one, the rate's trend. Offsets, unlike a longer window, are not pulled down
    # by pods younger than the window (their series start at zero).
    RATE_1M_AGO: f"{_BY} (rate(nv_inference_request_success{{{{selector}}}}[1m] offset 1m))",
    RATE_2M_AGO: f"{_BY} (rate(nv_inference_request_success{{{{selector}}}}[1m] offset 2m))",
    RATE_3M_AGO: f"{_BY} (rate(nv_inference_request_success{{{{selector}}}}[1m] offset 3m))",
}
# Signals a decision may use when they are there; without them it says so and
# sizes from the rest (older Triton builds export no pending-request gauge).
OPTIONAL = (
    PENDING,
    PENDING_GROWTH,
    RATE_NOW,
    RATE_1M_AGO,
    RATE_2M_AGO,
    RATE_3M_AGO,
    P95_TYPICAL,
    P99_TYPICAL,
    COMPUTE_TIME_NOW,
    BATCH_SIZE_NOW,
)

Key = tuple[str, str, str]  # (namespace, inferenceservice, variant)
Kind = Literal["value", "nodata", "nan", "error"]


@dataclass(frozen=True)
class Reading:
    """One signal of one variant: a value, or why there is none."""

    kind: Kind
    value: float | None = None
    why: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "value"

    def num(self) -> float:
        """The value; only call when :attr:`ok`."""
        assert self.kind == "value" and self.value is not None
        return self.value

    def describe(self) -> str:
        if self.ok:
            return f"{self.num():g}"
        return {"nodata": "no data", "nan": "not a number", "error": "error"}[self.kind] + (
            f" ({self.why})" if self.why else ""
        )


def value(x: float) -> Reading:
    return Reading("value", float(x))


def no_data(why: str = "") -> Reading:
    return Reading("nodata", None, why)


def not_a_number(why: str = "") -> Reading:
    return Reading("nan", None, why)


def error(why: str) -> Reading:
    return Reading("error", None, why)


def parse_sample(raw: Any) -> Reading:
    """A Prometheus sample value ("1.5", "NaN", "+Inf") as a reading."""
    try:
        x = float(raw)
    except (TypeError, ValueError):
        return error(f"unparseable sample value {raw!r}")
    if math.isnan(x):
        return not_a_number("NaN")
    if math.isinf(x):
        return not_a_number("+Inf" if x > 0 else "-Inf")
    return value(x)


# ----------------------------------------------------------------- selectors


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def fleet_selector(namespaces: Sequence[str] = ()) -> str:
    """Matchers for every InferenceService the operator watches."""
    parts = ['inferenceservice!=""']
    if namespaces:
        alts = "|".join(_regex_escape(n) for n in sorted(set(namespaces)))
        parts.append(f"namespace=~{_quote(alts)}")
    return ",".join(parts)


def service_selector(namespace: str, name: str) -> str:
    """Matchers for one InferenceService (for its custom query templates)."""
    return f"namespace={_quote(namespace)},inferenceservice={_quote(name)}"


def _regex_escape(s: str) -> str:
    # Namespace names are DNS labels; escape anything else defensively.
    return "".join(c if c.isalnum() or c == "-" else "\\\\" + c for c in s)


def render_query(template: str, selector: str, window: str) -> str:
    return template.replace("{selector}", selector).replace("{window}", window)


def queries_for(
    custom: Mapping[str, str],
    selector: str,
    window: str,
    signals: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The per-service queries: the built-in signals with a custom template
    (spec.monitoring.queries) and the custom signals judged by name
    (``signals``: spec.rollout.analysis / spec.experiment customSignals)."""
    out = {s: render_query(t, selector, window) for s, t in custom.items() if s in SIGNALS}
    for s, t in (signals or {}).items():
        if s not in SIGNALS:
            out[s] = render_query(t, selector, window)
    return out


def fleet_queries(namespaces: Sequence[str], window: str) -> dict[str, str]:
    """One query per signal for every InferenceService together."""
    sel = fleet_selector(namespaces)
    return {s: render_query(t, sel, window) for s, t in BUILTIN_QUERIES.items()}


# ------------------------------------------------------------------- results


@dataclass(frozen=True)
class QueryAnswer:
    """What the shell got for one query: a vector result, or why not."""

    result: tuple[Mapping[str, Any], ...] | None = None  # [{"metric": {...}, "value": [t, v]}]
    error: str | None = None


def group(answer: QueryAnswer) -> dict[Key, Reading] | Reading:
    """A query's readings per variant, or one error reading for all of them."""
    if answer.error is not None:
        return error(answer.error)
    out: dict[Key, Reading] = {}
    counts: dict[Key, int] = {}
    for item in answer.result or ():
        if not isinstance(item, Mapping) or "metric" not in item or "value" not in item:
            return error("the query did not return an instant vector")
        labels = item["metric"] or {}
        key = (
            str(labels.get("namespace", "")),
            str(labels.get("inferenceservice", "")),
            str(labels.get("variant", "")),
        )
        if not all(key):
            continue  # not attributable to a variant: ignored
        counts[key] = counts.get(key, 0) + 1
        v = item["value"]
        out[key] = parse_sample(v[1] if isinstance(v, Sequence) and len(v) == 2 else None)
    for key, n in counts.items():
        if n > 1:
            out[key] = error(
                f"{n} series for one variant: aggregate by (namespace, inferenceservice, variant)"
            )
    return out


@dataclass(frozen=True)
class Observations:
    """Every reading of a control cycle, with what to say when one is absent."""

    by_signal: Mapping[str, dict[Key, Reading] | Reading]

    def reading(self, key: Key, signal: str) -> Reading:
        got = self.by_signal.get(signal)
        if got is None:
            return error("not queried")
        if isinstance(got, Reading):
            return got
        r = got.get(key)
        if r is None:
            return no_data(f"no series for variant {key[2]}")
        return r

    def variant(self, key: Key) -> dict[str, Reading]:
        """Every built-in signal of a variant, and the custom ones queried for it."""
        extra = [s for s in self.by_signal if s not in SIGNALS]
        return {s: self.reading(key, s) for s in (*SIGNALS, *extra)}


def not_configured() -> Observations:
    """What a cycle observes when no Prometheus is configured: every signal an error."""
    return Observations(
        dict.fromkeys(SIGNALS, error("no Prometheus is configured (sluice run --prometheus-url)"))
    )


def merge(base: Observations, override: Mapping[str, dict[Key, Reading] | Reading]) -> Observations:
    """``base`` with the signals of ``override`` replaced (custom per-service queries)."""
    return Observations({**base.by_signal, **override})


# -------------------------------------------------------------------- status

_STATUS_FIELDS = {
    REQUEST_RATE: "request_rate",
    ERROR_RATE: "error_rate",
    AVG_LATENCY: "avg_latency_ms",
    QUEUE_TIME: "queue_time_ms",
    P95_LATENCY: "p95_latency_ms",
    P99_LATENCY: "p99_latency_ms",
    COMPUTE_TIME: "compute_time_ms",
    BATCH_SIZE: "batch_size",
    PENDING: "pending_requests",
    PENDING_GROWTH: "pending_growth",
    RATE_NOW: "request_rate_now",
    P95_TYPICAL: "p95_latency_typical_ms",
    P99_TYPICAL: "p99_latency_typical_ms",
    RATE_1M_AGO: "request_rate_1m_ago",
    RATE_2M_AGO: "request_rate_2m_ago",
    RATE_3M_AGO: "request_rate_3m_ago",
    COMPUTE_TIME_NOW: "compute_time_now_ms",
    BATCH_SIZE_NOW: "batch_size_now",
}


def _round(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    digits = max(0, 3 - math.floor(math.log10(abs(x))))
    return round(x, digits)


def to_status(
    readings: Mapping[str, Reading], observed_at: float, variant: str | None = None
) -> Signals:
    """A status ``Signals`` object: the values, and each missing signal with why."""
    values: dict[str, float] = {}
    missing: list[str] = []
    for s in SIGNALS:
        r = readings.get(s)
        if r is None:
            continue
        if r.ok:
            values[_STATUS_FIELDS[s]] = _round(r.num())
        else:
            missing.append(f"{s}: {r.describe()}")
    return Signals(variant=variant, missing=tuple(missing), observed_at=observed_at, **values)


def describe_missing(items: Iterable[tuple[str, str, Reading]]) -> str:
    """'main p99LatencyMs: no data (...)' lines joined, for conditions and events."""
    return "; ".join(f"{variant} {signal}: {r.describe()}" for variant, signal, r in items)
