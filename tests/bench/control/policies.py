"""The policies compared, all behind one interface.

* :class:`SluicePolicy` drives the project's own pure per-InferenceService
  decision (:func:`sluice.policy.control.decide`) exactly as the operator's
  control cycle does: the same signals, typed Deployments and pods (creation
  and ready times), the status written in its wire form and read back.
* :class:`HPA` is the Kubernetes HorizontalPodAutoscaler's algorithm
  (pkg/controller/podautoscaler) on one Object/External metric with a Value
  target, here the p99 signal. Constants, from the Kubernetes docs
  (https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/):
  sync period 15 s (``--horizontal-pod-autoscaler-sync-period``); tolerance
  0.1 (``--horizontal-pod-autoscaler-tolerance``); desired =
  ceil(readyPods x current/target), so pods that are not ready yet count as
  using none of the metric when scaling up; default behaviour: scale-up
  stabilisation 0 s and policies "4 pods or 100 % per 15 s, the larger"
  (selectPolicy Max), scale-down stabilisation 300 s (the highest
  recommendation of the window) and "100 % per 15 s".
* :class:`KEDA` is KEDA's Prometheus scaler on the request rate: one value per
  query that becomes an HPA External metric with an AverageValue target
  ``threshold`` (desired = ceil(value / threshold), tolerance on
  value / (threshold x replicas)), the same HPA defaults, ``ignoreNullValues``
  true (empty or NaN is 0: kedacore/keda#3065). KEDA docs
  (https://keda.sh/docs/latest/reference/scaledobject-spec/): pollingInterval
  30 s and cooldownPeriod 300 s govern activation and scaling to zero only
  (the HPA queries KEDA's metrics server on its own 15 s sync; with
  ``minReplicaCount`` >= 1 the cooldown never applies), so with minReplicaCount 1
  the HPA's own behaviour is what scales. The threshold is what a load test of
  one simulated replica gives: the highest rate whose p99 meets the SLO
  (:func:`tests.bench.control.sim.load_test`).
* :class:`Oracle` knows the trace: at every cycle it asks for the fewest
  replicas whose per-replica rate stays within the load-tested capacity for
  the highest rate between now and one model-load time (plus a cycle) ahead,
  so new pods are ready before the load arrives; it removes pods as soon as
  they are not needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sluice.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus, parse_spec
from sluice.policy import control
from sluice.policy import signals as sig
from sluice.policy.readiness import DeploymentState, PodState

# Simulated time 0 is this epoch second, so status timestamps are real RFC 3339.
EPOCH = 1_800_000_000.0


@dataclass(frozen=True)
class PodInfo:
    created: float
    ready: bool
    ready_at: float | None  # when it became ready (None while loading)


@dataclass(frozen=True)
class View:
    """What the operator (or an HPA) sees of one variant at a control cycle."""

    t: float
    variant: str
    replicas: int  # the Deployment's spec.replicas
    ready: int
    pods: tuple[PodInfo, ...]
    readings: Mapping[str, sig.Reading]


@dataclass(frozen=True)
class Context:
    """What a policy may know about the scenario (the oracle knows everything)."""

    slo_ms: float
    quantile: float
    min_replicas: int
    max_replicas: int
    capacity: Mapping[str, float]  # load-tested req/s per replica within the SLO, per variant
    load_time: Mapping[str, float]  # model-load time of each variant (upper bound)
    trace: Any  # traces.Trace (oracle only)
    weights: Mapping[str, float]
    interval: float = 15.0


class Policy(Protocol):
    name: str

    def reset(self, ctx: Context) -> None: ...

    def decide(self, view: View) -> int: ...

    def explain(self) -> str: ...


# --------------------------------------------------------------------- Sluice


def sluice_spec(
    ctx: Context,
    replicas: int,
    scaling_extra: Mapping[str, Any] | None = None,
    spec_extra: Mapping[str, Any] | None = None,
) -> InferenceServiceSpec:
    """The InferenceService the simulator runs: the SLO as the scaling target."""
    metric = "p99LatencyMs" if ctx.quantile >= 0.99 else "p95LatencyMs"
    data: dict[str, Any] = {
        "model": {"name": "model", "repository": "s3://bench/model", "version": 1},
        "triton": {"image": "triton:bench"},
        "replicas": replicas,
        "scaling": {
            "mode": "Auto",
            "minReplicas": ctx.min_replicas,
            "maxReplicas": ctx.max_replicas,
            "target": {"metric": metric, "value": ctx.slo_ms},
            **(scaling_extra or {}),
        },
        **(spec_extra or {}),
    }
    return parse_spec(data)


@dataclass
class SluicePolicy:
    """The project's per-InferenceService decision (:func:`sluice.policy.control.decide`),
    driven as reconcile/control.py drives it: typed Deployments and pods in, the status
    out, written in its wire form and read back next cycle as through the apiserver."""

    name: str = "sluice"
    overrides: Mapping[str, Any] = field(default_factory=dict)  # spec.scaling fields
    spec_extra: Mapping[str, Any] = field(default_factory=dict)  # other spec fields
    ctx: Context | None = None
    spec: InferenceServiceSpec | None = None
    status: dict[str, Any] = field(default_factory=dict)
    typed: InferenceServiceStatus | None = None
    events: list[str] = field(default_factory=list)
    last: str = ""

    def reset(self, ctx: Context) -> None:
        self.ctx = ctx
        self.spec = None
        self.status = {}
        self.typed = None
        self.events = []
        self.last = ""

    def decide(self, view: View) -> int:
        return self.decide_all(view.t, {view.variant: view})[view.variant]

    def decide_all(self, t: float, views: Mapping[str, View]) -> dict[str, int]:
        assert self.ctx is not None
        if self.spec is None:
            main = views.get("main") or next(iter(views.values()))
            self.spec = sluice_spec(self.ctx, main.replicas, self.overrides, self.spec_extra)
        now = EPOCH + t
        deps = {
            v: DeploymentState(
                name=f"svc-{v}",
                variant=v,
                replicas=view.replicas,
                ready=view.ready,
                updated=view.replicas,
                available=view.ready,
                current=True,
                version=1,
                pods=view.replicas,
                image="triton:bench",
            )
            for v, view in views.items()
        }
        pods = tuple(
            PodState(
                name=f"svc-{v}-{i}",
                variant=v,
                created=EPOCH + p.created,
                ready=p.ready,
                ready_since=None if p.ready_at is None else EPOCH + p.ready_at,
            )
            for v, view in views.items()
            for i, p in enumerate(view.pods)
        )
        readings = {v: view.readings for v, view in views.items()}
        obs = sig.Observations(
            {
                s: {("bench", "svc", v): r[s] for v, r in readings.items() if s in r}
                for s in {s for r in readings.values() for s in r}
            }
        )
        out = control.decide(
            control.ServiceInput(
                namespace="bench",
                name="svc",
                spec=self.spec,
                status=InferenceServiceStatus.from_dict(self.status),
                generation=1,
                observations=obs,
                deployments=deps,
                pods=pods,
            ),
            now,
        )
        if out.status is not None:
            self.status = out.status.to_dict()
            self.typed = out.status
        self.events.extend(f"{t:.0f}s {e.reason}: {e.message}" for e in out.events)
        st = self.typed if self.typed is not None else InferenceServiceStatus()
        scaled = st.scaled_replicas()
        reasons = [e.reason for e in st.scaling]
        self.last = "; ".join(str(r) for r in reasons)
        return {v: scaled.get(v, view.replicas) for v, view in views.items()}

    def explain(self) -> str:
        return self.last


# ------------------------------------------------------------------------ HPA


@dataclass
class _HPAState:
    recs: list[tuple[float, int]] = field(default_factory=list)
    ups: list[tuple[float, int]] = field(default_factory=list)
    downs: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class HPA:
    """Kubernetes HPA on one metric; see the module docstring for the constants."""

    name: str = "hpa-p99"
    metric: str = sig.P99_LATENCY
    target: float | None = None  # Value target (ms); None: the SLO
    average_value: bool = False  # External AverageValue target (KEDA) instead of Value
    tolerance: float = 0.1
    up_window: float = 0.0
    down_window: float = 300.0
    up_pods: int = 4
    up_percent: float = 100.0
    policy_period: float = 15.0
    down_percent: float = 100.0
    null_is_zero: bool = False  # KEDA's ignoreNullValues
    needs: tuple[str, ...] = (sig.REQUEST_RATE, sig.P99_LATENCY)  # the queries it sends
    state: dict[str, _HPAState] = field(default_factory=dict)
    ctx: Context | None = None
    last: str = ""

    def reset(self, ctx: Context) -> None:
        self.ctx = ctx
        self.state = {}
        if self.target is None:
            self.target = ctx.slo_ms

    def _value(self, view: View) -> float | None:
        r = view.readings.get(self.metric)
        if r is not None and r.ok:
            return r.num()
        return 0.0 if self.null_is_zero else None

    def decide(self, view: View) -> int:
        ctx = self.ctx
        assert ctx is not None and self.target is not None
        st = self.state.setdefault(view.variant, _HPAState())
        cur = view.replicas
        value = self._value(view)
        if value is None:
            self.last = f"{self.metric} unavailable: keep {cur}"
            return cur  # ScalingActive False: the HPA does not scale
        if self.average_value:
            # GetExternalPerPodMetricReplicas: ratio over spec replicas.
            ratio = value / (self.target * cur) if cur else math.inf
            rec = cur if abs(1 - ratio) <= self.tolerance else math.ceil(value / self.target)
        else:
            # GetObjectMetricReplicas -> getUsageRatioReplicaCount: ready pods only.
            ratio = value / self.target
            if abs(1 - ratio) <= self.tolerance:
                rec = cur
            elif view.ready == 0:
                self.last = "no ready pods: keep"
                return cur
            else:
                rec = math.ceil(ratio * view.ready)
        rec = min(ctx.max_replicas, max(ctx.min_replicas, rec))
        t = view.t
        st.recs.append((t, rec))
        horizon = max(self.up_window, self.down_window)
        st.recs = [(ts, r) for ts, r in st.recs if ts > t - horizon - 1e-9]
        up_rec = min([r for ts, r in st.recs if ts > t - self.up_window - 1e-9] or [rec])
        down_rec = max([r for ts, r in st.recs if ts > t - self.down_window - 1e-9] or [rec])
        up_rec, down_rec = min(up_rec, rec), max(down_rec, rec)
        stab = cur
        stab = max(stab, up_rec)
        stab = min(stab, down_rec)
        desired = stab
        if desired > cur:
            added = sum(n for ts, n in st.ups if ts > t - self.policy_period)
            start = cur - added
            limit = max(start + self.up_pods, math.ceil(start * (1 + self.up_percent / 100)))
            desired = min(desired, max(limit, cur), ctx.max_replicas)
        elif desired < cur:
            removed = sum(n for ts, n in st.downs if ts > t - self.policy_period)
            start = cur + removed
            limit = math.ceil(start * (1 - self.down_percent / 100))
            desired = max(desired, min(limit, cur), ctx.min_replicas)
        if desired > cur:
            st.ups.append((t, desired - cur))
        elif desired < cur:
            st.downs.append((t, cur - desired))
        st.ups = [(ts, n) for ts, n in st.ups if ts > t - self.policy_period]
        st.downs = [(ts, n) for ts, n in st.downs if ts > t - self.policy_period]
        self.last = f"{self.metric}={value:.4g} target {self.target:g}: rec {rec} -> {desired}"
        return desired

    def explain(self) -> str:
        return self.last


def keda(threshold: float) -> HPA:
    """KEDA's Prometheus scaler on the request rate (AverageValue ``threshold``)."""
    return HPA(
        name="keda-rate",
        metric=sig.REQUEST_RATE,
        target=threshold,
        average_value=True,
        null_is_zero=True,
    )


# --------------------------------------------------------------------- oracle


@dataclass
class Oracle:
    name: str = "oracle"
    needs: tuple[str, ...] = ()
    ctx: Context | None = None
    last: str = ""
    headroom: float = 1.0

    def reset(self, ctx: Context) -> None:
        self.ctx = ctx

    def load(self, ctx: Context, view: View) -> tuple[float, str]:
        """The rate sized for (of all variants) and what it is."""
        ahead = ctx.load_time.get(view.variant, 0.0) + ctx.interval
        return ctx.trace.peak(view.t, view.t + ahead), f"peak over the next {ahead:g}s"

    def decide(self, view: View) -> int:
        ctx = self.ctx
        assert ctx is not None
        rate, what = self.load(ctx, view)
        rate *= ctx.weights.get(view.variant, 1.0)
        cap = ctx.capacity[view.variant]
        need = math.ceil(self.headroom * rate / cap - 1e-9)
        need = max(ctx.min_replicas, min(ctx.max_replicas, need))
        self.last = f"{what} {rate:.4g} req/s x {self.headroom:g} / {cap:.4g} -> {need}"
        return need

    def explain(self) -> str:
        return self.last


# ------------------------------------------------------------ reactive bound


@dataclass
class ReactiveBound(Oracle):
    """What a policy that cannot see the future attains at best.

    Every cycle it knows the TRUE current arrival rate (no metric delay, no
    window, no look-ahead) and runs ``ceil(headroom x rate / capacity)``
    replicas (the load-tested capacity); it removes pods as soon as they are
    not needed. New pods still take the model-load time. With ``headroom`` 1
    it is the cheapest perfectly informed reactive policy; the sweep over
    ``headroom`` traces the attainment-versus-cost frontier of reacting. It
    does nothing about a backlog (it sees rates, not queues), so a policy that
    sizes for draining can do better after an overload than its headroom-1 row."""

    name: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            self.name = "reactive-bound" if self.headroom == 1.0 else f"reactive-x{self.headroom:g}"

    def load(self, ctx: Context, view: View) -> tuple[float, str]:
        return ctx.trace.rate_at(view.t), "true rate"
