"""The per-InferenceService decision driven as a simulator would: typed in, typed out.

No wire form, no shell: the status the decision returns is the next cycle's
input, the Deployment and its pods are made up, and the clock is a number.
"""

from __future__ import annotations

from dataclasses import replace

from sluice.api.v1alpha1 import InferenceServiceStatus, parse_spec
from sluice.policy import signals as sig
from sluice.policy.control import ServiceInput, decide, uses_metrics
from sluice.policy.readiness import PodState
from tests.support.decide import deployment

T0 = 1_800_000_000.0


def spec(warmup: int = 120):
    return parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": 1},
            "scaling": {
                # The warm-up rule under test is policy Proportional's; policy
                # Demand's handling of starting pods is in test_scaling_demand.py.
                "policy": "Proportional",
                "maxReplicas": 8,
                "target": {"value": 100},
                "warmupSeconds": warmup,
                "scaleUp": {"maxStep": 2},
            },
        }
    )


def hot(rate: float = 50, p99: float = 300) -> sig.Observations:
    key = ("ns", "x", "main")
    return sig.Observations(
        {sig.REQUEST_RATE: {key: sig.value(rate)}, sig.P99_LATENCY: {key: sig.value(p99)}}
    )


def test_a_simulated_scale_up_waits_for_the_starting_pods_then_continues() -> None:
    s = spec()
    status = InferenceServiceStatus()
    base = ServiceInput(
        namespace="ns", name="x", spec=s, status=status, generation=1, observations=hot()
    )
    one_ready = (PodState(name="p0", variant="main", created=T0 - 600, ready=True),)

    # t=0: one ready pod, far over target: up by maxStep.
    out = decide(replace(base, deployments={"main": deployment("main", 1, 1)}, pods=one_ready), T0)
    assert out.status is not None and [e.reason for e in out.events] == ["ScaledUp"]
    status = out.status
    entry = status.scaling_for("main")
    assert entry is not None and (entry.current_replicas, entry.desired_replicas) == (1, 3)
    assert status.scaled_replicas() == {"main": 3}

    # t=30: the two new pods are loading: they count as coming capacity.
    loading = (
        *one_ready,
        PodState(name="p1", variant="main", created=T0 + 1),
        PodState(name="p2", variant="main", created=T0 + 1),
    )
    deps = {"main": deployment("main", 3, 1)}
    out = decide(replace(base, status=status, deployments=deps, pods=loading), T0 + 30)
    assert out.status is not None and out.events == ()
    status = out.status
    entry = status.scaling_for("main")
    assert entry is not None and entry.code == "WarmingUp" and entry.desired_replicas == 3
    # Nothing new: nothing to write.
    again = decide(replace(base, status=status, deployments=deps, pods=loading), T0 + 31)
    assert again.status is None and again.events == ()

    # t=200: loaded after 60 s (creation to ready is in the input), still hot: up again.
    loaded = tuple(
        replace(p, ready=True, ready_since=T0 + 61) if p.name != "p0" else p for p in loading
    )
    assert [p.ready_since - p.created for p in loaded if p.ready_since and p.created] == [60, 60]
    deps = {"main": deployment("main", 3, 3)}
    out = decide(replace(base, status=status, deployments=deps, pods=loaded), T0 + 200)
    assert out.status is not None and [e.reason for e in out.events] == ["ScaledUp"]
    entry = out.status.scaling_for("main")
    assert entry is not None and entry.desired_replicas == 5


def test_a_service_that_reads_no_metrics_gets_no_control_status() -> None:
    s = parse_spec({"model": {"name": "m", "repository": "s3://b/p", "version": 1}})
    assert not uses_metrics(s)
    inp = ServiceInput(
        namespace="ns",
        name="x",
        spec=s,
        status=InferenceServiceStatus(),
        generation=1,
        observations=None,
        deployments={"main": deployment("main", 1, 1)},
    )
    assert decide(inp, T0).status is None
