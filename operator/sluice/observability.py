"""The operator's own metrics, served on ``--metrics-port`` at ``/metrics``.

Label values come from small fixed sets, never from object names, so the
series count stays bounded however many InferenceServices there are. The
call sites:

- :func:`reconciling` wraps every reconcile of one InferenceService
  (reconcile/isvc.py): ``sluice_reconciles_total{result}`` and
  ``sluice_reconcile_duration_seconds``.
- :func:`decision` counts what the control loop decided
  (``sluice_decisions_total{kind}``), e.g. ``scale_up``, ``scale_down``,
  ``canary_step``, ``promote``, ``rollback``.
- :func:`query_error` counts failed Prometheus queries per signal
  (``sluice_prometheus_query_errors_total{signal}``), e.g. ``latency``,
  ``rate``, ``errors``.
- :func:`set_leader` says whether this process holds the leader Lease
  (``sluice_leader``): 1 on the replica that acts, 0 on a standby.
- :func:`api_request` counts every request to the Kubernetes API by verb and
  resource (``sluice_api_requests_total{verb,resource}``; reconcile/kube.py).
- :func:`control_cycle` records the control cycle's real start-to-start
  interval and its duration (``sluice_control_cycle_interval_seconds``,
  ``sluice_control_cycle_duration_seconds``; reconcile/loop.py).
- :func:`set_cached` says how many objects of each kind the watch cache holds
  (``sluice_cache_objects{kind}``) and :data:`QUEUE_DEPTH` how many
  InferenceServices wait for a reconcile (``sluice_workqueue_depth``).

The dashboard in helm/sluice/dashboards/ queries exactly these names; a test
keeps the two in step.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info, start_http_server

from . import __version__

_LABEL_VALUE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

RECONCILES = Counter(
    "sluice_reconciles",
    "Reconciles of one InferenceService, by result (ok or error).",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "sluice_reconcile_duration_seconds",
    "Wall time of one reconcile of one InferenceService.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
DECISIONS = Counter(
    "sluice_decisions",
    "Decisions of the control loop, by kind (scale_up, scale_down, canary_step, promote, "
    "rollback, ...).",
    ["kind"],
)
QUERY_ERRORS = Counter(
    "sluice_prometheus_query_errors",
    "Prometheus queries that failed or gave no usable value, by signal.",
    ["signal"],
)
LEADER = Gauge(
    "sluice_leader",
    "1 while this process holds the leader Lease (or runs standalone), 0 on a standby.",
)
API_REQUESTS = Counter(
    "sluice_api_requests",
    "Requests to the Kubernetes API, by verb (get, list, watch, create, update, patch, "
    "delete) and resource (deployments, inferenceservices_status, ...).",
    ["verb", "resource"],
)
CYCLE_INTERVAL = Histogram(
    "sluice_control_cycle_interval_seconds",
    "Time from the start of one control cycle to the start of the next.",
    buckets=(1, 2, 5, 10, 12, 15, 16.5, 18, 20, 25, 30, 45, 60, 120, 300),
)
CYCLE_SECONDS = Histogram(
    "sluice_control_cycle_duration_seconds",
    "Wall time of one control cycle (metrics, decisions, status writes, resync).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
)
CACHED = Gauge(
    "sluice_cache_objects",
    "Objects held by the watch cache, by kind.",
    ["kind"],
)
QUEUE_DEPTH = Gauge(
    "sluice_workqueue_depth",
    "InferenceServices waiting for a reconcile.",
)
BUILD = Info("sluice_build", "Version of the running operator.")
BUILD.info({"version": __version__})

# Every metric family this module exports, as Prometheus names it on /metrics.
METRIC_NAMES = (
    "sluice_reconciles_total",
    "sluice_reconcile_duration_seconds",
    "sluice_decisions_total",
    "sluice_prometheus_query_errors_total",
    "sluice_leader",
    "sluice_build_info",
    "sluice_api_requests_total",
    "sluice_control_cycle_interval_seconds",
    "sluice_control_cycle_duration_seconds",
    "sluice_cache_objects",
    "sluice_workqueue_depth",
)


def _checked(value: str, what: str) -> str:
    if not _LABEL_VALUE.match(value):
        raise ValueError(f"{what} must be a short snake_case word, got {value!r}")
    return value


@contextmanager
def reconciling() -> Iterator[None]:
    """Time one reconcile and count it: ``error`` when it raises, else ``ok``."""
    start = time.perf_counter()
    result = "error"
    try:
        yield
        result = "ok"
    finally:
        RECONCILE_SECONDS.observe(time.perf_counter() - start)
        RECONCILES.labels(result=result).inc()


def snake(name: str) -> str:
    """``ScaledUp`` -> ``scaled_up``, ``p99LatencyMs`` -> ``p99_latency_ms``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def decision(kind: str) -> None:
    """Count one control decision, e.g. ``decision("scale_up")``."""
    DECISIONS.labels(kind=_checked(kind, "decision kind")).inc()


def query_error(signal: str) -> None:
    """Count one failed Prometheus query, e.g. ``query_error("latency")``."""
    QUERY_ERRORS.labels(signal=_checked(signal, "signal")).inc()


def api_request(verb: str, resource: str) -> None:
    """Count one Kubernetes API request, e.g. ``api_request("list", "deployments")``."""
    API_REQUESTS.labels(verb=verb, resource=resource).inc()


def control_cycle(duration: float, interval: float | None) -> None:
    """One control cycle took ``duration`` s and started ``interval`` s after the last."""
    CYCLE_SECONDS.observe(duration)
    if interval is not None:
        CYCLE_INTERVAL.observe(interval)


def set_cached(kind: str, n: int) -> None:
    CACHED.labels(kind=kind).set(n)


def set_leader(leading: bool) -> None:
    LEADER.set(1 if leading else 0)


class MetricsServer:
    """The /metrics endpoint in a daemon thread; ``close()`` frees the port."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        self._server: Any
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=addr, registry=REGISTRY)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(port: int) -> MetricsServer | None:
    """Start the metrics endpoint on ``port``; None when ``port`` is 0 (off)."""
    return MetricsServer(port) if port else None
