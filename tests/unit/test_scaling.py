"""The autoscaler, table-driven over observation sequences.

Each case feeds a sequence of cycles (time, request rate, target-metric
reading, ready, starting pods) through :func:`decide`, carrying status from one
cycle to the next the way the shell does (status.scaling round-trips through
its wire form, ``InferenceServiceStatus.to_dict``/``from_dict``; in Auto mode
the plan then runs the decided replicas). The expected column is (desired replicas, code) per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sluice.api.v1alpha1 import InferenceServiceStatus, ScalingStatus, Signals, parse_spec
from sluice.policy import signals as sig
from sluice.policy.scaling import Decision, Previous, ScaleInput, decide, significant
from sluice.policy.signals import Reading
from tests.support.decide import cycle, deployment

T0 = 1_800_000_000.0


def scaling(**over: Any):
    # These cases are the Proportional policy's; policy Demand has its own tests.
    base: dict[str, Any] = {
        "policy": "Proportional",
        "minReplicas": 1,
        "maxReplicas": 8,
        "target": {"metric": "p99LatencyMs", "value": 100},
        "warmupSeconds": 60,
        "scaleUp": {"stabilizationSeconds": 0},
        "scaleDown": {"stabilizationSeconds": 30},
    }
    base.update(over)
    spec = parse_spec(
        {"model": {"name": "m", "repository": "s3://b/p", "version": 1}, "scaling": base}
    )
    assert spec.scaling is not None
    return spec.scaling


V = sig.value
NODATA = sig.no_data("no series for variant main")
NAN = sig.not_a_number("NaN")
ERR = sig.error("Prometheus at http://prom:9090 is unreachable: connection refused")


@dataclass
class Cycle:
    t: float  # seconds after T0
    rate: Reading
    p99: Reading
    ready: int | None = None  # default: all current replicas ready
    starting: int = 0
    hold_down: str | None = None


def wire(entry: ScalingStatus) -> ScalingStatus:
    """status.scaling through the apiserver and back."""
    back = InferenceServiceStatus.from_dict(InferenceServiceStatus(scaling=(entry,)).to_dict())
    return back.scaling[0]


def run(spec: Any, cycles: list[Cycle], current: int) -> list[tuple[int, str]]:
    """Feed the cycles through decide(), carrying status like the shell does."""
    entry: ScalingStatus | None = None
    out: list[tuple[int, str]] = []
    for c in cycles:
        d = decide(
            spec,
            ScaleInput(
                variant="main",
                current=current,
                ready=current if c.ready is None else c.ready,
                starting=c.starting,
                signals={sig.REQUEST_RATE: c.rate, sig.P99_LATENCY: c.p99},
                previous=Previous.from_status(entry),
                hold_down=c.hold_down,
            ),
            T0 + c.t,
        )
        entry = wire(d.to_status())
        if d.applied:
            current = d.desired
        out.append((d.desired, d.code))
    return out


CASES: dict[str, tuple[dict[str, Any], int, list[Cycle], list[tuple[int, str]]]] = {
    "tail over target scales up at once, proportionally": (
        {},
        2,
        [Cycle(0, V(50), V(180))],
        [(4, "ScaleUp")],  # ceil(2 ready * 1.8)
    ),
    "a step is bounded by scaleUp.maxStep and maxReplicas": (
        {"maxReplicas": 5},
        2,
        [Cycle(0, V(50), V(1000)), Cycle(1, V(50), V(1000)), Cycle(2, V(50), V(1000))],
        [(5, "ScaleUp"), (5, "AtMaxReplicas"), (5, "AtMaxReplicas")],
    ),
    "within tolerance nothing changes": (
        {},
        3,
        [Cycle(0, V(50), V(95)), Cycle(1, V(50), V(108))],
        [(3, "Steady"), (3, "Steady")],
    ),
    "scale-down waits for its stabilisation, one step at a time": (
        {},
        4,
        [
            Cycle(0, V(50), V(40)),
            Cycle(20, V(50), V(40)),
            Cycle(30, V(50), V(40)),  # held for 30 s: one step down
            Cycle(31, V(50), V(40)),  # the clock restarts after a change
            Cycle(61, V(50), V(40)),
        ],
        [
            (4, "Stabilizing"),
            (4, "Stabilizing"),
            (3, "ScaleDown"),
            (3, "Stabilizing"),
            (2, "ScaleDown"),
        ],
    ),
    "a cycle inside the band restarts the scale-down clock": (
        {},
        4,
        [
            Cycle(0, V(50), V(40)),
            Cycle(20, V(50), V(100)),
            Cycle(40, V(50), V(40)),
            Cycle(60, V(50), V(40)),
            Cycle(70, V(50), V(40)),
        ],
        [
            (4, "Stabilizing"),
            (4, "Steady"),
            (4, "Stabilizing"),
            (4, "Stabilizing"),
            (3, "ScaleDown"),
        ],
    ),
    "zero traffic is a value: idle scales down to the minimum": (
        {"scaleDown": {"stabilizationSeconds": 10, "maxStep": 4}},
        3,
        [Cycle(0, V(0), NAN), Cycle(10, V(0), NAN), Cycle(20, V(0), NAN)],
        [(3, "Stabilizing"), (1, "ScaleDown"), (1, "AtMinReplicas")],
    ),
    "no request rate freezes both directions": (
        {},
        3,
        [Cycle(0, NODATA, V(400)), Cycle(1, ERR, V(10)), Cycle(2, NAN, V(10))],
        [(3, "MetricsUnavailable"), (3, "MetricsUnavailable"), (3, "MetricsUnavailable")],
    ),
    "traffic without a latency value freezes (NaN, no data, error)": (
        {},
        3,
        [Cycle(0, V(20), NAN), Cycle(1, V(20), NODATA), Cycle(2, V(20), ERR)],
        [(3, "MetricsUnavailable")] * 3,
    ),
    "KEDA#3065: data lost at peak keeps the replicas, never the minimum": (
        {},
        2,
        [
            Cycle(0, V(80), V(300)),
            Cycle(1, V(80), V(300), ready=6),
            Cycle(2, ERR, ERR, ready=8),
            Cycle(100, NODATA, NODATA, ready=8),
            Cycle(200, NAN, NAN, ready=8),
        ],
        [
            (6, "ScaleUp"),
            (8, "ScaleUp"),
            (8, "MetricsUnavailable"),
            (8, "MetricsUnavailable"),
            (8, "MetricsUnavailable"),
        ],
    ),
    "missing data restarts the stabilisation clock": (
        {},
        4,
        [
            Cycle(0, V(50), V(40)),
            Cycle(20, ERR, ERR),
            Cycle(35, V(50), V(40)),  # 35 s after the first call, but not continuous
            Cycle(65, V(50), V(40)),
        ],
        [(4, "Stabilizing"), (4, "MetricsUnavailable"), (4, "Stabilizing"), (3, "ScaleDown")],
    ),
    "starting replicas are coming capacity: no more scale-up while they warm up": (
        {},
        2,
        [
            Cycle(0, V(50), V(200)),  # 2 -> 4
            Cycle(1, V(50), V(250), ready=2, starting=2),
            Cycle(5, V(50), V(250), ready=3, starting=1),
            Cycle(6, V(50), V(250), ready=4),  # all ready, still slow: up again
        ],
        [(4, "ScaleUp"), (4, "WarmingUp"), (4, "WarmingUp"), (8, "ScaleUp")],
    ),
    "wanted replicas whose pods do not exist yet count as warming after a scale-up": (
        {},
        2,
        [Cycle(0, V(50), V(200)), Cycle(1, V(50), V(200), ready=2, starting=0)],
        [(4, "ScaleUp"), (4, "WarmingUp")],
    ),
    "warm-up is bounded by warmupSeconds": (
        {"warmupSeconds": 30},
        2,
        [
            Cycle(0, V(50), V(200)),
            Cycle(10, V(50), V(200), ready=2),
            # Pods stuck beyond the bound are not coming capacity: add at least one.
            Cycle(31, V(50), V(200), ready=2),
        ],
        [(4, "ScaleUp"), (4, "WarmingUp"), (5, "ScaleUp")],
    ),
    "stable holds its replicas during a canary rollout": (
        {},
        4,
        [Cycle(0, V(10), V(20), hold_down="a canary rollout is in flight")] * 2,
        [(4, "HeldDuringRollout")] * 2,
    ),
    "scale-up stabilisation when asked for": (
        {"scaleUp": {"stabilizationSeconds": 5}},
        2,
        [Cycle(0, V(50), V(200)), Cycle(3, V(50), V(200)), Cycle(5, V(50), V(200))],
        [(2, "Stabilizing"), (2, "Stabilizing"), (4, "ScaleUp")],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_sequences(name: str) -> None:
    over, current, cycles, expected = CASES[name]
    assert run(scaling(**over), cycles, current) == expected


def test_observe_mode_reports_without_applying_and_without_churn() -> None:
    spec = scaling(mode="Observe")
    cycles = [Cycle(t, V(50), V(300)) for t in (0, 1, 2, 3)]
    entry: ScalingStatus | None = None
    decisions: list[Decision] = []
    for c in cycles:
        d = decide(
            spec,
            ScaleInput(
                variant="main",
                current=2,  # nothing is applied: the Deployment stays at 2
                ready=2,
                signals={sig.REQUEST_RATE: c.rate, sig.P99_LATENCY: c.p99},
                previous=Previous.from_status(entry),
            ),
            T0 + c.t,
        )
        if entry is not None:
            # After the first recommendation nothing that matters changes.
            assert significant(wire(d.to_status())) == significant(entry)
        entry = wire(d.to_status())
        decisions.append(d)
    assert all(not d.applied and d.desired == 6 and d.current == 2 for d in decisions)
    assert "would scale 2 -> 6" in decisions[0].reason


def test_status_records_what_was_observed_the_target_and_why() -> None:
    spec = scaling()
    d = decide(
        spec,
        ScaleInput(
            variant="canary",
            current=1,
            ready=1,
            signals={sig.REQUEST_RATE: V(12), sig.P99_LATENCY: V(250)},
        ),
        T0,
    )
    st = InferenceServiceStatus(scaling=(d.to_status(Signals(request_rate=12)),)).to_dict()[
        "scaling"
    ][0]
    assert st["variant"] == "canary"
    assert (st["currentReplicas"], st["desiredReplicas"], st["applied"]) == (1, 3, True)
    assert (st["metric"], st["observed"], st["target"]) == ("p99LatencyMs", 250, 100)
    assert st["reason"].startswith("ScaleUp: p99LatencyMs 250ms > target 100ms")
    assert st["lastScaleTime"] and st["signals"] == {"requestRate": 12}


def test_missing_decision_names_the_signal_and_why() -> None:
    d = decide(
        scaling(),
        ScaleInput(variant="main", current=2, ready=2, signals={sig.REQUEST_RATE: ERR}),
        T0,
    )
    assert d.missing == ((sig.REQUEST_RATE, ERR),)
    assert "unreachable" in d.reason and d.desired == 2


def test_canary_floor_is_respected_when_idle() -> None:
    d = decide(
        scaling(scaleDown={"stabilizationSeconds": 0}),
        ScaleInput(
            variant="canary",
            current=3,
            ready=3,
            signals={sig.REQUEST_RATE: V(0)},
            floor=3,
        ),
        T0,
    )
    assert (d.desired, d.code) == (3, "AtMinReplicas")


def test_other_target_metrics() -> None:
    spec = scaling(target={"metric": "queueTimeMs", "value": 5})
    d = decide(
        spec,
        ScaleInput(
            variant="main",
            current=1,
            ready=1,
            signals={sig.REQUEST_RATE: V(9), sig.QUEUE_TIME: V(20), sig.P99_LATENCY: NAN},
        ),
        T0,
    )
    assert (d.desired, d.metric, d.observed) == (4, "queueTimeMs", 20)


# ------------------- the whole per-service decision, through its status writes


def observations(rate: float, p99: float) -> sig.Observations:
    def one(v: float) -> sig.QueryAnswer:
        return sig.QueryAnswer(
            result=(
                {
                    "metric": {"namespace": "ns", "inferenceservice": "x", "variant": "main"},
                    "value": [0, str(v)],
                },
            )
        )

    return sig.Observations(
        {sig.REQUEST_RATE: sig.group(one(rate)), sig.P99_LATENCY: sig.group(one(p99))}
    )


def service(mode: str = "Auto"):
    return parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": 1},
            "replicas": 1,
            "scaling": {
                "mode": mode,
                "policy": "Proportional",
                "maxReplicas": 4,
                "target": {"value": 100},
                "scaleUp": {"maxStep": 1},
            },
        }
    )


def test_an_event_for_each_change_of_replicas_and_none_while_nothing_changes() -> None:
    spec = service()
    hot = observations(50, 300)
    st1, ev1 = cycle(spec, {}, hot, {"main": deployment("main", 1, 1)}, T0)
    assert st1 is not None
    assert [e.reason for e in ev1] == ["ScaledUp"]
    assert "1 -> 2" in ev1[0].message and "p99LatencyMs 300ms" in ev1[0].message
    entry = st1["scaling"][0]
    assert (entry["desiredReplicas"], entry["applied"], entry["observed"]) == (2, True, 300)
    assert st1["signals"][0]["p99LatencyMs"] == 300
    # The new replica is not ready yet: warming up, no change, no event, no write.
    deps = {"main": deployment("main", 2, 1)}
    st2, ev2 = cycle(spec, st1, hot, deps, T0 + 1)
    assert st2 is not None and st2["scaling"][0]["reason"].startswith("WarmingUp")
    assert ev2 == []
    st3, ev3 = cycle(spec, st2, observations(50, 310), deps, T0 + 2)
    assert (st3, ev3) == (None, [])  # observed values moved; nothing that matters did


def test_observe_mode_says_it_once() -> None:
    spec = service("Observe")
    hot = observations(50, 300)
    deps = {"main": deployment("main", 1, 1)}
    st, ev = cycle(spec, {}, hot, deps, T0)
    assert st is not None and [e.reason for e in ev] == ["ScaleRecommended"]
    assert st["scaling"][0]["applied"] is False
    for t in (1, 2, 3):
        again, ev = cycle(spec, st, hot, deps, T0 + t)
        assert (again, ev) == (None, [])


def test_missing_data_sets_the_condition_once_and_says_why() -> None:
    spec = service()
    deps = {"main": deployment("main", 3, 3)}
    down = sig.Observations(
        dict.fromkeys(sig.SIGNALS, sig.error("Prometheus at http://p:9090 is unreachable"))
    )
    # Scaled to 3 at peak; then the data goes away.
    scaled = {"scaling": [{"variant": "main", "desiredReplicas": 3, "applied": True}]}
    st, ev = cycle(spec, scaled, down, deps, T0)
    assert st is not None
    cond = next(x for x in st["conditions"] if x["type"] == "MetricsAvailable")
    assert (cond["status"], cond["reason"]) == ("False", "QueryFailed")
    assert "main requestRate: error (Prometheus at http://p:9090 is unreachable)" in cond["message"]
    assert [e.reason for e in ev] == ["MetricsUnavailable"]
    assert st["scaling"][0]["desiredReplicas"] == 3  # held, never the minimum (keda#3065)
    assert cycle(spec, st, down, deps, T0 + 5) == (None, [])
