"""The typed status: parsed once, serialised once, in the CRD's schema."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sluice.api.crd import crd
from sluice.api.v1alpha1 import (
    Condition,
    InferenceServiceStatus,
    RevisionStatus,
    RolloutStatus,
    ScalingStatus,
    Signals,
    VariantStatus,
)
from sluice.reconcile.control import pod_state

T0 = 1_800_000_000.25


def full_status() -> InferenceServiceStatus:
    return InferenceServiceStatus(
        observed_generation=3,
        conditions=(
            Condition(
                type="Ready",
                status="True",
                reason="Serving",
                message="ok",
                last_transition_time=T0,
                observed_generation=3,
            ),
        ),
        url="http://x.ns.svc",
        model="m",
        version=2,
        replicas=3,
        ready_replicas=3,
        ready="3/3",
        selector="a=b",
        variants=(VariantStatus(name="main", version=2, image="img", replicas=3, weight=100),),
        scaling=(
            ScalingStatus(
                variant="main",
                current_replicas=2,
                desired_replicas=3,
                applied=True,
                metric="p99LatencyMs",
                observed=120.5,
                target=100.0,
                reason="ScaleUp: hot",
                last_scale_time=T0,
                pending_direction="Down",
                pending_since=T0 + 1,
                signals=Signals(request_rate=12.0, missing=("errorRate: no data",), observed_at=T0),
            ),
        ),
        signals=(Signals(variant="main", request_rate=12.0, observed_at=T0),),
        rollout=RolloutStatus(
            phase="Progressing",
            stable=RevisionStatus(1, "img"),
            canary=RevisionStatus(2, "img"),
            step=0,
            canary_weight=10,
            step_started_at=T0,
            last_progress_at=T0,
            message="x",
        ),
    )


def test_status_round_trips_through_its_wire_form() -> None:
    st = full_status()
    wire = st.to_dict()
    assert InferenceServiceStatus.from_dict(wire) == st
    # One timestamp format: RFC 3339 UTC with milliseconds, everywhere.
    assert wire["conditions"][0]["lastTransitionTime"] == "2027-01-15T08:00:00.250Z"
    assert wire["rollout"]["stepStartedAt"] == "2027-01-15T08:00:00.250Z"
    assert wire["scaling"][0]["pendingSince"] == "2027-01-15T08:00:01.250Z"
    assert wire["scaling"][0]["signals"]["observedAt"] == "2027-01-15T08:00:00.250Z"


def test_unset_fields_and_empty_lists_are_not_written() -> None:
    wire = InferenceServiceStatus(observed_generation=1).to_dict()
    assert "rollout" not in wire and "scaling" not in wire and "signals" not in wire
    assert "conditions" not in wire
    assert InferenceServiceStatus.from_dict(None) == InferenceServiceStatus()


def test_status_written_by_older_operators_still_loads() -> None:
    old = {
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
        "rollout": {"phase": "Idle", "stable": {"version": 1, "image": "img"}},
        "somethingElse": {"ignored": True},
    }
    st = InferenceServiceStatus.from_dict(old)
    ready = st.condition("Ready")
    assert (
        ready is not None
        and ready.last_transition_time == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    )
    assert st.rollout is not None and st.rollout.stable == RevisionStatus(1, "img")


def test_conditions_keep_their_transition_time_unless_status_changes() -> None:
    st = InferenceServiceStatus().with_condition("Canary", True, "Idle", "ok", T0, 1)
    same = st.with_condition("Canary", True, "Progressing", "moving", T0 + 10, 2)
    c = same.condition("Canary")
    assert c is not None and (c.last_transition_time, c.reason, c.observed_generation) == (
        T0,
        "Progressing",
        2,
    )
    flipped = same.with_condition("Canary", False, "RolledBack", "bad", T0 + 20)
    c = flipped.condition("Canary")
    assert c is not None and c.last_transition_time == T0 + 20
    assert flipped.same_as(flipped.with_condition("Canary", False, "RolledBack", "bad", T0 + 30))
    assert flipped.without_condition("Canary").conditions == ()


def _keys_fit(data: Any, schema: dict[str, Any], path: str = "status") -> list[str]:
    """Paths in ``data`` the structural schema does not declare (the apiserver
    would prune them) or whose JSON type differs."""
    bad: list[str] = []
    kind = schema.get("type")
    if isinstance(data, dict):
        if kind != "object":
            return [f"{path}: object where the schema says {kind}"]
        props = schema.get("properties") or {}
        for k, v in data.items():
            if k not in props:
                bad.append(f"{path}.{k}: not in the schema")
            else:
                bad.extend(_keys_fit(v, props[k], f"{path}.{k}"))
    elif isinstance(data, list):
        if kind != "array":
            return [f"{path}: array where the schema says {kind}"]
        for i, v in enumerate(data):
            bad.extend(_keys_fit(v, schema["items"], f"{path}[{i}]"))
    else:
        want = {
            bool: "boolean",
            int: "integer",
            float: "number",
            str: "string",
        }[type(data)]
        if not (want == kind or (want == "integer" and kind == "number")):
            bad.append(f"{path}: {want} where the schema says {kind}")
    return bad


def test_what_is_written_fits_the_crd_status_schema() -> None:
    version = crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _keys_fit(full_status().to_dict(), schema) == []


def test_pod_facts_keep_creation_and_ready_times() -> None:
    created = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # the client hands back datetimes
    pod = {
        "metadata": {
            "name": "x-main-1",
            "labels": {"sluice.dev/variant": "main"},
            "creationTimestamp": created,
        },
        "status": {
            "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:01:00Z"}
            ]
        },
    }
    p = pod_state(pod)
    assert (p.variant, p.ready, p.deleting) == ("main", True, False)
    assert p.created is not None and p.ready_since is not None
    assert p.ready_since - p.created == 60  # the model-load time
    assert not p.starting(600, p.created + 1)
    loading = pod_state({**pod, "status": {}})
    assert loading.starting(600, p.created + 1) and not loading.starting(600, p.created + 601)
