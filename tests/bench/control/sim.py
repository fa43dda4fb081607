"""One InferenceService under one policy: the event loop, the load test, the scores."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from sluice.policy import signals as sig

from .fleet import Fleet, Pod, ServiceModel, VariantSpec
from .policies import Context, PodInfo, Policy, View
from .prom import Prometheus
from .traces import Trace


@dataclass(frozen=True)
class Scenario:
    """Traffic, the variants that serve it, the SLO and the control loop's clocks."""

    name: str
    trace: Trace
    variants: tuple[VariantSpec, ...] = (VariantSpec(),)
    slo_ms: float = 100.0
    quantile: float = 0.99
    min_replicas: int = 1
    max_replicas: int = 60
    control_interval: float = 15.0  # the operator's cycle (and the HPA's sync period)
    scrape_interval: float = 15.0
    scrape_offset: float = 5.0  # scrapes are not aligned with control cycles
    rate_window: str = "1m"
    recovery_window: float = 600.0  # attainment is also scored this long after each event
    tags: tuple[str, ...] = ()

    def with_load_time(self, seconds: float) -> Scenario:
        return replace(self, variants=tuple(replace(v, load_time_s=seconds) for v in self.variants))

    @property
    def load_time(self) -> float:
        return self.variants[0].load_time_s


@dataclass
class Timeline:
    t: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)  # the trace's true rate
    replicas: dict[str, list[int]] = field(default_factory=dict)  # Deployment replicas
    ready: dict[str, list[int]] = field(default_factory=dict)
    signal: dict[str, list[float]] = field(default_factory=dict)  # the p99 reading (ms)
    reasons: list[str] = field(default_factory=list)


@dataclass
class Result:
    scenario: str
    policy: str
    seed: int
    load_time: float
    requests: int
    attainment: float
    recovery_attainment: float | None
    replica_hours: float
    actions: int
    timeline: Timeline
    latency_p99_per_cycle: list[float]

    def scores(self) -> dict[str, Any]:
        return {
            "attainment": self.attainment,
            "recovery_attainment": self.recovery_attainment,
            "replica_hours": self.replica_hours,
            "actions": self.actions,
            "requests": self.requests,
        }


# ------------------------------------------------------------------ load test


@lru_cache(maxsize=64)
def load_test(
    service: ServiceModel, slo_ms: float, quantile: float = 0.99, n: int = 60000, seed: int = 7
) -> float:
    """The highest Poisson rate one replica serves with its ``quantile`` latency within
    the SLO: what a load test (perf_analyzer's latency-bound search) reports."""
    slo = slo_ms / 1e3
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0, n)
    jitter = service.jitter(rng, n)
    b = service.batching
    top = 1.0 / service.mean_s
    if b is not None and b.max_batch_size > 1:
        top = b.max_batch_size / (service.mean_s * float(b.factor(b.max_batch_size)))

    def p(rate: float) -> float:
        arr = np.cumsum(gaps) / rate
        pod = Pod(0, "lt", 0.0, 0.0)
        _, lat = pod.serve(arr, jitter * service.mean_s, b)
        skip = n // 10  # warm-up
        return float(np.quantile(lat[skip:], quantile))

    lo, hi = 0.0, top
    for _ in range(22):
        mid = (lo + hi) / 2
        if p(mid) <= slo:
            lo = mid
        else:
            hi = mid
    return lo


# ----------------------------------------------------------------------- run


def run(scenario: Scenario, policy: Policy, seed: int) -> Result:
    trace = scenario.trace
    T = trace.duration
    traffic = np.random.default_rng([seed, 1])
    arr = trace.arrivals(traffic)
    n = arr.size
    u = traffic.random(n)
    jitter = {
        v.name: v.service.jitter(np.random.default_rng([seed, 2, i]), n)
        for i, v in enumerate(scenario.variants)
    }
    fleet = Fleet(list(scenario.variants), np.random.default_rng([seed, 3]))
    prom = Prometheus(scrape_interval=scenario.scrape_interval)
    cap = {
        v.name: load_test(v.service, scenario.slo_ms, scenario.quantile) for v in scenario.variants
    }
    total_w = sum(v.weight for v in scenario.variants) or 1.0
    weights = {v.name: v.weight / total_w for v in scenario.variants}
    ctx = Context(
        slo_ms=scenario.slo_ms,
        quantile=scenario.quantile,
        min_replicas=scenario.min_replicas,
        max_replicas=scenario.max_replicas,
        capacity=cap,
        load_time={v.name: v.load_time_s * (1 + v.load_jitter) for v in scenario.variants},
        trace=trace,
        weights=weights,
        interval=scenario.control_interval,
    )
    policy.reset(ctx)
    # Signals the policy reads (all of them unless it says; the operator reads all).
    wanted = getattr(policy, "needs", None)
    needs = {k: sig.BUILTIN_QUERIES[k] for k in wanted} if wanted is not None else None
    # Every policy starts right-sized for the first minute, warm.
    for v in scenario.variants:
        first = trace.peak(0, 60) * weights[v.name]
        n0 = max(scenario.min_replicas, math.ceil(first / cap[v.name]))
        fleet.start(v.name, n0, 0.0, warm=True)

    lat = np.full(n, np.nan)
    tl = Timeline()
    for v in scenario.variants:
        tl.replicas[v.name] = []
        tl.ready[v.name] = []
        tl.signal[v.name] = []
    actions = 0
    t = 0.0
    pos = 0
    ci, si = scenario.control_interval, scenario.scrape_interval
    next_control, next_scrape = ci, scenario.scrape_offset
    eps = 1e-9
    while t < T - eps:
        nxt = min(next_control, next_scrape, fleet.next_ready(t), T)
        j = int(np.searchsorted(arr, nxt, "left"))
        if j > pos:
            _route(fleet, t, arr[pos:j], u[pos:j], jitter, lat, pos)
            pos = j
        t = nxt
        if abs(t - next_scrape) < eps:
            prom.scrape(fleet, t)
            fleet.reap(t)
            next_scrape += si
        if abs(t - next_control) < eps:
            next_control += ci
            tl.t.append(t)
            tl.rate.append(trace.rate_at(t))
            views = {
                v.name: _view(fleet, prom, scenario, v.name, t, needs) for v in scenario.variants
            }
            decide_all = getattr(policy, "decide_all", None)
            wants = (
                decide_all(t, views)
                if decide_all is not None
                else {n: policy.decide(vw) for n, vw in views.items()}
            )
            for v in scenario.variants:
                view = views[v.name]
                want = max(scenario.min_replicas, min(scenario.max_replicas, wants[v.name]))
                if want != view.replicas:
                    actions += 1
                    fleet.scale(v.name, want, t)
                tl.replicas[v.name].append(want)
                tl.ready[v.name].append(view.ready)
                r = view.readings.get("p99LatencyMs")
                tl.signal[v.name].append(r.num() if r is not None and r.ok else math.nan)
            tl.reasons.append(policy.explain())
    if pos < n:
        _route(fleet, t, arr[pos:], u[pos:], jitter, lat, pos)
    slo = scenario.slo_ms / 1e3
    lat = np.where(np.isnan(lat), np.inf, lat)
    ok = lat <= slo
    rec: float | None = None
    if trace.events:
        mask = np.zeros(n, dtype=bool)
        for e in trace.events:
            mask |= (arr >= e) & (arr < e + scenario.recovery_window)
        rec = float(ok[mask].mean()) if mask.any() else None
    # Latency actually served per control interval (for the plots).
    bins = np.minimum((arr // ci).astype(np.int64), int(T // ci))
    p99s: list[float] = []
    order = np.argsort(bins, kind="stable")
    sb = bins[order]
    edges = np.searchsorted(sb, np.arange(int(T // ci) + 2))
    ls = lat[order]
    for k in range(int(T // ci)):
        chunk = ls[edges[k] : edges[k + 1]]
        p99s.append(float(np.quantile(chunk, 0.99)) * 1e3 if chunk.size else math.nan)
    return Result(
        scenario=scenario.name,
        policy=policy.name,
        seed=seed,
        load_time=scenario.load_time,
        requests=n,
        attainment=float(ok.mean()) if n else 1.0,
        recovery_attainment=rec,
        replica_hours=fleet.replica_seconds(T) / 3600.0,
        actions=actions,
        timeline=tl,
        latency_p99_per_cycle=p99s,
    )


def _route(
    fleet: Fleet,
    t: float,
    arr: np.ndarray,
    u: np.ndarray,
    jitter: dict[str, np.ndarray],
    lat: np.ndarray,
    idx0: int,
) -> None:
    fleet.route(t, arr, u, jitter, lat, idx0)


def _view(
    fleet: Fleet,
    prom: Prometheus,
    sc: Scenario,
    variant: str,
    t: float,
    queries: dict[str, str] | None = None,
) -> View:
    live = fleet.live(variant)
    pods = tuple(
        PodInfo(
            created=p.created,
            ready=p.ready_at <= t,
            ready_at=p.since if p.ready_at <= t else None,
        )
        for p in live
    )
    return View(
        t=t,
        variant=variant,
        replicas=len(live),
        ready=sum(1 for p in pods if p.ready),
        pods=pods,
        readings=prom.readings(t, variant, sc.rate_window, queries),
    )
