"""The queueing model the demand-based autoscaler sizes with. Pure arithmetic.

One replica is one Triton model instance behind its scheduler queue; the
Service spreads requests over the ready pods at random, which thins a Poisson
stream into independent Poisson streams: each pod is an **M/G/1** queue
(Poisson arrivals, general service time, one server, FIFO).

* Work per request ``s`` = compute time per execution / batch size (both from
  Triton's counters); utilisation ``rho = lambda * s``.
* Mean wait (Pollaczek-Khinchine): ``Wq = rho * s * (1 + cs^2) / (2 (1 - rho))``.
  The service time's variability ``cs^2`` is not exported, so the model starts
  from the M/M/1 value (``cs^2 = 1``, the conservative prior for cs <= 1) and
  the autoscaler multiplies ``Wq`` by an online **correction** factor: measured
  mean queue time / predicted (NVIDIA Dynamo's planner corrects its model the
  same way, actual over expected).
* Tail: the waiting time's distribution is approximated by its exponential
  (Cramer-Lundberg / Kingman heavy-traffic) form, ``P(W > x) = rho *
  exp(-rho x / Wq)``, exact for M/M/1; the latency quantile ``p`` is then
  ``(Wq / rho) * ln(rho / (1 - p)) + e`` (``e`` the execution time) when
  ``rho > 1 - p``, else ``e``.

Measured: the request rate, compute time, batch size, queue time (fleet sums
of Triton's counters, additive over pods). Modelled: the latency quantile at a
per-replica load, so the tail used for sizing does not drift with the number
of pods the way the worst pod's summary quantile does.
"""

from __future__ import annotations

import math

QUANTILE = {"p99LatencyMs": 0.99, "p95LatencyMs": 0.95}


def utilisation(rate_per_replica: float, work_ms: float) -> float:
    return rate_per_replica * work_ms / 1000.0


def mean_wait_ms(rho: float, work_ms: float, correction: float) -> float:
    """M/M/1 mean queueing delay times the correction (the M/G/1 shape factor)."""
    if rho >= 1:
        return math.inf
    return correction * rho * work_ms / (1.0 - rho)


def predict_ms(
    metric: str, rate_per_replica: float, work_ms: float, exec_ms: float, correction: float
) -> float:
    """The target signal ``metric`` at ``rate_per_replica`` req/s on one replica."""
    rho = utilisation(rate_per_replica, work_ms)
    if rho >= 1:
        return math.inf
    wq = mean_wait_ms(rho, work_ms, correction)
    if metric == "queueTimeMs":
        return wq
    if metric == "avgLatencyMs":
        return wq + exec_ms
    p = QUANTILE.get(metric, 0.99)
    if rho <= 1 - p or wq <= 0:
        return exec_ms
    return (wq / rho) * math.log(rho / (1 - p)) + exec_ms


def capacity(
    metric: str, target_ms: float, work_ms: float, exec_ms: float, correction: float
) -> float:
    """The highest req/s one replica serves with ``metric`` within ``target_ms``."""
    if work_ms <= 0:
        return math.inf
    top = 1000.0 / work_ms  # rho = 1
    if predict_ms(metric, 0.0, work_ms, exec_ms, correction) > target_ms:
        return 0.0
    lo, hi = 0.0, top
    for _ in range(50):
        mid = (lo + hi) / 2
        if predict_ms(metric, mid, work_ms, exec_ms, correction) <= target_ms:
            lo = mid
        else:
            hi = mid
    return lo


def replicas_for(demand: float, cap: float, limit: int) -> int | None:
    """Fewest replicas that keep each one within ``cap`` req/s (None: more than limit)."""
    if demand <= 0:
        return 1
    if cap <= 0:
        return None
    n = max(1, math.ceil(demand / cap - 1e-9))
    return n if n <= limit else None
