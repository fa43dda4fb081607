"""Reconcile one InferenceService: read, decide (pure), write only what differs."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from typing import Any

from .. import observability
from ..api.schema import SpecError
from ..api.v1alpha1 import API_VERSION, KIND, InferenceServiceStatus, check_name, parse_spec
from ..policy import readiness
from ..render import LABEL_ISVC, LABEL_VARIANT, selector
from . import deployments, httproute, podmonitor, services
from .apply import (
    KindPlan,
    Refused,
    SyncResult,
    execute,
    fingerprint,
    nothing_exists,
    plan_kind,
    refusals,
)
from .desired import desired, meta_of
from .kube import Kube

log = logging.getLogger("sluice.reconcile")

# Retries of a refused set of writes: 5 s, 10 s, 20 s ... at most 5 min apart,
# per InferenceService; a change of what is to be written retries at once.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0


class _Refusal:
    """The last refused (or unrenderable) state of one InferenceService."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        self.failures = 0
        self.retry_at = 0.0
        self.message = ""

    def failed(self, message: str, clock: float) -> bool:
        """Record one more failure; True when its message is new."""
        new = message != self.message
        self.failures = 1 if new else self.failures + 1
        self.message = message
        self.retry_at = clock + min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        return new


class Reconciler:
    """Level-triggered: every call converges the children and status of one object."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()
        self._refused: dict[tuple[str, str], _Refusal] = {}
        self.clock = time.monotonic

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object (keeps memory bounded under churn)."""
        with self._locks_guard:
            lock = self._locks.get((namespace, name))
            if lock is not None and not lock.locked():
                del self._locks[(namespace, name)]
            self._refused.pop((namespace, name), None)

    def retry_in(self, namespace: str, name: str) -> float | None:
        """Seconds until refused writes of this object are due again (None: none)."""
        entry = self._refused.get((namespace, name))
        if entry is None or entry.failures == 0:
            return None
        return max(0.0, entry.retry_at - self.clock())

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.get(API_VERSION, KIND, namespace, name)

    def reconcile(self, namespace: str, name: str) -> None:
        with self.lock(namespace, name), observability.reconciling():
            obj = self.get(namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return  # owner references let the garbage collector remove children
            self._reconcile(obj)

    # ------------------------------------------------------------------------

    def _reconcile(self, obj: dict[str, Any]) -> None:
        meta = meta_of(obj)
        try:
            check_name(meta.name)
            spec = parse_spec(obj.get("spec"))
        except SpecError as e:
            self._invalid(obj, str(e))
            return

        recorded = InferenceServiceStatus.from_dict(obj.get("status"))
        key = (meta.namespace, meta.name)
        ready_now = deployments.ready_counts(self.kube, meta)
        pm_wanted = podmonitor.wanted(spec.monitoring.pod_monitor, podmonitor.available(self.kube))
        try:
            variants, objs = desired(
                obj, spec, ready=ready_now, with_podmonitor=pm_wanted, status=recorded
            )
        except Exception as e:  # a bug of ours on this input: say so in status, not only here
            fp = f"render:{meta.generation}:{e!r}"
            if self._skip(key, fp):
                return
            if self._refused[key].failed(repr(e), self.clock()):
                log.exception("%s/%s: rendering failed", meta.namespace, meta.name)
            self._failed(obj, recorded, "RenderFailed", f"rendering the children failed: {e!r}")
            return
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in objs:
            by_kind[o["kind"]].append(o)

        route: tuple[bool, str, str] | None = None
        plans = [
            plan_kind(
                self.kube, meta, deployments.API_VERSION, "Deployment", by_kind["Deployment"]
            ),
            plan_kind(self.kube, meta, services.API_VERSION, "Service", by_kind["Service"]),
        ]
        if httproute.available(self.kube):
            wanted_routes = by_kind["HTTPRoute"] if spec.router is not None else []
            plans.append(
                plan_kind(self.kube, meta, httproute.API_VERSION, "HTTPRoute", wanted_routes)
            )
        if spec.router is not None:
            if httproute.available(self.kube):
                weights = ", ".join(f"{v.name}={v.weight}%" for v in variants)
                route = (True, "RouteApplied", f"HTTPRoute {meta.name} splits traffic: {weights}")
            else:
                route = (
                    False,
                    "GatewayAPIMissing",
                    "spec.router is set but the Gateway API (HTTPRoute) is not installed in "
                    "the cluster; install its CRDs and a Gateway controller",
                )
        if podmonitor.available(self.kube):
            wanted_pm = by_kind["PodMonitor"] if pm_wanted else []
            plans.append(
                plan_kind(self.kube, meta, podmonitor.API_VERSION, "PodMonitor", wanted_pm)
            )

        results = self._write_children(obj, recorded, plans)
        if results is None:
            return  # refused: reported in status, the running fleet untouched
        dep = results[0]

        applied = [a for r in results for a in r.applied]
        deleted = [d for r in results for d in r.deleted]
        if applied or deleted:
            parts = []
            if applied:
                parts.append("applied " + ", ".join(applied))
            if deleted:
                parts.append("deleted " + ", ".join(deleted))
            self.kube.event(obj, "Normal", "Reconciled", "; ".join(parts))

        states = deployments.observe_all(dep)
        in_flight = recorded.rollout is not None and recorded.rollout.in_flight
        problems: dict[str, str] = {}
        if any(v.name not in states or not states[v.name].rolled_out(v.replicas) for v in variants):
            problems = readiness.pod_problems(
                self.kube.list("v1", "Pod", meta.namespace, f"{LABEL_ISVC}={meta.name}"),
                LABEL_VARIANT,
            )

        def mutate(live: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any] | None:
            current = InferenceServiceStatus.from_dict(raw)
            return _write(
                current,
                readiness.served_status(
                    current,
                    model=spec.model.name,
                    variants=variants,
                    states=states,
                    generation=int(live["metadata"].get("generation") or 0),
                    url=services.url(meta),
                    selector=",".join(f"{k}={v}" for k, v in selector(meta, "main").items()),
                    route=route,
                    rollout_in_flight=in_flight,
                    now=time.time(),
                    problems=problems,
                ),
            )

        before = recorded.condition("Ready")
        after_obj = self.kube.update_status(API_VERSION, KIND, meta.namespace, meta.name, mutate)
        after = InferenceServiceStatus.from_dict((after_obj or {}).get("status")).condition("Ready")
        if after and (before is None or before.status != after.status):
            kind = "Normal" if after.is_true else "Warning"
            if after.is_true or before is not None:
                self.kube.event(obj, kind, f"Ready{after.status}", after.message)

    # ---------------------------------------------------- refused children

    def _skip(self, key: tuple[str, str], fp: str) -> bool:
        """True while a failure with this fingerprint waits for its retry time."""
        entry = self._refused.get(key)
        if entry is None or entry.fingerprint != fp:
            self._refused[key] = _Refusal(fp)
            return False
        return self.clock() < entry.retry_at

    def _write_children(
        self, obj: dict[str, Any], recorded: InferenceServiceStatus, plans: list[KindPlan]
    ) -> list[SyncResult] | None:
        """Dry-run, then write, every change of ``plans``; None when refused."""
        meta = meta_of(obj)
        key = (meta.namespace, meta.name)
        if not any(p.changes for p in plans):
            self._refused.pop(key, None)
            return [p.result for p in plans]
        # The dry run makes a set of writes all-or-nothing, which protects
        # children that exist. A new service's first create has none: its
        # writes go straight to the apiserver (a refused create stores
        # nothing; apply.py says why nothing is lost). After a refusal, seen
        # here or recorded in status, every attempt dry-runs first again.
        ready = recorded.condition("Ready")
        first_create = (
            key not in self._refused
            and (ready is None or ready.reason != "ApplyFailed")
            and nothing_exists(plans)
        )
        fp = f"{meta.generation}:{fingerprint(plans)}"
        if self._skip(key, fp):
            log.debug("%s/%s: refused writes, retry later", meta.namespace, meta.name)
            return None
        refused = [] if first_create else refusals(self.kube, plans)
        if not refused:
            try:
                results = execute(self.kube, meta, plans)
            except Refused as e:
                refused = e.messages
            else:
                self._refused.pop(key, None)
                return results
        message = "; ".join(refused)
        if self._refused[key].failed(message, self.clock()):
            log.warning("%s/%s: the apiserver refused %s", meta.namespace, meta.name, message)
        self._failed(
            obj,
            recorded,
            "ApplyFailed",
            f"the apiserver refused {message}",
        )
        return None

    def _failed(
        self, obj: dict[str, Any], recorded: InferenceServiceStatus, reason: str, message: str
    ) -> None:
        """Ready=False naming what failed; a Warning Event once per distinct message."""
        meta = meta_of(obj)

        def mutate(live: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any] | None:
            gen = int(live["metadata"].get("generation") or 0)
            current = InferenceServiceStatus.from_dict(raw)
            return _write(
                current, readiness.apply_failed_status(current, reason, message, gen, time.time())
            )

        self.kube.update_status(API_VERSION, KIND, meta.namespace, meta.name, mutate)
        before = recorded.condition("Ready")
        if before is None or before.reason != reason or not before.message.endswith(message):
            self.kube.event(obj, "Warning", reason, message)

    def _invalid(self, obj: dict[str, Any], error: str) -> None:
        meta = meta_of(obj)
        log.warning("%s/%s: %s", meta.namespace, meta.name, error)
        previous = InferenceServiceStatus.from_dict(obj.get("status")).spec_error

        def mutate(live: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any] | None:
            gen = int(live["metadata"].get("generation") or 0)
            current = InferenceServiceStatus.from_dict(raw)
            return _write(current, readiness.invalid_spec_status(current, error, gen, time.time()))

        self.kube.update_status(API_VERSION, KIND, meta.namespace, meta.name, mutate)
        if previous != error:
            self.kube.event(obj, "Warning", "InvalidSpec", error)


def _write(old: InferenceServiceStatus, new: InferenceServiceStatus) -> dict[str, Any] | None:
    """The status to write, or None when ``new`` differs from ``old`` only in
    when conditions last changed."""
    return None if new.same_as(old) else new.to_dict()
