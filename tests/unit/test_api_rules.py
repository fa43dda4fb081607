"""The parser: defaults, bounds and the cross-field rules it shares with CEL."""

from __future__ import annotations

import pytest

from sluice.api.schema import SpecError
from sluice.api.v1alpha1 import check_name, parse_spec, seconds
from tests.support.invalid_specs import ACCEPTED, BASE, CASES, Case


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


@pytest.mark.parametrize("case", ACCEPTED, ids=lambda c: c.id)
def test_parser_accepts_valid_edge_cases(case: Case) -> None:
    validate(case.obj())


def test_every_case_has_a_unique_id() -> None:
    ids = [c.id for c in CASES + ACCEPTED]
    assert len(ids) == len(set(ids))


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


# ------------------------------------------------------- validation vocabulary


@pytest.mark.parametrize(
    ("arg", "owned"),
    [
        ("--model-control-mode=poll", True),
        ("--model-control=poll", True),  # getopt_long takes unambiguous abbreviations
        ("--model-repository", True),
        ("--model-store=/x", True),
        ("--load-model=*", True),
        ("--http-port=9000", True),
        ("--allow-metrics=false", True),
        ("--metrics-config", True),  # its value would follow as the next argument
        ("--metrics-config=summary_quantiles=0.5:0.1", True),
        ("--metrics-config=histogram_latencies=true", False),
        ("--metrics-interval-ms=500", False),
        ("--model-load-thread-count=4", False),
        ("--http-address=127.0.0.1", False),
        ("--allow-grpc=false", False),
        ("--log-verbose=1", False),
        ("poll", False),
        ("--", False),
    ],
)
def test_owned_flags_and_their_abbreviations(arg: str, owned: bool) -> None:
    from sluice.api.validation import owned_arg

    assert owned_arg(arg) is owned


def test_quantities_compare_as_kubernetes_does() -> None:
    from sluice.api.validation import quantity

    assert quantity("1Mi") == 1048576 and quantity("1m") * 1000 == 1
    assert quantity("1.5Gi") == 1.5 * 2**30 and quantity("2k") == 2000


def test_image_pattern_is_linear_on_hostile_input() -> None:
    import re
    import time

    from sluice.api.validation import IMAGE

    hostile = "a" + "-a" * 200 + "_" * 50 + "!"
    t = time.perf_counter()
    assert re.fullmatch(IMAGE, hostile) is None
    assert time.perf_counter() - t < 0.5


def test_sluice_env_wins_over_a_stored_duplicate() -> None:
    """Objects stored before the env rule render without duplicate names (SSA refuses them)."""
    import dataclasses

    from sluice.api.v1alpha1 import EnvVar
    from sluice.render.plan import Variant
    from sluice.render.triton import container

    spec = parse_spec(BASE["spec"])
    spec = dataclasses.replace(
        spec,
        triton=dataclasses.replace(
            spec.triton, env=(EnvVar(name="SLUICE_MODEL_VERSION", value="9"),)
        ),
    )
    v = Variant(name="main", version=1, image="img:1", repository="s3://b/m", replicas=1)
    env = container(spec, v)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    assert {"name": "SLUICE_MODEL_VERSION", "value": "1"} in env
