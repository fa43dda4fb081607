"""The plan: replicas and weights of each variant."""

from __future__ import annotations

from typing import Any

from sluice.api.v1alpha1 import RolloutStatus, parse_spec
from sluice.policy.plan import Observed, Revision, canary_replicas, plan


def spec(**over: Any):
    base: dict[str, Any] = {"model": {"name": "m", "repository": "s3://b/p", "version": 2}}
    base.update(over)
    return parse_spec(base)


AB = {
    "router": {"gateway": {"name": "gw"}},
    "variants": [{"name": "b", "weight": 20, "model": {"version": 3}}],
}


def weights(vs) -> dict[str, int]:
    return {v.name: v.weight for v in vs}


def test_single_variant_takes_all_traffic() -> None:
    vs = plan(spec(replicas=3))
    assert [(v.name, v.version, v.replicas, v.weight) for v in vs] == [("main", 2, 3, 100)]


def test_ab_weights_as_declared_offline() -> None:
    vs = plan(spec(**AB))
    assert weights(vs) == {"main": 80, "b": 20}
    assert vs[1].version == 3


def test_variant_without_ready_pods_gets_no_traffic() -> None:
    vs = plan(spec(**AB), observed=Observed(ready={"main": 2, "b": 0}))
    assert weights(vs) == {"main": 100, "b": 0}


def test_weights_kept_when_nothing_is_ready_yet() -> None:
    # Nothing is ready anywhere: moving weight would not help anyone.
    vs = plan(spec(**AB), observed=Observed(ready={"main": 0, "b": 0}))
    assert weights(vs) == {"main": 80, "b": 20}


def test_ready_variant_keeps_its_weight() -> None:
    vs = plan(spec(**AB), observed=Observed(ready={"main": 1, "b": 1}))
    assert weights(vs) == {"main": 80, "b": 20}


def test_autoscaler_decision_is_clamped_and_only_used_in_auto_mode() -> None:
    scaling = {"minReplicas": 2, "maxReplicas": 5, "target": {"value": 50}}
    auto = spec(replicas=1, scaling=scaling)
    assert plan(auto, observed=Observed(scaled={"main": 9}))[0].replicas == 5
    assert plan(auto, observed=Observed(scaled={"main": 3}))[0].replicas == 3
    assert plan(auto)[0].replicas == 2  # spec.replicas below the minimum
    observe = spec(replicas=1, scaling={**scaling, "mode": "Observe"})
    assert plan(observe, observed=Observed(scaled={"main": 4}))[0].replicas == 2
    off = spec(replicas=1, scaling={**scaling, "mode": "Off"})
    assert plan(off, observed=Observed(scaled={"main": 4}))[0].replicas == 1


def test_canary_in_flight_serves_stable_on_main_and_sizes_canary_ahead() -> None:
    s = spec(replicas=4, router={"gateway": {"name": "gw"}}, rollout={"strategy": "Canary"})
    r = RolloutStatus(
        phase="Progressing",
        stable=Revision(1, "img:old"),
        canary=Revision(2, "img:new"),
        canary_weight=10,
    )
    vs = plan(s, r, Observed(ready={"main": 4, "canary": 1, "baseline": 1}))
    main, canary, baseline = vs
    assert (main.version, main.image, main.weight) == (1, "img:old", 80)
    assert (canary.version, canary.image, canary.weight) == (2, "img:new", 10)
    # Sized for the next step (25%) before it gets that weight.
    assert canary.replicas == canary_replicas(4, 25) == 1
    # The baseline: the stable revision with the canary's replicas and share.
    assert (baseline.name, baseline.version, baseline.image) == ("baseline", 1, "img:old")
    assert (baseline.replicas, baseline.weight) == (canary.replicas, canary.weight)


def test_without_a_baseline_the_canary_is_beside_main_only() -> None:
    s = spec(
        replicas=4,
        router={"gateway": {"name": "gw"}},
        rollout={"strategy": "Canary", "baseline": False},
    )
    r = RolloutStatus(
        phase="Progressing", stable=Revision(1, "o"), canary=Revision(2, "n"), canary_weight=10
    )
    assert [(v.name, v.weight) for v in plan(s, r, Observed(ready={"main": 4, "canary": 1}))] == [
        ("main", 90),
        ("canary", 10),
    ]


def test_a_canary_and_its_baseline_get_traffic_together_or_not_at_all() -> None:
    s = spec(replicas=4, router={"gateway": {"name": "gw"}}, rollout={"strategy": "Canary"})
    r = RolloutStatus(
        phase="Progressing", stable=Revision(1, "o"), canary=Revision(2, "n"), canary_weight=50
    )
    both = plan(s, r, Observed(ready={"main": 4, "canary": 2, "baseline": 2}))
    assert [(v.name, v.weight) for v in both] == [("main", 0), ("canary", 50), ("baseline", 50)]
    one = plan(s, r, Observed(ready={"main": 4, "canary": 2, "baseline": 0}))
    assert [(v.name, v.weight) for v in one] == [("main", 100), ("canary", 0), ("baseline", 0)]


def test_canary_replicas_round_up_and_never_zero() -> None:
    assert canary_replicas(10, 25) == 3
    assert canary_replicas(1, 5) == 1
    assert canary_replicas(8, 50) == 4
