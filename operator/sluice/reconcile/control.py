"""The control cycle: read Prometheus once for every InferenceService, decide, record.

Imperative shell around :func:`sluice.policy.control.decide`:

1. One PromQL query per signal for all InferenceServices together, grouped by
   namespace, inferenceservice and variant (plus each service's custom query
   templates, queried for that service only).
2. One list of the managed Deployments and one of their pods.
3. Per InferenceService, under the reconciler's lock and inside a
   read-modify-write of status: the raw objects become a typed
   :class:`~sluice.policy.control.ServiceInput` (the status parsed once into
   :class:`~sluice.api.v1alpha1.InferenceServiceStatus`), the pure decision
   runs, and its status is serialised once. Nothing is written when it says
   nothing that matters changed.
4. Events for every change of replicas or weights and every condition
   transition, after the status write succeeded.

The children follow from status: the reconciler renders replicas and weights
from status.scaling and status.rollout, and the loop reconciles every object
right after this cycle.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import observability
from ..api.schema import SpecError, parse_time
from ..api.v1alpha1 import (
    API_VERSION,
    KIND,
    InferenceServiceSpec,
    InferenceServiceStatus,
    check_name,
    parse_spec,
    seconds,
)
from ..policy import analysis
from ..policy import signals as sig
from ..policy.control import ControlConfig, ServiceInput, decide, uses_metrics
from ..policy.events import Event
from ..policy.readiness import DeploymentState, PodState
from ..render import LABEL_ISVC, LABEL_VARIANT, MANAGED_BY
from . import deployments
from .isvc import Reconciler
from .kube import Kube

log = logging.getLogger("sluice.control")

METRICS_CONDITION = "MetricsAvailable"
CANARY_CONDITION = "Canary"
MANAGED = f"app.kubernetes.io/managed-by={MANAGED_BY}"


@dataclass
class Fleet:
    """The managed Deployments and pods, grouped by (namespace, inferenceservice)."""

    deployments: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    pods: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """The typed facts of one pod."""
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
    is_ready = ready is not None and ready.get("status") == "True"
    return PodState(
        name=str(md.get("name") or ""),
        variant=_labels(pod).get(LABEL_VARIANT, ""),
        created=parse_time(md.get("creationTimestamp")),
        ready=is_ready,
        ready_since=parse_time(ready.get("lastTransitionTime")) if is_ready and ready else None,
        deleting=bool(md.get("deletionTimestamp")),
    )


def service_input(
    key: tuple[str, str],
    live: Mapping[str, Any],
    spec: InferenceServiceSpec,
    obs: sig.Observations | None,
    deps: Mapping[str, DeploymentState],
    pods: Sequence[PodState],
    config: ControlConfig,
) -> ServiceInput:
    """One InferenceService as the pure decision's input: its status parsed once."""
    return ServiceInput(
        namespace=key[0],
        name=key[1],
        spec=spec,
        status=InferenceServiceStatus.from_dict(live.get("status")),
        generation=int((live.get("metadata") or {}).get("generation") or 0),
        observations=obs,
        deployments=deps,
        pods=tuple(pods),
        config=config,
        annotations=dict((live.get("metadata") or {}).get("annotations") or {}),
    )


class Controller:
    def __init__(
        self,
        kube: Kube,
        reconciler: Reconciler,
        namespaces: Sequence[str],
        config: Mapping[str, Any],
        clock: Callable[[], float] = time.time,
    ) -> None:
        from .prometheus import Prometheus

        self.kube = kube
        self.reconciler = reconciler
        self.namespaces = list(namespaces)
        self.clock = clock
        url = config.get("prometheus_url")
        self.prom: Prometheus | None = (
            Prometheus(
                url,
                token_file=config.get("prometheus_token_file"),
                ca_file=config.get("prometheus_ca_file"),
                timeout=float(config.get("query_timeout") or 10.0),
            )
            if url
            else None
        )
        self.window = str(config.get("rate_window") or os.environ.get("SLUICE_RATE_WINDOW") or "1m")
        # Observed values move every cycle; they are rewritten at most this often
        # unless a decision changes with them.
        self.refresh = float(
            config.get("signals_refresh") or os.environ.get("SLUICE_SIGNALS_REFRESH") or 60.0
        )
        self.config = ControlConfig(
            signals_refresh=self.refresh,
            prometheus_configured=self.prom is not None,
            rate_window_seconds=seconds(self.window),
        )

    def close(self) -> None:
        if self.prom is not None:
            self.prom.close()

    # ----------------------------------------------------------------- reading

    def observe(
        self, items: Sequence[tuple[dict[str, Any], InferenceServiceSpec]]
    ) -> dict[tuple[str, str], sig.Observations]:
        """Observations per (namespace, name) for the services that use metrics."""
        users = [(o, s) for o, s in items if uses_metrics(s)]
        if not users:
            return {}
        if self.prom is None:
            obs = sig.not_configured()
            return {_key(o): obs for o, _ in users}

        queries: dict[str, str] = {
            f"fleet/{s}": q for s, q in sig.fleet_queries(self.namespaces, self.window).items()
        }
        for o, s in users:
            ns, name = _key(o)
            for signal, q in sig.queries_for(
                s.monitoring.queries,
                sig.service_selector(ns, name),
                self.window,
                analysis.custom_templates(s),
            ).items():
                queries[f"{ns}/{name}/{signal}"] = q
        answers = self.prom.query_all(queries)
        for key, answer in answers.items():
            if answer.error is not None:
                signal = key.rsplit("/", 1)[-1]
                observability.query_error(observability.snake(signal))
        base = sig.Observations({s: sig.group(answers[f"fleet/{s}"]) for s in sig.SIGNALS})
        out: dict[tuple[str, str], sig.Observations] = {}
        for o, s in users:
            ns, name = _key(o)
            custom = {
                signal: sig.group(answers[f"{ns}/{name}/{signal}"])
                for signal in (*s.monitoring.queries, *analysis.custom_templates(s))
                if f"{ns}/{name}/{signal}" in answers
            }
            out[(ns, name)] = sig.merge(base, custom) if custom else base
        return out

    def fleet(self) -> Fleet:
        f = Fleet()
        scopes: list[str | None] = list(self.namespaces) or [None]
        for ns in scopes:
            for d in self.kube.list("apps/v1", "Deployment", ns, MANAGED):
                labels = _labels(d)
                key = (d["metadata"]["namespace"], labels.get(LABEL_ISVC, ""))
                f.deployments.setdefault(key, {})[labels.get(LABEL_VARIANT, "")] = d
            for p in self.kube.list("v1", "Pod", ns, MANAGED):
                key = (p["metadata"]["namespace"], _labels(p).get(LABEL_ISVC, ""))
                f.pods.setdefault(key, []).append(p)
        return f

    # ------------------------------------------------------------------- cycle

    def run(self, objs: Sequence[dict[str, Any]]) -> None:
        items: list[tuple[dict[str, Any], InferenceServiceSpec]] = []
        for o in objs:
            if o["metadata"].get("deletionTimestamp"):
                continue
            try:
                check_name(o["metadata"]["name"])
                items.append((o, parse_spec(o.get("spec"))))
            except SpecError:
                continue  # the reconciler reports it
        if not items:
            return
        observations = self.observe(items)
        fleet = self.fleet()
        # A service a reconcile worker holds is decided after the others: waiting
        # for it in turn made the cycle trail the workers' queue in a change storm.
        busy: list[tuple[str, str]] = []
        for o, _spec in items:
            ns, name = _key(o)
            try:
                if not self.control_one(ns, name, observations.get((ns, name)), fleet, wait=False):
                    busy.append((ns, name))
            except Exception:
                log.exception("control of %s/%s failed", ns, name)
        for ns, name in busy:
            try:
                self.control_one(ns, name, observations.get((ns, name)), fleet)
            except Exception:
                log.exception("control of %s/%s failed", ns, name)

    def control_one(
        self,
        ns: str,
        name: str,
        obs: sig.Observations | None,
        fleet: Fleet,
        wait: bool = True,
    ) -> bool:
        """Decide for one service; False (nothing done) when ``wait`` is False and
        its reconcile is running."""
        deps = {v: deployments.observe(d) for v, d in fleet.deployments.get((ns, name), {}).items()}
        pods = [pod_state(p) for p in fleet.pods.get((ns, name), [])]
        events: list[Event] = []

        def mutate(live: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
            events.clear()
            try:
                spec = parse_spec(live.get("spec"))
            except SpecError:
                return None
            inp = service_input(
                (ns, name), {**live, "status": status}, spec, obs, deps, pods, self.config
            )
            out = decide(inp, self.clock())
            if out.status is None:
                return None
            events.extend(out.events)
            return out.status.to_dict()

        lock = self.reconciler.lock(ns, name)
        if not lock.acquire(blocking=wait):
            return False
        try:
            obj = self.kube.update_status(API_VERSION, KIND, ns, name, mutate)
        finally:
            lock.release()
        if obj:
            for e in events:
                log.info("%s/%s %s: %s", ns, name, e.reason, e.message)
                self.kube.event(obj, e.type, e.reason, e.message)
                observability.decision(observability.snake(e.reason))
        return True


def _key(o: Mapping[str, Any]) -> tuple[str, str]:
    md = o["metadata"]
    return str(md.get("namespace") or "default"), str(md["name"])
