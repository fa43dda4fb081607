"""A fleet of Triton servers, request by request.

One replica is one pod running one Triton model instance: a FIFO queue in
front of one execution slot. Service times are the variant's mean times a
unit-mean jitter (lognormal, gamma, a two-mode mixture, or constant). Without
dynamic batching a pod is a G/G/1 FIFO queue, solved for a whole block of
requests at once with the max-plus form of Lindley's recursion::

    D_n = max(D_{n-1}, A_n) + S_n  =  C_n + max(D_0, max_{k<=n} (A_k - C_{k-1}))

(``C`` the cumulative service time): one ``np.maximum.accumulate``. With
dynamic batching (Triton's ``dynamic_batching { max_queue_delay_microseconds }``
and ``max_batch_size``) a short Python loop forms batches the way Triton's
dynamic batcher does: when the instance is free it takes what is queued, up to
the maximum; short of a full batch it waits for more until the oldest request
has waited ``max_queue_delay``.

Requests reach a variant by its traffic weight and a pod of it uniformly at
random (kube-proxy's random endpoint choice), only pods that are ready and not
being removed. A pod starts ``load_time`` (jittered) after it is created: pull,
start, model load; it costs a GPU from creation. On removal it leaves the
endpoints at once and drains its queue before it terminates (the preStop
drain that avoids triton#6939).

Each pod keeps the counters Triton exports per model (``nv_inference_request_
success``, ``_failure``, ``_request_duration_us``, ``_queue_duration_us``,
``_compute_infer_duration_us``, ``nv_inference_count``, ``nv_inference_exec_
count``, the ``nv_inference_pending_request_count`` gauge) and the
``nv_inference_request_summary_us`` summary (quantiles over a sliding window
of 60 s in 5 age buckets, prometheus-cpp's TimeWindowQuantiles, plus ``_sum``
and ``_count``). Counters move when a request completes, as in Triton.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

QUANTILES = (0.5, 0.9, 0.95, 0.99)
WARM_FOR = 600.0  # pods a run starts with have been ready this long
SUMMARY_MAX_AGE = 60.0
SUMMARY_AGE_BUCKETS = 5

COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_summary_us_sum",
    "nv_inference_request_summary_us_count",
)
GAUGES = ("nv_inference_pending_request_count",)


@dataclass(frozen=True)
class Batching:
    """Triton's dynamic batcher: ``max_batch_size`` and ``max_queue_delay``. A batch of
    ``b`` takes ``1 + per_item * (b - 1)`` times a single request's compute time."""

    max_batch_size: int = 8
    max_queue_delay_s: float = 0.002
    per_item: float = 0.3

    def factor(self, b: np.ndarray | int) -> np.ndarray | float:
        return 1.0 + self.per_item * (np.asarray(b) - 1)


@dataclass(frozen=True)
class ServiceModel:
    """Compute time of one execution: ``mean_s`` times a unit-mean jitter."""

    mean_s: float = 0.020
    cv: float = 0.3
    dist: str = "lognormal"  # lognormal | gamma | bimodal | constant
    batching: Batching | None = None

    def jitter(self, rng: np.random.Generator, n: int) -> np.ndarray:
        cv = self.cv
        if self.dist == "constant" or cv == 0:
            return np.ones(n)
        if self.dist == "lognormal":
            s2 = math.log1p(cv * cv)
            return rng.lognormal(-s2 / 2, math.sqrt(s2), n)
        if self.dist == "gamma":
            k = 1.0 / (cv * cv)
            return rng.gamma(k, 1.0 / k, n)
        if self.dist == "bimodal":
            # 90 % fast, 10 % slow (a cache miss, a long input) with overall mean 1.
            # The slow mode is 1 + cv*3 times the fast one.
            slow = 1 + 3 * cv
            fast = 1.0 / (0.9 + 0.1 * slow)
            pick = rng.random(n) < 0.1
            base = np.where(pick, slow * fast, fast)
            return base * rng.lognormal(-0.005, 0.1, n)
        raise ValueError(f"unknown service-time distribution {self.dist!r}")

    def describe(self) -> str:
        b = self.batching
        bt = (
            f", dynamic batching (max {b.max_batch_size}, delay {b.max_queue_delay_s * 1e3:g} ms)"
            if b
            else ""
        )
        return f"{self.dist} service time, mean {self.mean_s * 1e3:g} ms, cv {self.cv:g}{bt}"


@dataclass(frozen=True)
class VariantSpec:
    """One variant of the InferenceService as the simulator runs it."""

    name: str = "main"
    service: ServiceModel = field(default_factory=ServiceModel)
    load_time_s: float = 60.0
    load_jitter: float = 0.1  # each pod's load time is uniform within +- this fraction
    weight: float = 1.0  # traffic share (normalised over the variants)
    error_rate: float = 0.0  # fraction of requests that fail (counted as Triton failures)
    # Each pod's speed factor is uniform within +- this fraction (a slow node, a noisy
    # neighbour): 0.075 makes the fastest and slowest pods differ by about 15 %.
    pod_spread: float = 0.0


class Pod:
    __slots__ = (
        "counters",
        "created",
        "error_rate",
        "free_at",
        "gone_at",
        "pending",
        "ready_at",
        "recent_comp",
        "recent_lat",
        "removed_at",
        "rng",
        "since",
        "speed",
        "uid",
        "variant",
    )

    def __init__(self, uid: int, variant: str, created: float, ready_at: float) -> None:
        self.uid = uid
        self.variant = variant
        self.created = created
        self.ready_at = ready_at
        # When the pod's Ready condition became True as the apiserver shows it.
        self.since = ready_at
        self.removed_at: float | None = None
        self.gone_at = math.inf
        self.free_at = ready_at
        # Requests routed here and not yet seen complete by a scrape:
        # (arrival, begin, completion, latency, queue, compute, first-of-batch).
        self.pending: list[tuple[np.ndarray, ...]] = []
        self.counters = dict.fromkeys(COUNTERS, 0.0)
        self.recent_comp = np.empty(0)
        self.recent_lat = np.empty(0)
        self.speed = 1.0  # service-time factor of this pod
        self.error_rate = 0.0
        self.rng: np.random.Generator | None = None  # failure draws (error_rate > 0)

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.uid}"

    def ready(self, t: float) -> bool:
        return self.ready_at <= t and self.removed_at is None

    # ---------------------------------------------------------------- serving

    def serve(
        self, arr: np.ndarray, svc: np.ndarray, batching: Batching | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Queue the requests (sorted arrivals, their compute times); returns their
        completion times and latencies."""
        if batching is None or batching.max_batch_size <= 1:
            c = np.cumsum(svc)
            base = np.maximum.accumulate(np.maximum(arr - (c - svc), self.free_at))
            comp = c + base
            begin = comp - svc
            compute = svc
            first = np.ones(arr.size)
        else:
            comp, begin, compute, first = _batched(arr, svc, self.free_at, batching)
        self.free_at = float(comp[-1]) if comp.size else self.free_at
        lat = comp - arr
        self.pending.append((arr, begin, comp, lat, begin - arr, compute, first))
        return comp, lat

    # --------------------------------------------------------------- exporting

    def collect(self, s: float) -> dict[str, float]:
        """Triton's /metrics at time ``s``: counters, the pending gauge, the summary."""
        if self.pending:
            cols = [np.concatenate(c) for c in zip(*self.pending, strict=True)]
            arr, begin, comp, lat, queue, compute, first = cols
            done = comp <= s
            if done.any():
                c = self.counters
                n = float(done.sum())
                if self.error_rate > 0 and self.rng is not None:
                    f = float(self.rng.binomial(int(n), self.error_rate))
                    c["nv_inference_request_failure"] += f
                    n -= f
                c["nv_inference_request_success"] += n
                c["nv_inference_count"] += n
                c["nv_inference_exec_count"] += float(first[done].sum())
                lat_us = lat[done] * 1e6
                c["nv_inference_request_duration_us"] += float(lat_us.sum())
                c["nv_inference_queue_duration_us"] += float(queue[done].sum() * 1e6)
                c["nv_inference_compute_infer_duration_us"] += float(compute[done].sum() * 1e6)
                c["nv_inference_request_summary_us_sum"] += float(lat_us.sum())
                c["nv_inference_request_summary_us_count"] += n
                self.recent_comp = np.concatenate([self.recent_comp, comp[done]])
                self.recent_lat = np.concatenate([self.recent_lat, lat_us])
            keep = ~done
            pending_now = float(((arr <= s) & (begin > s))[keep].sum())
            self.pending = [tuple(col[keep] for col in cols)] if keep.any() else []
        else:
            pending_now = 0.0
        out = dict(self.counters)
        out["nv_inference_pending_request_count"] = pending_now
        # prometheus-cpp TimeWindowQuantiles: the bucket read was reset at most
        # max_age ago, at least max_age * (1 - 1/buckets) ago.
        step = SUMMARY_MAX_AGE / SUMMARY_AGE_BUCKETS
        rot = self.ready_at + math.floor((s - self.ready_at) / step) * step
        start = rot - (SUMMARY_MAX_AGE - step)
        m = self.recent_comp > start
        self.recent_comp, self.recent_lat = self.recent_comp[m], self.recent_lat[m]
        n = self.recent_lat.size
        if n:
            # Inverted-CDF quantiles (the smallest observation with rank >= q n),
            # one partition for all of them.
            ranks = [max(0, math.ceil(q * n) - 1) for q in QUANTILES]
            part = np.partition(self.recent_lat, ranks)
            for q, k in zip(QUANTILES, ranks, strict=True):
                out[f"q{q}"] = float(part[k])
        else:
            for q in QUANTILES:
                out[f"q{q}"] = math.nan
        return out


def _batched(
    arr: np.ndarray, svc: np.ndarray, free_at: float, b: Batching
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = arr.size
    comp = np.empty(n)
    begin = np.empty(n)
    compute = np.empty(n)
    first = np.zeros(n)
    mb, delay = b.max_batch_size, b.max_queue_delay_s
    a = arr.tolist()
    i, free = 0, free_at
    search = np.searchsorted
    while i < n:
        start = max(free, a[i])
        j = int(search(arr, start, "right"))
        if j - i >= mb:
            t0, size = start, mb
        else:
            full = a[i + mb - 1] if i + mb - 1 < n else math.inf
            t0 = max(start, min(a[i] + delay, full))
            size = min(mb, int(search(arr, t0, "right")) - i)
        dur = float(svc[i]) * (1.0 + b.per_item * (size - 1))
        end = t0 + dur
        comp[i : i + size] = end
        begin[i : i + size] = t0
        compute[i : i + size] = dur
        first[i] = 1.0
        free = end
        i += size
    return comp, begin, compute, first


class Fleet:
    """The pods of every variant, their routing, scaling and cost."""

    def __init__(self, variants: list[VariantSpec], rng: np.random.Generator) -> None:
        self.variants = {v.name: v for v in variants}
        self.rng = rng  # load-time jitter only (independent of traffic randomness)
        self.pods: list[Pod] = []
        self.retired: list[Pod] = []
        self._uid = 0
        self.weights = {v.name: v.weight for v in variants}

    # ------------------------------------------------------------- topology

    def live(self, variant: str) -> list[Pod]:
        """Pods the Deployment counts: not being removed (ready or starting)."""
        return [p for p in self.pods if p.variant == variant and p.removed_at is None]

    def ready(self, variant: str, t: float) -> list[Pod]:
        return [p for p in self.pods if p.variant == variant and p.ready(t)]

    def next_ready(self, t: float) -> float:
        ts = [p.ready_at for p in self.pods if p.removed_at is None and p.ready_at > t]
        return min(ts) if ts else math.inf

    def start(self, variant: str, n: int, t: float, warm: bool = False) -> None:
        v = self.variants[variant]
        for _ in range(n):
            self._uid += 1
            created = t
            if warm:
                # Already serving, as if for the last 10 minutes, after one load time
                # (what a policy that measures load times from pods sees); cost is
                # counted from t.
                ready_at = t
                created = t - WARM_FOR - v.load_time_s
            else:
                j = v.load_jitter
                ready_at = t + v.load_time_s * (1 + j * (2 * self.rng.random() - 1))
            pod = Pod(self._uid, variant, created, ready_at)
            if warm:
                pod.since = t - WARM_FOR
            if v.pod_spread:
                pod.speed = 1.0 + v.pod_spread * (2 * self.rng.random() - 1)
            if v.error_rate:
                pod.error_rate = v.error_rate
                pod.rng = np.random.default_rng([self._uid, int(self.rng.integers(1 << 30))])
            self.pods.append(pod)

    def scale(self, variant: str, replicas: int, t: float) -> None:
        """Set the variant's Deployment to ``replicas`` at time ``t``."""
        live = self.live(variant)
        if replicas > len(live):
            self.start(variant, replicas - len(live), t)
            return
        k = len(live) - replicas
        if k <= 0:
            return
        # The ReplicaSet controller deletes unready pods first, then the most
        # recently ready (kubernetes controller.ActivePods ordering, simplified).
        order = sorted(live, key=lambda p: (p.ready_at <= t, -p.ready_at))
        for p in order[:k]:
            p.removed_at = t
            p.gone_at = max(t, p.free_at) if p.ready_at <= t else t

    def reap(self, t: float) -> None:
        keep = []
        for p in self.pods:
            (self.retired if p.gone_at <= t and not p.pending else keep).append(p)
        self.pods = keep

    # -------------------------------------------------------------- traffic

    def route(
        self,
        t: float,
        arr: np.ndarray,
        u: np.ndarray,
        jitter: dict[str, np.ndarray],
        lat_out: np.ndarray,
        idx0: int,
    ) -> None:
        """Send the arrivals ``arr`` (indices ``idx0..``) to the pods ready at ``t``."""
        if arr.size == 0:
            return
        names = list(self.variants)
        w = np.array([max(self.weights.get(n, 0.0), 0.0) for n in names])
        w = w / w.sum() if w.sum() > 0 else np.full(len(names), 1.0 / len(names))
        edges = np.cumsum(w)
        which = np.minimum(np.searchsorted(edges, u, "right"), len(names) - 1)
        lo = np.concatenate([[0.0], edges[:-1]])
        for k, name in enumerate(names):
            sel = np.nonzero(which == k)[0]
            if sel.size == 0:
                continue
            pods = self.ready(name, t)
            if not pods:
                lat_out[idx0 + sel] = math.inf  # no endpoint: the gateway answers 503
                continue
            frac = (u[sel] - lo[k]) / max(w[k], 1e-12)
            pick = np.minimum((frac * len(pods)).astype(np.int64), len(pods) - 1)
            v = self.variants[name]
            svc_mean = v.service.mean_s
            for j, pod in enumerate(pods):
                s = sel[pick == j]
                if s.size == 0:
                    continue
                svc = jitter[name][idx0 + s] * (svc_mean * pod.speed)
                _, lat = pod.serve(arr[s], svc, v.service.batching)
                lat_out[idx0 + s] = lat

    # ----------------------------------------------------------------- cost

    def replica_seconds(self, t_end: float) -> float:
        total = 0.0
        for p in self.pods + self.retired:
            end = min(p.gone_at, t_end)
            if p.removed_at is not None and p.ready_at > p.removed_at:
                end = min(end, p.removed_at)
            total += max(0.0, end - max(p.created, 0.0))
        return total
