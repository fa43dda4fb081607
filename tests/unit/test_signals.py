"""Signals: every Prometheus answer is a value, no data, NaN/Inf, or an error."""

from __future__ import annotations

import pytest

from sluice.api.schema import to_dict
from sluice.policy import signals as sig
from sluice.policy.control import ControlConfig
from sluice.policy.readiness import DeploymentState
from sluice.policy.signals import QueryAnswer, Reading
from tests.support.decide import cycle, deployment


@pytest.mark.parametrize(
    ("raw", "kind", "value"),
    [
        ("1.5", "value", 1.5),
        ("0", "value", 0.0),  # zero traffic is a value, not missing data
        ("NaN", "nan", None),
        ("Nan", "nan", None),
        ("+Inf", "nan", None),
        ("-Inf", "nan", None),
        ("twelve", "error", None),
        (None, "error", None),
    ],
)
def test_parse_sample(raw: object, kind: str, value: float | None) -> None:
    r = sig.parse_sample(raw)
    assert r.kind == kind
    assert r.value == value
    assert r.ok == (kind == "value")


def vec(*series: tuple[dict[str, str], str]) -> QueryAnswer:
    return QueryAnswer(result=tuple({"metric": m, "value": [1.0, v]} for m, v in series))


def labels(ns: str, isvc: str, variant: str) -> dict[str, str]:
    return {"namespace": ns, "inferenceservice": isvc, "variant": variant}


def test_group_keys_results_by_namespace_service_and_variant() -> None:
    got = sig.group(
        vec(
            (labels("a", "x", "main"), "3"),
            (labels("a", "x", "canary"), "NaN"),
            (labels("b", "x", "main"), "0"),
            ({"namespace": "a", "variant": "main"}, "7"),  # no service label: ignored
        )
    )
    assert isinstance(got, dict)
    assert got == {
        ("a", "x", "main"): Reading("value", 3.0),
        ("a", "x", "canary"): Reading("nan", None, "NaN"),
        ("b", "x", "main"): Reading("value", 0.0),
    }


def test_an_unaggregated_custom_query_is_an_error_not_a_pick() -> None:
    got = sig.group(vec((labels("a", "x", "main"), "3"), (labels("a", "x", "main"), "9")))
    assert isinstance(got, dict)
    r = got[("a", "x", "main")]
    assert r.kind == "error" and "aggregate by" in r.why


def test_a_failed_query_is_an_error_for_every_variant() -> None:
    obs = sig.Observations(
        {
            sig.REQUEST_RATE: sig.group(QueryAnswer(error="connection refused")),
            sig.P99_LATENCY: sig.group(vec((labels("a", "x", "main"), "12.5"))),
        }
    )
    main = obs.variant(("a", "x", "main"))
    assert main[sig.REQUEST_RATE] == Reading("error", None, "connection refused")
    assert main[sig.P99_LATENCY] == Reading("value", 12.5)
    # A variant Prometheus has no series for: no data, with why.
    canary = obs.variant(("a", "x", "canary"))
    assert canary[sig.P99_LATENCY].kind == "nodata"
    assert "canary" in canary[sig.P99_LATENCY].why
    # A signal that was never queried is not silently a number either.
    assert canary[sig.QUEUE_TIME].kind == "error"


def test_a_scalar_answer_is_an_error() -> None:
    got = sig.group(QueryAnswer(result=(1.0, "3")))  # type: ignore[arg-type]
    assert isinstance(got, Reading) and got.kind == "error"


def test_custom_queries_override_only_their_signals() -> None:
    base = sig.Observations(
        {
            sig.REQUEST_RATE: sig.group(vec((labels("a", "x", "main"), "5"))),
            sig.P99_LATENCY: sig.group(vec((labels("a", "x", "main"), "40"))),
        }
    )
    merged = sig.merge(base, {sig.P99_LATENCY: sig.group(vec((labels("a", "x", "main"), "55")))})
    assert merged.reading(("a", "x", "main"), sig.P99_LATENCY).value == 55
    assert merged.reading(("a", "x", "main"), sig.REQUEST_RATE).value == 5


def test_fleet_queries_one_per_signal_grouped_by_the_three_labels() -> None:
    qs = sig.fleet_queries(["team-a", "team-b"], "30s")
    assert set(qs) == set(sig.SIGNALS)
    for q in qs.values():
        assert "{selector}" not in q and "{window}" not in q
        assert "by (namespace, inferenceservice, variant)" in q
        assert 'inferenceservice!="",namespace=~"team-a|team-b"' in q
    assert "[30s]" in qs[sig.REQUEST_RATE]
    # Tail latency: the worst pod, never an average of per-pod quantiles.
    assert qs[sig.P99_LATENCY].startswith("max by (namespace, inferenceservice, variant)")
    assert 'quantile="0.99"' in qs[sig.P99_LATENCY]
    assert 'quantile="0.95"' in qs[sig.P95_LATENCY]


def test_custom_template_placeholders_are_textual() -> None:
    template = (
        "sum by (namespace, inferenceservice, variant) "
        '(rate(gw_requests_total{{selector},code=~"5.."}[{window}]))'
    )
    q = sig.queries_for({sig.ERROR_RATE: template}, sig.service_selector("team-a", "resnet"), "2m")
    assert q == {
        sig.ERROR_RATE: "sum by (namespace, inferenceservice, variant) "
        '(rate(gw_requests_total{namespace="team-a",inferenceservice="resnet",code=~"5.."}[2m]))'
    }


def test_status_lists_values_and_says_why_the_others_are_missing() -> None:
    typed = sig.to_status(
        {
            sig.REQUEST_RATE: sig.value(12.345678),
            sig.ERROR_RATE: sig.not_a_number("NaN"),
            sig.P99_LATENCY: sig.error("Prometheus at http://p:9090 is unreachable"),
        },
        sig.parse_time("2026-01-01T00:00:00.000Z") or 0,
        "main",
    )
    st = to_dict(typed, omit_empty=True)
    assert st == {
        "variant": "main",
        "requestRate": 12.35,
        "missing": [
            "errorRate: not a number (NaN)",
            "p99LatencyMs: error (Prometheus at http://p:9090 is unreachable)",
        ],
        "observedAt": "2026-01-01T00:00:00.000Z",
    }


def test_time_round_trip() -> None:
    t = 1_800_000_000.123
    assert sig.parse_time(sig.format_time(t)) == pytest.approx(t, abs=0.001)
    assert sig.parse_time("2026-01-01T00:00:00Z") == sig.parse_time("2026-01-01T00:00:00.000Z")
    assert sig.parse_time(None) is None and sig.parse_time("soon") is None


# ------------------------------------------- the A/B comparison in status


T0 = 1_800_000_000.0


def ab_spec():
    from sluice.api.v1alpha1 import parse_spec

    return parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": 2},
            "router": {"gateway": {"name": "gw"}},
            "variants": [{"name": "b", "weight": 20, "model": {"version": 3}}],
        }
    )


def ab_observations(p99_main: float, p99_b: float) -> sig.Observations:
    def per_variant(main: float, b: float) -> sig.QueryAnswer:
        return vec((labels("ns", "x", "main"), str(main)), (labels("ns", "x", "b"), str(b)))

    return sig.Observations(
        {
            sig.REQUEST_RATE: sig.group(per_variant(40, 10)),
            sig.ERROR_RATE: sig.group(per_variant(0, 0.02)),
            sig.P99_LATENCY: sig.group(per_variant(p99_main, p99_b)),
        }
    )


def ready_deployments() -> dict[str, DeploymentState]:
    return {v: deployment(v, 1, 1, version=None, image=None) for v in ("main", "b")}


def test_ab_variants_are_compared_side_by_side_and_weights_left_alone() -> None:
    spec, deps = ab_spec(), ready_deployments()
    st, events = cycle(spec, {}, ab_observations(12, 30), deps, T0)
    assert st is not None and events == []
    rows = {r["variant"]: r for r in st["signals"]}
    assert rows["main"]["requestRate"] == 40 and rows["b"]["requestRate"] == 10
    assert rows["b"]["errorRate"] == 0.02 and rows["b"]["p99LatencyMs"] == 30
    assert "avgLatencyMs: error (not queried)" in rows["main"]["missing"]
    assert "rollout" not in st and "scaling" not in st  # fixed weights: nothing decided
    cond = {x["type"]: x for x in st["conditions"]}["MetricsAvailable"]
    assert cond["status"] == "True"
    # Same shape, moved values: not rewritten within the refresh period, then rewritten.
    assert cycle(spec, st, ab_observations(13, 31), deps, T0 + 5) == (None, [])
    later, _ = cycle(spec, st, ab_observations(13, 31), deps, T0 + 61)
    assert later is not None
    assert {r["variant"]: r["p99LatencyMs"] for r in later["signals"]} == {"main": 13, "b": 31}


def test_without_prometheus_the_condition_says_so_once() -> None:
    spec = ab_spec()
    obs = sig.not_configured()  # what the shell observes without a Prometheus
    unconfigured = ControlConfig(prometheus_configured=False)
    st, events = cycle(spec, {}, obs, ready_deployments(), T0, config=unconfigured)
    assert st is not None
    cond = {x["type"]: x for x in st["conditions"]}["MetricsAvailable"]
    assert (cond["status"], cond["reason"]) == ("False", "PrometheusNotConfigured")
    assert [e.reason for e in events] == ["MetricsUnavailable"]
    assert cycle(spec, st, obs, ready_deployments(), T0 + 300, config=unconfigured) == (None, [])
