"""The control cycle: read Prometheus once for every InferenceService, decide, record.

Imperative shell around the pure policies:

1. One PromQL query per signal for all InferenceServices together, grouped by
   namespace, inferenceservice and variant (plus each service's custom query
   templates, queried for that service only).
2. One list of the managed Deployments and one of their pods.
3. Per InferenceService, under the reconciler's lock and inside a
   read-modify-write of status: the canary state machine
   (:mod:`sluice.policy.canary`), then the plan, then one scaling decision per
   variant (:mod:`sluice.policy.scaling`), the MetricsAvailable and Canary
   conditions and the per-variant signals. Nothing is written when nothing
   that matters changed.
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
from ..api.schema import SpecError
from ..api.v1alpha1 import (
    API_VERSION,
    CANARY_VARIANT,
    KIND,
    MAIN_VARIANT,
    InferenceServiceSpec,
    check_name,
    parse_spec,
)
from ..policy import canary as canary_policy
from ..policy import readiness
from ..policy import scaling as scaling_policy
from ..policy import signals as sig
from ..policy.plan import Observed, Revision, canary_replicas, canary_share, plan, spec_revision
from ..policy.readiness import DeploymentState
from ..render import LABEL_ISVC, LABEL_VARIANT, MANAGED_BY
from . import deployments
from .desired import rollout_state, scaled_replicas
from .isvc import Reconciler
from .kube import Kube

log = logging.getLogger("sluice.control")

METRICS_CONDITION = "MetricsAvailable"
CANARY_CONDITION = "Canary"
MANAGED = f"app.kubernetes.io/managed-by={MANAGED_BY}"


def uses_metrics(spec: InferenceServiceSpec) -> bool:
    """Whether decisions (or the A/B comparison) of this spec read Prometheus."""
    return (
        (spec.scaling is not None and spec.scaling.mode != "Off")
        or spec.rollout.strategy == "Canary"
        or bool(spec.variants)
    )


@dataclass
class Fleet:
    """The managed Deployments and pods, grouped by (namespace, inferenceservice)."""

    deployments: dict[tuple[str, str], dict[str, dict[str, Any]]] = field(default_factory=dict)
    pods: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def triton_image(dep: Mapping[str, Any]) -> str | None:
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or []
    for c in containers:
        if c.get("name") == "triton":
            return str(c.get("image"))
    return None


def current_ready(dep: Mapping[str, Any]) -> int:
    """Ready pods running the Deployment's current template.

    A lower bound: while a rolling update still has old pods, those are assumed
    to be the ready ones. 0 while the Deployment controller has not seen the
    latest template.
    """
    md, st = dep.get("metadata") or {}, dep.get("status") or {}
    if int(st.get("observedGeneration") or 0) < int(md.get("generation") or 0):
        return 0
    total = int(st.get("replicas") or 0)
    updated = int(st.get("updatedReplicas") or 0)
    ready = int(st.get("readyReplicas") or 0)
    return max(0, min(updated, ready - max(0, total - updated)))


def starting_pods(
    pods: Sequence[Mapping[str, Any]], variant: str, warmup: float, now: float
) -> int:
    """Pods of the variant that are not ready yet and younger than ``warmup`` seconds."""
    n = 0
    for p in pods:
        md = p.get("metadata") or {}
        if _labels(p).get(LABEL_VARIANT) != variant or md.get("deletionTimestamp"):
            continue
        conds = (p.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
            continue
        created = sig.parse_time(_iso(md.get("creationTimestamp")))
        if created is not None and now - created < warmup:
            n += 1
    return n


def _iso(v: Any) -> Any:
    # The kubernetes client may hand back datetime objects.
    return v.isoformat() if hasattr(v, "isoformat") else v


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
            none = sig.error("no Prometheus is configured (sluice run --prometheus-url)")
            obs = sig.Observations(dict.fromkeys(sig.SIGNALS, none))
            return {_key(o): obs for o, _ in users}

        queries: dict[str, str] = {
            f"fleet/{s}": q for s, q in sig.fleet_queries(self.namespaces, self.window).items()
        }
        for o, s in users:
            ns, name = _key(o)
            for signal, q in sig.queries_for(
                s.monitoring.queries, sig.service_selector(ns, name), self.window
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
                for signal in s.monitoring.queries
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
        for o, _spec in items:
            ns, name = _key(o)
            try:
                self.control_one(ns, name, observations.get((ns, name)), fleet)
            except Exception:
                log.exception("control of %s/%s failed", ns, name)

    def control_one(self, ns: str, name: str, obs: sig.Observations | None, fleet: Fleet) -> None:
        deps = fleet.deployments.get((ns, name), {})
        pods = fleet.pods.get((ns, name), [])
        events: list[canary_policy.Event] = []

        def mutate(live: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
            events.clear()
            try:
                spec = parse_spec(live.get("spec"))
            except SpecError:
                return None
            gen = int(live["metadata"].get("generation") or 0)
            new, evs = self.decide((ns, name), spec, status, gen, obs, deps, pods, self.clock())
            events.extend(evs)
            return new

        with self.reconciler.lock(ns, name):
            obj = self.kube.update_status(API_VERSION, KIND, ns, name, mutate)
        if obj:
            for e in events:
                log.info("%s/%s %s: %s", ns, name, e.reason, e.message)
                self.kube.event(obj, e.type, e.reason, e.message)
                observability.decision(observability.snake(e.reason))

    # --------------------------------------------------------------- deciding

    def decide(
        self,
        key: tuple[str, str],
        spec: InferenceServiceSpec,
        status: Mapping[str, Any],
        generation: int,
        obs: sig.Observations | None,
        deps: Mapping[str, Mapping[str, Any]],
        pods: Sequence[Mapping[str, Any]],
        now: float,
    ) -> tuple[dict[str, Any] | None, list[canary_policy.Event]]:
        """The new status (None: nothing worth writing) and the Events to post."""
        stamp = sig.format_time(now)
        new: dict[str, Any] = dict(status)
        conds: list[dict[str, Any]] = [dict(c) for c in status.get("conditions") or []]
        events: list[canary_policy.Event] = []
        states: dict[str, DeploymentState] = {v: deployments.observe(d) for v, d in deps.items()}
        ready = {v: s.ready for v, s in states.items()}
        scaled = scaled_replicas(status)

        def readings(variant: str) -> dict[str, sig.Reading]:
            if obs is None:
                return {}
            return obs.variant((key[0], key[1], variant))

        # 1. The canary state machine.
        prev_rollout = canary_policy.Rollout.from_status(status.get("rollout"))
        before = plan(spec, rollout_state(status), Observed(scaled=scaled, ready=ready))
        main_before = next(v for v in before if v.name == MAIN_VARIANT)
        main_state = states.get(MAIN_VARIANT)
        main_dep = deps.get(MAIN_VARIANT)
        main_rev = None
        if main_state is not None and main_state.version is not None and main_dep is not None:
            image = triton_image(main_dep)
            if image:
                main_rev = Revision(main_state.version, image)
        canary_ready = 0
        canary_state = states.get(CANARY_VARIANT)
        canary_dep = deps.get(CANARY_VARIANT)
        if (
            prev_rollout is not None
            and prev_rollout.canary is not None
            and canary_state is not None
            and canary_dep is not None
            and canary_state.version == prev_rollout.canary.version
            and triton_image(canary_dep) == prev_rollout.canary.image
        ):
            canary_ready = current_ready(canary_dep)
        routed = None
        for v in status.get("variants") or []:
            if v.get("name") == CANARY_VARIANT:
                routed = int(v.get("weight") or 0)
        world = canary_policy.World(
            spec_revision=spec_revision(spec),
            main_replicas=main_before.replicas,
            main_revision=main_rev,
            # Every wanted replica runs the current template and is ready; no old pod left.
            main_rolled_out=bool(
                main_state is not None
                and main_dep is not None
                and main_state.replicas == main_before.replicas
                and current_ready(main_dep) >= main_before.replicas
            ),
            canary_ready=canary_ready,
            routed_canary_weight=routed,
            canary=readings(CANARY_VARIANT),
            stable=readings(MAIN_VARIANT),
        )
        outcome = canary_policy.advance(spec, prev_rollout, world, now)
        events.extend(outcome.events)
        if outcome.rollout is None:
            new.pop("rollout", None)
        else:
            new["rollout"] = outcome.rollout.to_status()

        # 2. The plan that follows from it.
        rs = rollout_state(new)
        variants = plan(spec, rs, Observed(scaled=scaled, ready=ready))
        main = next(v for v in variants if v.name == MAIN_VARIANT)
        missing: list[tuple[str, str, sig.Reading]] = []
        if outcome.check is not None:
            missing.extend(m for m in outcome.check.missing if ready.get(m[0], 0) > 0)

        # 3. One scaling decision per variant.
        s = spec.scaling
        if s is not None and s.mode != "Off":
            previous = {e.get("variant"): e for e in status.get("scaling") or []}
            entries: list[dict[str, Any]] = []
            for v in variants:
                st = states.get(v.name)
                r = readings(v.name)
                floor = (
                    canary_replicas(main.replicas, canary_share(spec, rs))
                    if v.name == CANARY_VARIANT
                    else 0
                )
                hold = (
                    "a canary rollout is in flight: the stable variant keeps the replicas "
                    "it needs to take all traffic back"
                    if v.name == MAIN_VARIANT and rs.in_flight
                    else None
                )
                old = previous.get(v.name)
                d = scaling_policy.decide(
                    s,
                    scaling_policy.ScaleInput(
                        variant=v.name,
                        current=v.replicas,
                        ready=st.ready if st else 0,
                        starting=starting_pods(pods, v.name, s.warmup_seconds, now),
                        signals=r,
                        previous=scaling_policy.Previous.from_status(old),
                        hold_down=hold,
                        floor=floor,
                    ),
                    now,
                )
                entry = d.to_status(sig.to_status(r, stamp))
                if (
                    old is not None
                    and scaling_policy.significant(old) == (scaling_policy.significant(entry))
                    and not self._outdated(old.get("signals"), entry.get("signals"), now)
                ):
                    entry = dict(old)
                entries.append(entry)
                before_desired = old.get("desiredReplicas") if old else d.current
                if d.desired != before_desired:
                    events.append(_scale_event(d))
                if ready.get(v.name, 0) > 0:
                    missing.extend((v.name, m[0], m[1]) for m in d.missing)
            new["scaling"] = entries
        else:
            new.pop("scaling", None)

        # 4. Signals side by side, and whether the decisions had what they need.
        if uses_metrics(spec) and obs is not None:
            rows = []
            old_rows = {r.get("variant"): r for r in status.get("signals") or []}
            for v in variants:
                r = readings(v.name)
                row = sig.to_status(r, stamp, v.name)
                old_row = old_rows.get(v.name)
                if (
                    old_row is not None
                    and _shape(old_row) == _shape(row)
                    and not self._outdated(old_row, row, now)
                ):
                    row = dict(old_row)
                rows.append(row)
                # Every variant with ready pods must at least be seen: its request
                # rate is what tells idle (0) from unobserved.
                if ready.get(v.name, 0) > 0:
                    rate = r.get(sig.REQUEST_RATE)
                    if rate is not None and not rate.ok:
                        missing.append((v.name, sig.REQUEST_RATE, rate))
            new["signals"] = rows
            conds, ev = _metrics_condition(
                conds, missing, stamp, generation, configured=self.prom is not None
            )
            events.extend(ev)
        else:
            new.pop("signals", None)
            conds = [c for c in conds if c.get("type") != METRICS_CONDITION]

        cc = canary_policy.condition(outcome.rollout)
        if cc is None:
            conds = [c for c in conds if c.get("type") != CANARY_CONDITION]
        else:
            conds = readiness.set_condition(conds, CANARY_CONDITION, *cc, stamp, generation)
        new["conditions"] = conds

        if _strip(new) == _strip(status):
            return None, []
        return new, events

    def _outdated(
        self, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None, now: float
    ) -> bool:
        """Whether recorded signals should be replaced by new ones of the same shape:
        only when their values differ and the record is older than the refresh period
        (a cycle that observes nothing new writes nothing)."""
        if _values(old) == _values(new):
            return False
        t = sig.parse_time((old or {}).get("observedAt"))
        return t is None or now - t >= self.refresh


def _key(o: Mapping[str, Any]) -> tuple[str, str]:
    md = o["metadata"]
    return str(md.get("namespace") or "default"), str(md["name"])


def _values(row: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (row or {}).items() if k not in ("observedAt",)}


def _shape(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Which signals have values and which are missing (and why)."""
    values = tuple(sorted(k for k in row if k not in ("variant", "missing", "observedAt")))
    return values, tuple(row.get("missing") or ())


def _scale_event(d: scaling_policy.Decision) -> canary_policy.Event:
    if not d.applied:
        return canary_policy.Event(
            "Normal", "ScaleRecommended", f"{d.variant} (Observe mode, not applied): {d.reason}"
        )
    reason = "ScaledUp" if d.desired > d.current else "ScaledDown"
    return canary_policy.Event("Normal", reason, f"{d.variant}: {d.reason}")


def _metrics_condition(
    conds: list[dict[str, Any]],
    missing: Sequence[tuple[str, str, sig.Reading]],
    now: str,
    generation: int,
    configured: bool = True,
) -> tuple[list[dict[str, Any]], list[canary_policy.Event]]:
    before = readiness.get_condition(conds, METRICS_CONDITION)
    # One entry per (variant, signal), in a stable order.
    uniq = {(v, s): r for v, s, r in missing}
    items = [(v, s, uniq[(v, s)]) for v, s in sorted(uniq)]
    if not configured:
        conds = readiness.set_condition(
            conds,
            METRICS_CONDITION,
            False,
            "PrometheusNotConfigured",
            "no Prometheus is configured (sluice run --prometheus-url): autoscaling and canary "
            "analysis cannot decide; replicas and weights stay as they are",
            now,
            generation,
        )
    elif items:
        kinds = {r.kind for _, _, r in items}
        reason = (
            "QueryFailed" if "error" in kinds else "NoData" if "nodata" in kinds else "NotANumber"
        )
        msg = (
            sig.describe_missing(items)
            + ". Decisions that need these signals are frozen: no scale-up, no scale-down, "
            "no canary step"
        )
        conds = readiness.set_condition(
            conds, METRICS_CONDITION, False, reason, msg, now, generation
        )
    else:
        conds = readiness.set_condition(
            conds,
            METRICS_CONDITION,
            True,
            "MetricsAvailable",
            "Prometheus answered every signal the decisions need",
            now,
            generation,
        )
    after = readiness.get_condition(conds, METRICS_CONDITION)
    events: list[canary_policy.Event] = []
    assert after is not None
    was = (before.get("status"), before.get("reason")) if before else (None, None)
    if after.get("status") == "False" and was != ("False", after.get("reason")):
        events.append(canary_policy.Event("Warning", "MetricsUnavailable", str(after["message"])))
    elif after.get("status") == "True" and was[0] == "False":
        events.append(
            canary_policy.Event("Normal", "MetricsAvailable", "metrics are back: control resumes")
        )
    return conds, events


def _strip(status: Mapping[str, Any]) -> Any:
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or []
    ]
    return out
