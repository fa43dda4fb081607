"""The canary state machine, table-driven over observation sequences.

Each cycle gives the clock and what the shell observed; the state is carried
from one cycle to the next through the serialised status
(``InferenceServiceStatus.to_dict``/``from_dict``), as the operator does across
cycles and restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from sluice.api.v1alpha1 import InferenceServiceStatus, parse_spec
from sluice.policy import signals as sig
from sluice.policy.canary import Rollout, World, advance, analyse, condition
from sluice.policy.plan import Observed, Revision, plan
from sluice.policy.signals import Reading

T0 = 1_800_000_000.0
OLD = Revision(1, "triton:24.10")
NEW = Revision(2, "triton:24.10")
NEWER = Revision(3, "triton:24.10")


def spec(version: int = 2, **rollout: Any):
    r: dict[str, Any] = {
        "strategy": "Canary",
        "steps": [10, 50],
        "interval": "10s",
        "analysis": {
            "maxLatencyRatio": 1.5,
            "maxErrorRate": 0.01,
            "minRequestRate": 1,
            "failureThreshold": 2,
            "progressDeadline": "5m",
        },
    }
    r.update(rollout)
    return parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/p", "version": version},
            "triton": {"image": "triton:24.10"},
            "replicas": 4,
            "router": {"gateway": {"name": "gw"}},
            "rollout": r,
        }
    )


def good(rate: float = 20, p99: float = 12, err: float = 0.0) -> dict[str, Reading]:
    return {
        sig.REQUEST_RATE: sig.value(rate),
        sig.ERROR_RATE: sig.value(err),
        sig.P99_LATENCY: sig.value(p99),
    }


STABLE = good(p99=10)
SLOW = good(p99=40)
IDLE = {
    sig.REQUEST_RATE: sig.value(0),
    sig.ERROR_RATE: sig.not_a_number("NaN"),
    sig.P99_LATENCY: sig.not_a_number("NaN"),
}
DOWN = dict.fromkeys(sig.SIGNALS, sig.error("Prometheus at http://prom:9090 is unreachable"))


@dataclass
class C:
    """One cycle: seconds after T0 and what was observed."""

    t: float
    canary: dict[str, Reading] = field(default_factory=lambda: good())
    stable: dict[str, Reading] = field(default_factory=lambda: dict(STABLE))
    canary_ready: int = 4
    main_revision: Revision | None = OLD
    main_rolled_out: bool = True
    routed: int | None = None  # None: the canary weight the state asks for (the route follows)


def drive(
    s: Any, cycles: list[C], start: Rollout | None
) -> list[tuple[str, int, int, int, list[str]]]:
    status = wire(start)
    out = []
    routed_prev = start.canary_weight if start else 0
    for c in cycles:
        prev = unwire(status)
        w = World(
            spec_revision=Revision(s.model.version, s.triton.image),
            main_replicas=4,
            main_revision=c.main_revision,
            main_rolled_out=c.main_rolled_out,
            canary_ready=c.canary_ready,
            routed_canary_weight=routed_prev if c.routed is None else c.routed,
            canary=c.canary,
            stable=c.stable,
        )
        o = advance(s, prev, w, T0 + c.t)
        r = o.rollout
        assert r is not None
        status = wire(r)
        routed_prev = r.canary_weight
        out.append(
            (r.phase, r.step, r.canary_weight, r.failed_checks, [e.reason for e in o.events])
        )
    return out


def wire(r: Rollout | None) -> dict[str, Any]:
    """status, as written to the apiserver."""
    return InferenceServiceStatus(rollout=r).to_dict()


def unwire(status: dict[str, Any] | None) -> Rollout | None:
    return InferenceServiceStatus.from_dict(status).rollout


STABLE_IDLE = Rollout(phase="Idle", stable=OLD, message="v1 stable")


def test_first_deploy_makes_the_spec_revision_stable_without_a_canary() -> None:
    o = advance(spec(version=1), None, World(spec_revision=OLD, main_replicas=4), T0)
    assert o.rollout is not None
    assert (o.rollout.phase, o.rollout.stable, o.rollout.canary) == ("Idle", OLD, None)
    assert "first revision" in o.rollout.message


def test_stable_is_taken_from_what_main_runs_when_status_has_none() -> None:
    # Switching an existing service to Canary together with a version change.
    o = advance(
        spec(version=2), None, World(spec_revision=NEW, main_replicas=4, main_revision=OLD), T0
    )
    assert o.rollout is not None
    assert (o.rollout.phase, o.rollout.stable, o.rollout.canary) == ("Progressing", OLD, NEW)


def test_good_canary_goes_through_every_step_and_is_promoted() -> None:
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=0),  # version change: canary started
            C(1, canary=IDLE, canary_ready=0),  # not ready: no weight
            C(2, canary=IDLE, canary_ready=1),  # ready for 10% (ceil(4*10%) = 1), observed
            C(5),  # interval not over: nothing
            C(12, canary_ready=1),  # passed, but needs 2 ready for 50%: held
            C(13, canary_ready=2),  # now 50%
            C(23),  # passed at the last step: promoting
            C(24, main_revision=OLD),  # main still rolling to v2: canary keeps 50%
            C(25, main_revision=NEW, main_rolled_out=False),
            C(26, main_revision=NEW),  # main runs v2 at full: weight to main
            C(27, main_revision=NEW, routed=50),  # the route has not followed yet
            C(28, main_revision=NEW, routed=0),  # it has: done
        ],
        STABLE_IDLE,
    )
    assert got == [
        ("Progressing", -1, 0, 0, ["CanaryStarted"]),
        ("Progressing", -1, 0, 0, []),
        ("Progressing", 0, 10, 0, ["CanaryWeight"]),
        ("Progressing", 0, 10, 0, []),
        ("Progressing", 0, 10, 0, []),
        ("Progressing", 1, 50, 0, ["CanaryWeight"]),
        ("Promoting", 1, 50, 0, ["CanaryPromoting"]),
        ("Promoting", 1, 50, 0, []),
        ("Promoting", 1, 50, 0, []),
        ("Promoting", 1, 0, 0, ["CanaryWeight"]),
        ("Promoting", 1, 0, 0, []),
        ("Succeeded", -1, 0, 0, ["CanaryPromoted"]),
    ]


def test_promotion_result_and_idempotence() -> None:
    s = spec()
    r = Rollout(phase="Promoting", stable=OLD, canary=NEW, step=1, canary_weight=0)
    w = World(spec_revision=NEW, main_replicas=4, main_revision=NEW, routed_canary_weight=0)
    o = advance(s, r, w, T0)
    assert o.rollout is not None
    assert (o.rollout.phase, o.rollout.stable, o.rollout.canary) == ("Succeeded", NEW, None)
    again = advance(s, o.rollout, w, T0 + 100)
    assert again.rollout == o.rollout and not again.events  # nothing changes, nothing said


def test_slow_canary_is_rolled_back_after_failure_threshold() -> None:
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=1),
            C(1, canary=IDLE, canary_ready=1),
            C(11, canary=SLOW),  # 40ms > 1.5 x 10ms: check 1 of 2 failed
            C(15, canary=SLOW),  # interval not over
            C(21, canary=SLOW),  # check 2 of 2: rolling back, weight 0 at once
            C(22, canary=SLOW, routed=10),  # the route still sends 10%: canary kept
            C(23, routed=0),  # route follows: canary removed
            C(100),  # the failed revision is not retried while the spec stays
        ],
        STABLE_IDLE,
    )
    assert got == [
        ("Progressing", -1, 0, 0, ["CanaryStarted"]),
        ("Progressing", 0, 10, 0, ["CanaryWeight"]),
        ("Progressing", 0, 10, 1, ["CanaryCheckFailed"]),
        ("Progressing", 0, 10, 1, []),
        ("RollingBack", 0, 0, 2, ["CanaryRollingBack"]),
        ("RollingBack", 0, 0, 2, []),
        ("RolledBack", -1, 0, 2, ["CanaryRolledBack"]),
        ("RolledBack", -1, 0, 2, []),
    ]


def test_rollback_says_why() -> None:
    s = spec()
    r = Rollout(
        phase="Progressing",
        stable=OLD,
        canary=NEW,
        step=0,
        canary_weight=10,
        failed_checks=1,
        step_started_at=T0,
        last_progress_at=T0,
    )
    w = World(spec_revision=NEW, main_replicas=4, canary=SLOW, stable=STABLE, canary_ready=1)
    o = advance(s, r, w, T0 + 10)
    assert o.rollout is not None and o.rollout.phase == "RollingBack"
    assert "p99LatencyMs 40ms > 1.5 x stable 10ms" in o.rollout.message
    assert "failureThreshold 2" in o.rollout.message
    assert o.events[0].type == "Warning"
    assert condition(o.rollout) == (False, "RollingBack", o.rollout.message)


def test_a_new_spec_after_rollback_starts_a_new_canary() -> None:
    rolled = Rollout(phase="RolledBack", stable=OLD, canary=NEW, failed_checks=2)
    o = advance(spec(version=3), rolled, World(spec_revision=NEWER, main_replicas=4), T0)
    assert o.rollout is not None
    assert (o.rollout.phase, o.rollout.canary, o.rollout.failed_checks) == (
        "Progressing",
        NEWER,
        0,
    )


@pytest.mark.parametrize(
    ("name", "canary", "stable"),
    [
        ("no traffic (flagger#1035)", IDLE, STABLE),
        ("traffic under minRequestRate", good(rate=0.5), STABLE),
        ("Prometheus down", DOWN, DOWN),
        (
            "canary latency NaN (flagger#1095)",
            {**good(), sig.P99_LATENCY: sig.not_a_number()},
            STABLE,
        ),
        ("canary error rate missing", {**good(), sig.ERROR_RATE: sig.no_data()}, STABLE),
        ("stable latency missing", good(), {**STABLE, sig.P99_LATENCY: sig.no_data()}),
    ],
)
def test_inconclusive_analysis_holds_weight_without_counting_a_failure(
    name: str, canary: dict[str, Reading], stable: dict[str, Reading]
) -> None:
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=1),
            C(1, canary=IDLE, canary_ready=1),
            C(11, canary=canary, stable=stable),
            C(60, canary=canary, stable=stable),
            C(250, canary=canary, stable=stable),
        ],
        STABLE_IDLE,
    )
    assert [g[:4] for g in got[2:]] == [("Progressing", 0, 10, 0)] * 3, name


def test_inconclusive_until_the_progress_deadline_then_rollback() -> None:
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=1),
            C(1, canary=IDLE, canary_ready=1),
            C(200, canary=IDLE),
            C(302, canary=IDLE),  # 5m after the last step (t=1)
        ],
        STABLE_IDLE,
    )
    assert got[2][:4] == ("Progressing", 0, 10, 0)
    assert got[3][:4] == ("RollingBack", 0, 0, 0)


def test_a_canary_prometheus_cannot_see_gets_no_traffic() -> None:
    got = drive(
        spec(),
        [C(0, canary=DOWN, canary_ready=1), C(1, canary=DOWN, canary_ready=1)],
        STABLE_IDLE,
    )
    assert got[1][:3] == ("Progressing", -1, 0)
    r = Rollout(
        phase="Progressing", stable=OLD, canary=NEW, step_started_at=T0, last_progress_at=T0
    )
    o = advance(
        spec(), r, World(spec_revision=NEW, main_replicas=4, canary=DOWN, canary_ready=1), T0
    )
    assert o.check is not None and o.check.missing  # reported as missing metrics


def test_error_rate_and_absolute_latency_limits_fail() -> None:
    a = spec(analysis={"maxErrorRate": 0.01, "maxLatencyMs": 30}).rollout.analysis
    assert analyse(a, sig.P99_LATENCY, good(err=0.05), STABLE).verdict == "Fail"
    slow_both = {**STABLE, sig.P99_LATENCY: sig.value(35)}
    assert analyse(a, sig.P99_LATENCY, good(p99=35), slow_both).verdict == "Fail"
    ok = analyse(a, sig.P99_LATENCY, good(p99=12), STABLE)
    assert ok.verdict == "Pass"
    assert "errorRate 0.00% <= 1.00%" in ok.detail and "<= maxLatencyMs 30" in ok.detail


def test_spec_changes_during_a_rollout() -> None:
    r = Rollout(
        phase="Progressing",
        stable=OLD,
        canary=NEW,
        step=0,
        canary_weight=10,
        step_started_at=T0,
        last_progress_at=T0,
    )
    # Back to the stable version: the canary leaves, weight first.
    back = advance(spec(version=1), r, World(spec_revision=OLD, main_replicas=4), T0 + 1)
    assert back.rollout is not None
    assert (back.rollout.phase, back.rollout.canary_weight) == ("RollingBack", 0)
    # Yet another version: the canary restarts with it, without traffic.
    newer = advance(spec(version=3), r, World(spec_revision=NEWER, main_replicas=4), T0 + 1)
    assert newer.rollout is not None
    assert (newer.rollout.phase, newer.rollout.canary, newer.rollout.canary_weight) == (
        "Progressing",
        NEWER,
        0,
    )


def test_rolling_strategy_drops_the_rollout_and_says_so_mid_flight() -> None:
    s = parse_spec({"model": {"name": "m", "repository": "s3://b/p", "version": 2}})
    r = Rollout(phase="Progressing", stable=OLD, canary=NEW, step=0, canary_weight=10)
    o = advance(s, r, World(spec_revision=NEW, main_replicas=1), T0)
    assert o.rollout is None and [e.reason for e in o.events] == ["CanaryAbandoned"]
    assert advance(s, None, World(spec_revision=NEW, main_replicas=1), T0).rollout is None


def test_restart_continues_from_status() -> None:
    """A new operator process reads status.rollout and carries on identically."""
    s = spec()
    r = Rollout(
        phase="Progressing",
        stable=OLD,
        canary=NEW,
        step=0,
        canary_weight=10,
        failed_checks=1,
        step_started_at=T0,
        last_progress_at=T0,
        message="x",
    )
    restored = unwire(wire(r))
    assert restored == r
    w = World(spec_revision=NEW, main_replicas=4, canary=good(), stable=STABLE, canary_ready=2)
    assert advance(s, r, w, T0 + 10) == advance(s, restored, w, T0 + 10)


# ------------------------------------------------------------------ the plan


def test_plan_keeps_main_on_stable_until_promotion() -> None:
    s = spec(version=2)
    # Through the serialised status: the same parsing the shell uses.
    main = lambda r: plan(s, unwire(wire(r)), Observed())[0]  # noqa: E731
    # A version change before the control loop started the canary: main waits.
    assert main(Rollout(phase="Idle", stable=OLD)).version == 1
    # Rolled back: the failed version never reaches main.
    assert main(Rollout(phase="RolledBack", stable=OLD, canary=NEW)).version == 1
    progressing = Rollout(phase="Progressing", stable=OLD, canary=NEW, canary_weight=10)
    assert main(progressing).version == 1
    promoting = replace(progressing, phase="Promoting")
    assert main(promoting).version == 2
    rolling_back = replace(progressing, phase="RollingBack", canary_weight=0)
    vs = plan(s, unwire(wire(rolling_back)), Observed())
    assert [(v.name, v.version, v.weight) for v in vs] == [("main", 1, 100), ("canary", 2, 0)]
    # No stable yet (first deploy): the spec.
    assert main(None).version == 2


def test_rolling_strategy_ignores_a_leftover_rollout() -> None:
    s = parse_spec({"model": {"name": "m", "repository": "s3://b/p", "version": 2}})
    st = wire(Rollout(phase="Progressing", stable=OLD, canary=NEW, canary_weight=10))
    vs = plan(s, unwire(st), Observed())
    assert [(v.name, v.version, v.weight) for v in vs] == [("main", 2, 100)]


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        ({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, 2, 2),
        # Mid-rollout: 2 old ready pods and 1 new one not ready yet: none known ready.
        ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2}, 2, 0),
        ({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3}, 2, 2),
        # The Deployment controller has not seen the new template yet.
        ({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}, 2, 0),
    ],
)
def test_ready_pods_of_the_current_template_are_counted_conservatively(
    status: dict[str, int], generation: int, expected: int
) -> None:
    from sluice.reconcile.deployments import observe

    dep = {"metadata": {"name": "x-canary", "generation": generation}, "status": status}
    assert observe(dep).current_ready == expected


# ------------------------------------- through the whole per-service decision


def test_the_service_decision_starts_a_canary_and_gives_it_traffic_once_seen() -> None:
    from tests.support.decide import cycle, deployment

    def obs(canary: dict[str, Reading] | None) -> sig.Observations:
        by: dict[str, dict[sig.Key, Reading]] = {s: {} for s in sig.SIGNALS}
        for variant, readings in (("main", STABLE), ("canary", canary or {})):
            for signal, r in readings.items():
                by[signal][("ns", "x", variant)] = r
        return sig.Observations(by)

    v1, v2 = spec(version=1), spec(version=2)
    main = {"main": deployment("main", 4, 4, version=1, image="triton:24.10")}
    st, ev = cycle(v1, {}, obs(None), main, T0)
    assert st is not None and st["rollout"]["phase"] == "Idle" and ev == []
    assert st["rollout"]["stable"] == {"version": 1, "image": "triton:24.10"}
    # The spec moves to version 2: a canary starts beside the stable version.
    st, ev = cycle(v2, st, obs(None), main, T0 + 1)
    assert st is not None and [e.reason for e in ev] == ["CanaryStarted"]
    assert (st["rollout"]["phase"], st["rollout"]["canaryWeight"]) == ("Progressing", 0)
    # Ready, but not seen by Prometheus yet: no traffic, the metrics condition says
    # why, and no write without news.
    deps = {**main, "canary": deployment("canary", 1, 1, version=2, image="triton:24.10")}
    st, ev = cycle(v2, st, obs(None), deps, T0 + 2)
    assert st is not None and [e.reason for e in ev] == ["MetricsUnavailable"]
    assert st["rollout"]["canaryWeight"] == 0
    assert "not observed yet" in st["rollout"]["message"]
    assert cycle(v2, st, obs(None), deps, T0 + 3) == (None, [])
    # Seen: its first share.
    st, ev = cycle(v2, st, obs(good()), deps, T0 + 4)
    assert st is not None and [e.reason for e in ev] == ["CanaryWeight", "MetricsAvailable"]
    assert st["rollout"]["canaryWeight"] == 10
    cond = {c["type"]: c for c in st["conditions"]}["Canary"]
    assert (cond["status"], cond["reason"]) == ("True", "Progressing")
