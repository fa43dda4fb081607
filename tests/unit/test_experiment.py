"""A/B verdicts: spec.experiment judged by the same sequential tests as a canary."""

from __future__ import annotations

import math
import random
from typing import Any

from sluice.api.v1alpha1 import parse_spec
from sluice.policy import signals as sig
from sluice.policy.control import ControlConfig
from sluice.policy.plan import Observed, plan
from tests.support.decide import cycle, deployment

T0 = 1_800_000_000.0
CFG = ControlConfig(rate_window_seconds=30)


def spec(**experiment: Any):
    return parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": 1},
            "triton": {"image": "img"},
            "replicas": 2,
            "router": {"gateway": {"name": "gw"}},
            "variants": [{"name": "b", "weight": 50, "model": {"version": 2}}],
            "experiment": experiment,
        }
    )


def obs(rng: random.Random, b_ratio: float) -> sig.Observations:
    def reads(ratio: float) -> dict[str, sig.Reading]:
        p99 = 50 * ratio * math.exp(rng.gauss(0, 0.05))
        return {
            sig.REQUEST_RATE: sig.value(40),
            sig.ERROR_RATE: sig.value(0.0),
            sig.P99_LATENCY: sig.value(p99),
            sig.AVG_LATENCY: sig.value(p99 / 3),
        }

    rows = {"main": reads(1.0), "b": reads(b_ratio)}
    return sig.Observations(
        {s: {("ns", "x", v): r[s] for v, r in rows.items()} for s in rows["main"]}
    )


def run(s: Any, b_ratio: float, cycles: int = 60) -> tuple[dict[str, Any], list[str]]:
    rng = random.Random(3)
    deps = {"main": deployment("main", 2, 2), "b": deployment("b", 2, 2, version=2)}
    status: dict[str, Any] = {}
    events: list[str] = []
    for k in range(cycles):
        new, evs = cycle(s, status, obs(rng, b_ratio), deps, T0 + 15 * k, config=CFG)
        status = new or status
        events += [e.reason for e in evs]
    return status, events


def test_the_faster_variant_is_named_with_its_numbers_and_an_event() -> None:
    status, events = run(spec(), 0.8)
    ex = status["experiment"]
    assert ex["winner"] == "b" and "promoted" not in ex
    b = ex["variants"][0]
    assert b["candidate"] == "b" and b["baseline"] == "main" and b["better"] == "b"
    p99 = next(x for x in b["signals"] if x["signal"] == "p99LatencyMs")
    assert p99["better"] == "b" and p99["upper"] < 1.0 and p99["samples"] > 1000
    assert p99["confidence"] == 0.99
    assert "ExperimentVerdict" in events and events.count("ExperimentWinner") == 1


def test_identical_variants_have_no_winner() -> None:
    status, events = run(spec(), 1.0)
    assert "winner" not in status["experiment"]
    assert "inconclusive" in status["experiment"]["message"]
    assert "ExperimentWinner" not in events


def test_promote_winner_moves_main_to_the_winners_revision() -> None:
    s = spec(promoteWinner=True)
    status, events = run(s, 0.8)
    ex = status["experiment"]
    assert ex["promoted"] == {"version": 2, "image": "img"}
    assert "ExperimentPromoted" in events
    main = plan(s, None, Observed(promoted=None))[0]
    assert main.version == 1
    from sluice.api.v1alpha1 import InferenceServiceStatus

    st = InferenceServiceStatus.from_dict(status)
    assert st.experiment is not None
    main = plan(s, st.rollout, Observed(promoted=st.experiment.promoted))[0]
    assert main.version == 2


def test_custom_signals_are_queried_judged_and_shown() -> None:
    """spec.experiment.customSignals: a business metric (higher is better) judged with
    the built-in signals, one observation per window; its query is rendered with the
    service's selector and grouped per variant like the built-in ones."""
    from sluice.policy import analysis

    s = spec(
        customSignals=[
            {
                "name": "conversionRate",
                "query": "sum by (namespace, inferenceservice, variant) "
                "(rate(conversions_total{{selector}}[{window}]))",
                "direction": "higher",
                "compare": "Difference",
            }
        ]
    )
    assert analysis.custom_templates(s) == {"conversionRate": s.experiment.custom_signals[0].query}
    q = sig.queries_for({}, sig.service_selector("ns", "x"), "30s", analysis.custom_templates(s))
    assert q == {
        "conversionRate": "sum by (namespace, inferenceservice, variant) (rate(conversions_total"
        '{namespace="ns",inferenceservice="x"}[30s]))'
    }
    rng = random.Random(3)
    deps = {"main": deployment("main", 2, 2), "b": deployment("b", 2, 2, version=2)}
    status: dict[str, Any] = {}
    for k in range(60):
        o = obs(rng, 0.8)
        conv = {("ns", "x", "main"): sig.value(0.10 + rng.gauss(0, 0.002)),
                ("ns", "x", "b"): sig.value(0.08 + rng.gauss(0, 0.002))}  # fmt: skip
        o = sig.merge(o, {"conversionRate": conv})
        assert "conversionRate" in o.variant(("ns", "x", "b"))
        new, _ = cycle(s, status, o, deps, T0 + 15 * k, config=CFG)
        status = new or status
    b = status["experiment"]["variants"][0]
    conv_v = next(x for x in b["signals"] if x["signal"] == "conversionRate")
    assert conv_v["kind"] == "difference" and conv_v["better"] == "main"
    assert conv_v["upper"] < 0 and conv_v["batches"] >= 5 and conv_v["samples"] > 1000
    # b is faster but converts worse: no winner (better on the first signal, worse on one).
    assert "winner" not in status["experiment"]


def test_canary_custom_signals_are_criteria_with_their_tolerance() -> None:
    from sluice.policy import analysis
    from sluice.policy import judge as J

    s = parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": 1},
            "router": {"gateway": {"name": "gw"}},
            "rollout": {
                "strategy": "Canary",
                "analysis": {
                    "customSignals": [
                        {"name": "costPerRequest", "query": "x{selector}", "tolerance": 0.05}
                    ]
                },
            },
        }
    )
    crit = analysis.canary_criteria(s)
    assert crit[-1] == J.Criterion("costPerRequest", "ratio", 0.05, "lower")
    assert analysis.custom_templates(s) == {"costPerRequest": "x{selector}"}
