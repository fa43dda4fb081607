"""The parser: defaults, bounds and the cross-field rules it shares with CEL."""

from __future__ import annotations

import pytest

from sluice.api.schema import SpecError
from sluice.api.v1alpha1 import check_name, parse_spec, seconds
from tests.support.invalid_specs import BASE, CASES, Case


def validate(obj: dict) -> None:
    check_name(obj["metadata"]["name"])
    parse_spec(obj["spec"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parser_rejects_with_a_clear_message(case: Case) -> None:
    with pytest.raises(SpecError) as e:
        validate(case.obj())
    assert case.parser_says in str(e.value)


def test_base_case_is_valid() -> None:
    validate(BASE)


def test_at_least_eight_invalid_cases() -> None:
    assert len(CASES) >= 8


def test_defaults() -> None:
    spec = parse_spec({"model": {"name": "m", "repository": "gs://b/p", "version": 4}})
    assert spec.replicas == 1
    assert spec.gpu.count == 1 and spec.gpu.products == () and spec.gpu.mig_profile is None
    assert spec.triton.image.startswith("nvcr.io/nvidia/tritonserver:")
    assert spec.triton.startup_timeout_seconds == 1800
    assert spec.scaling is None
    assert spec.rollout.strategy == "Rolling"
    assert spec.rollout.steps == (10, 25, 50)
    assert spec.rollout.interval_seconds == 60
    assert spec.rollout.analysis.failure_threshold == 3
    assert spec.monitoring.pod_monitor == "Auto"


def test_scaling_behaviour_defaults() -> None:
    spec = parse_spec(
        {
            "model": {"name": "m", "repository": "gs://b/p", "version": 4},
            "scaling": {"maxReplicas": 4, "target": {"value": 50}},
        }
    )
    s = spec.scaling
    assert s is not None
    assert (s.mode, s.min_replicas, s.target.metric) == ("Auto", 1, "p99LatencyMs")
    # Policy Demand (the default) sizes the whole gap in one decision: no step bound.
    assert s.policy == "Demand"
    assert (s.up_stabilization, s.down_stabilization, s.up_step, s.down_step) == (0, 300, 4, 4)
    # The earlier proportional rule keeps its bounded steps.
    prop = parse_spec(
        {
            "model": {"name": "m", "repository": "gs://b/p", "version": 4},
            "scaling": {"maxReplicas": 4, "target": {"value": 50}, "policy": "Proportional"},
        }
    ).scaling
    assert prop is not None
    assert (prop.up_step, prop.down_step) == (4, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"model": "x"}, "spec.model: must be an object"),
        ({"model": {"name": "m", "repository": "s3://b", "version": "3"}}, "must be an integer"),
        ({"model": {"name": "m", "repository": "s3://b", "version": True}}, "must be an integer"),
        (
            {"model": {"name": "m", "repository": "s3://b", "version": 1}, "replicas": -1},
            "spec.replicas: must be >= 0",
        ),
        (
            {"model": {"name": "m", "repository": "pvc://Bad_Claim/x", "version": 1}},
            "a pvc:// repository must name a PersistentVolumeClaim",
        ),
        (
            {"model": {"name": "m", "repository": "gs://b", "version": 1, "s3": {}}},
            "model.s3 applies only to an s3:// repository",
        ),
    ],
)
def test_type_and_bound_errors_name_the_field(value: dict, message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(value)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("text", "secs"), [("60s", 60), ("2m", 120), ("1h30m", 5400), ("500ms", 0.5)]
)
def test_durations(text: str, secs: float) -> None:
    assert seconds(text) == secs
