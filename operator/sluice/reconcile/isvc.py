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
from .apply import SyncResult
from .desired import desired, meta_of
from .kube import Kube

log = logging.getLogger("sluice.reconcile")


class Reconciler:
    """Level-triggered: every call converges the children and status of one object."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._locks_guard = threading.Lock()

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[(namespace, name)]

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted object (keeps memory bounded under churn)."""
        with self._locks_guard:
            lock = self._locks.get((namespace, name))
            if lock is not None and not lock.locked():
                del self._locks[(namespace, name)]

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
        ready_now = deployments.ready_counts(self.kube, meta)
        pm_wanted = podmonitor.wanted(spec.monitoring.pod_monitor, podmonitor.available(self.kube))
        variants, objs = desired(
            obj, spec, ready=ready_now, with_podmonitor=pm_wanted, status=recorded
        )
        by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for o in objs:
            by_kind[o["kind"]].append(o)

        results: list[SyncResult] = []
        dep = deployments.sync(self.kube, meta, by_kind["Deployment"])
        results.append(dep)
        results.append(services.sync(self.kube, meta, by_kind["Service"]))

        route: tuple[bool, str, str] | None = None
        if spec.router is not None:
            if httproute.available(self.kube):
                results.append(httproute.sync(self.kube, meta, by_kind["HTTPRoute"]))
                weights = ", ".join(f"{v.name}={v.weight}%" for v in variants)
                route = (True, "RouteApplied", f"HTTPRoute {meta.name} splits traffic: {weights}")
            else:
                route = (
                    False,
                    "GatewayAPIMissing",
                    "spec.router is set but the Gateway API (HTTPRoute) is not installed in "
                    "the cluster; install its CRDs and a Gateway controller",
                )
        else:
            results.append(httproute.sync(self.kube, meta, []))
        if pm_wanted and podmonitor.available(self.kube):
            results.append(podmonitor.sync(self.kube, meta, by_kind["PodMonitor"]))
        else:
            results.append(podmonitor.sync(self.kube, meta, []))

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
