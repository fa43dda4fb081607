"""Canary and A/B scenarios on the control-quality simulator.

The same request-level data plane (:mod:`.fleet`), the same Prometheus and PromQL
(:mod:`.prom`) and the same per-service decision the operator runs
(:func:`sluice.policy.control.decide`) as the autoscaling benchmark; what differs
is that the variants come and go with the rollout: every cycle the plan
(:func:`sluice.policy.plan.plan`) says which variants exist, which revision each
serves, their replicas and their route weights, and the simulated fleet follows it
the way the reconciler makes the Deployments and the HTTPRoute follow it (new pods
load for ``load_time_s``; a variant no longer planned leaves the route at once and
its pods drain).

Scenarios (100 seeds each in ``make bench-control``): identical, 1.3x and 2x slower
candidates, error rate 1 % -> 5 %, a right-sized fixed fleet (replicas for the
peak at the load-tested per-pod capacity) and an autoscaled one, low traffic
(10-60 req/s), pod-to-pod spread; A/B with p99 20 % apart and identical variants.
Nothing here is tuned per scenario: every run uses the spec below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sluice.api.v1alpha1 import InferenceServiceStatus, VariantStatus, parse_spec
from sluice.policy import control
from sluice.policy.plan import Observed, plan
from sluice.policy.readiness import DeploymentState, PodState

from .fleet import Fleet, ServiceModel, VariantSpec
from .policies import EPOCH
from .prom import Prometheus
from .sim import load_test
from .traces import Trace

CONTROL_S = 15.0
SCRAPE_S = 5.0
RATE_WINDOW = "30s"
WINDOW_S = 30.0
INTERVAL = "2m"
INTERVAL_S = 120.0
STEPS = (10, 25, 50)
SLO_MS = 100.0
LOAD_TIME_S = 45.0
IMAGE = "triton:bench"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str = "canary"  # canary | ab
    slowdown: float = 1.0  # candidate's service time / stable's
    base_error: float = 0.0
    cand_error: float = 0.0
    rate: tuple[float, float] = (120.0, 160.0)  # slowly varying between these (req/s)
    pod_spread: float = 0.0
    autoscale: bool = False
    cv: float = 0.3
    dist: str = "lognormal"  # service-time distribution (fleet.ServiceModel.dist)
    mean_ms: float = 20.0  # stable version's mean compute time
    period_s: tuple[float, float] = (600.0, 1800.0)  # period of the rate's slow swing
    max_s: float = 2700.0
    tags: tuple[str, ...] = ()

    @property
    def bad(self) -> bool:
        return self.slowdown > 1.0 or self.cand_error > self.base_error


def cases() -> list[Case]:
    return [
        Case("identical, right-sized fixed fleet"),
        Case("identical, autoscaled fleet", autoscale=True),
        Case("identical, low traffic 10-60 req/s, pod spread", rate=(10, 60), pod_spread=0.075),
        Case("identical, pod spread, harsh noise", pod_spread=0.075, cv=0.6),
        Case("1.3x slower, right-sized fixed fleet", slowdown=1.3),
        Case("1.3x slower, autoscaled fleet", slowdown=1.3, autoscale=True),
        Case("2x slower, right-sized fixed fleet", slowdown=2.0),
        Case("2x slower, low traffic, pod spread", slowdown=2.0, rate=(10, 60), pod_spread=0.075),
        Case("error rate 1% -> 5%", base_error=0.01, cand_error=0.05),
        Case("A/B: b's p99 20% lower", kind="ab", slowdown=0.8, max_s=1200.0),
        Case("A/B: identical", kind="ab", max_s=1200.0),
    ]


# The unseen scenarios' seeds start here: no seed of the published table is reused.
UNSEEN_SEED_BASE = 10_000


def unseen_cases() -> list[Case]:
    """Scenarios that are not in the published table (``--unseen``): other service-time
    distributions and means, rates, swing periods, regression sizes (1.2x, 1.5x) and
    pod spreads. Run with other seeds; the spec is the same as everywhere."""
    return [
        Case("identical, gamma cv 0.8, 30-90 req/s, spread 10 %", rate=(30, 90), pod_spread=0.1,
             dist="gamma", cv=0.8, period_s=(300, 900)),
        Case("identical, bimodal, 200-320 req/s, spread 5 %", rate=(200, 320), pod_spread=0.05,
             dist="bimodal", cv=0.5, mean_ms=12.0),
        Case("identical, 35 ms model, 5-25 req/s", rate=(5, 25), mean_ms=35.0, cv=0.3),
        Case("1.5x slower, gamma cv 0.8, spread 10 %", slowdown=1.5, rate=(30, 90),
             pod_spread=0.1, dist="gamma", cv=0.8),
        Case("1.2x slower, bimodal, 200-320 req/s", slowdown=1.2, rate=(200, 320),
             dist="bimodal", cv=0.5, mean_ms=12.0),
        Case("1.3x slower, 35 ms model, 5-25 req/s", slowdown=1.3, rate=(5, 25), mean_ms=35.0,
             cv=0.3),
        Case("2x slower, gamma, spread 10 %, 30-90 req/s", slowdown=2.0, rate=(30, 90),
             pod_spread=0.1, dist="gamma", cv=0.8),
        Case("error rate 0.5% -> 3%, bimodal", base_error=0.005, cand_error=0.03,
             rate=(60, 120), dist="bimodal", cv=0.5),
        Case("A/B: b's p99 25% lower, gamma", kind="ab", slowdown=0.75, dist="gamma", cv=0.8,
             rate=(60, 120), max_s=1200.0),
        Case("A/B: identical, bimodal, spread 5 %", kind="ab", dist="bimodal", cv=0.5,
             pod_spread=0.05, rate=(60, 120), max_s=1200.0),
    ]  # fmt: skip


def _trace(c: Case, rng: np.random.Generator) -> Trace:
    n = int(c.max_s) + 1
    lo, hi = c.rate
    period = rng.uniform(*c.period_s)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.arange(n)
    rate = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * math.pi * t / period + phase))
    return Trace(c.name, rate.astype(np.float64))


def _spec(c: Case, replicas: int, version: int = 1) -> Any:
    data: dict[str, Any] = {
        "model": {"name": "model", "repository": "s3://bench/model", "version": version},
        "triton": {"image": IMAGE},
        "replicas": replicas,
        "router": {"gateway": {"name": "gw"}},
    }
    if c.autoscale:
        data["scaling"] = {
            "mode": "Auto",
            "minReplicas": 1,
            "maxReplicas": 60,
            "target": {"metric": "p99LatencyMs", "value": SLO_MS},
        }
    if c.kind == "canary":
        data["rollout"] = {"strategy": "Canary", "steps": list(STEPS), "interval": INTERVAL}
    else:
        data["variants"] = [{"name": "b", "weight": 50, "model": {"version": 2}}]
        data["experiment"] = {}
    return parse_spec(data)


@dataclass
class Outcome:
    case: str
    seed: int
    result: str  # promoted | rolled back | undecided | winner:<v> | none
    first_traffic: float | None = None
    decided_at: float | None = None
    winner_ever: str | None = None
    events: list[str] = field(default_factory=list)

    @property
    def intervals_to_rollback(self) -> float | None:
        if self.result != "rolled back" or self.first_traffic is None or self.decided_at is None:
            return None
        return (self.decided_at - self.first_traffic) / INTERVAL_S


def run(c: Case, seed: int) -> Outcome:
    rng = np.random.default_rng([seed, 11])
    trace = _trace(c, rng)
    base = ServiceModel(mean_s=c.mean_ms / 1e3, cv=c.cv, dist=c.dist)
    cand = replace(base, mean_s=base.mean_s * c.slowdown)
    cap = load_test(base, SLO_MS)
    models = {1: (base, c.base_error), 2: (cand, c.cand_error)}

    def vspec(name: str, version: int) -> VariantSpec:
        m, err = models[version]
        return VariantSpec(
            name=name, service=m, load_time_s=LOAD_TIME_S, error_rate=err,
            pod_spread=c.pod_spread, weight=0.0,
        )  # fmt: skip

    # Right-sized: the replicas the peak needs at the load-tested capacity.
    per_main = c.rate[1] * (0.5 if c.kind == "ab" else 1.0)
    replicas = max(1, math.ceil(per_main / cap))
    spec = _spec(c, replicas)
    # Variant -> the model version its pods run.
    runs = {"main": 1} if c.kind == "canary" else {"main": 1, "b": 2}
    fleet = Fleet([vspec(v, ver) for v, ver in runs.items()], np.random.default_rng([seed, 3]))
    for v in runs:
        fleet.weights[v] = 1.0
        fleet.start(v, replicas, 0.0, warm=True)
    prom = Prometheus(scrape_interval=SCRAPE_S)
    traffic = np.random.default_rng([seed, 1])
    arr = trace.arrivals(traffic)
    u = traffic.random(arr.size)
    jit = base.jitter(np.random.default_rng([seed, 2]), arr.size)
    lat = np.full(arr.size, np.nan)
    status: dict[str, Any] = {}
    out = Outcome(c.name, seed, "undecided")
    pos = 0
    t = 0.0
    next_control, next_scrape = CONTROL_S, 2.0
    changed = c.kind == "ab"  # the A/B variant is there from the start
    while t < c.max_s:
        nxt = min(next_control, next_scrape, fleet.next_ready(t))
        j = int(np.searchsorted(arr, nxt, "left"))
        if j > pos:
            jitter = {v: jit for v in fleet.variants}
            fleet.route(t, arr[pos:j], u[pos:j], jitter, lat, pos)
            pos = j
        t = nxt
        if abs(t - next_scrape) < 1e-9:
            prom.scrape(fleet, t)
            fleet.reap(t)
            next_scrape += SCRAPE_S
        if abs(t - next_control) >= 1e-9:
            continue
        next_control += CONTROL_S
        if not changed and t >= 120.0:
            spec = _spec(c, replicas, version=2)
            changed = True
        # The world, as the shell reads it.
        deps: dict[str, DeploymentState] = {}
        pods: list[PodState] = []
        for v, ver in runs.items():
            live = fleet.live(v)
            ready = sum(1 for p in live if p.ready_at <= t)
            deps[v] = DeploymentState(
                name=f"svc-{v}", variant=v, replicas=len(live), ready=ready, updated=len(live),
                available=ready, current=True, version=ver, pods=len(live), image=IMAGE,
            )  # fmt: skip
            pods.extend(
                PodState(
                    name=f"svc-{v}-{p.uid}",
                    variant=v,
                    created=EPOCH + p.created,
                    ready=p.ready_at <= t,
                    ready_since=EPOCH + p.ready_at if p.ready_at <= t else None,
                )
                for p in live
            )
        obs = prom.observations(t, RATE_WINDOW)
        st = InferenceServiceStatus.from_dict(status)
        d = control.decide(
            control.ServiceInput(
                namespace="bench", name="svc", spec=spec, status=st, generation=1,
                observations=obs, deployments=deps, pods=tuple(pods),
                config=control.ControlConfig(rate_window_seconds=WINDOW_S),
            ),
            EPOCH + t,
        )  # fmt: skip
        if d.status is not None:
            st = d.status
        out.events.extend(f"{t:.0f}s {e.reason}: {e.message}" for e in d.events)
        # The reconciler: Deployments and the HTTPRoute follow the plan.
        planned = plan(
            spec,
            st.rollout,
            Observed(
                scaled=st.scaled_replicas(),
                ready={v: x.ready for v, x in deps.items()},
                promoted=st.experiment.promoted if st.experiment else None,
            ),
        )
        names = {p.name for p in planned}
        for p in planned:
            if runs.get(p.name) != p.version:
                if p.name in runs:  # a new revision: its pods are replaced (warm)
                    fleet.scale(p.name, 0, t)
                fleet.variants[p.name] = vspec(p.name, p.version)
                runs[p.name] = p.version
                warm = p.name == "main"  # main rolls out at promotion: modelled as instant
                fleet.start(p.name, p.replicas, t, warm=warm)
            else:
                fleet.scale(p.name, p.replicas, t)
            fleet.weights[p.name] = p.weight / 100.0
        for v in list(runs):
            if v not in names:
                fleet.weights[v] = 0.0
                fleet.scale(v, 0, t)
                del runs[v]
        st = replace(
            st, variants=tuple(VariantStatus(name=p.name, weight=p.weight) for p in planned)
        )
        status = st.to_dict()
        # Scores.
        ro = st.rollout
        if c.kind == "canary" and ro is not None:
            if out.first_traffic is None and ro.canary_weight > 0:
                out.first_traffic = t
            if ro.phase in ("RollingBack", "RolledBack"):
                out.result, out.decided_at = "rolled back", t
                break
            if ro.phase in ("Promoting", "Succeeded"):
                out.result, out.decided_at = "promoted", t
                break
        ex = st.experiment
        if c.kind == "ab" and ex is not None and ex.winner is not None:
            out.winner_ever = out.winner_ever or ex.winner
    if c.kind == "ab":
        ex = InferenceServiceStatus.from_dict(status).experiment
        out.result = f"winner:{ex.winner}" if ex is not None and ex.winner else "none"
    return out


def summarise(outs: list[Outcome], c: Case) -> dict[str, Any]:
    n = len(outs)
    row: dict[str, Any] = {"scenario": c.name, "runs": n}
    if c.kind == "canary":
        rb = [o for o in outs if o.result == "rolled back"]
        row["rolled_back"] = len(rb) / n
        row["promoted"] = sum(o.result == "promoted" for o in outs) / n
        row["undecided"] = sum(o.result == "undecided" for o in outs) / n
        iv = [x for o in rb if (x := o.intervals_to_rollback) is not None]
        row["intervals_mean"] = float(np.mean(iv)) if iv else None
        row["intervals_max"] = float(np.max(iv)) if iv else None
        dec = [o.decided_at - (o.first_traffic or 0) for o in outs if o.decided_at is not None]
        row["minutes_to_decision_mean"] = float(np.mean(dec)) / 60 if dec else None
    else:
        row["winner_b"] = sum(o.result == "winner:b" for o in outs) / n
        row["winner_main"] = sum(o.result == "winner:main" for o in outs) / n
        row["no_winner"] = sum(o.result == "none" for o in outs) / n
        row["winner_ever_declared"] = sum(o.winner_ever is not None for o in outs) / n
        row["wrong_winner_ever"] = (
            sum(
                o.winner_ever is not None and (c.slowdown == 1.0 or o.winner_ever != "b")
                for o in outs
            )
            / n
        )
    return row
