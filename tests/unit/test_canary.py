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
        # Compared with main (the baseline variant has its own tests below).
        "baseline": False,
        "analysis": {
            "maxLatencyRatio": 1.5,
            "maxErrorRate": 0.01,
            "minRequestRate": 1,
            "minSamples": 100,
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
        sig.AVG_LATENCY: sig.value(p99 / 2),
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
    requests: dict[str, str] = field(default_factory=dict)


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
            window_seconds=10,
            requests=c.requests,
        )
        o = advance(s, prev, w, T0 + c.t)
        r = o.rollout
        assert r is not None
        status = wire(r)
        routed_prev = r.canary_weight
        out.append(
            (
                r.phase,
                r.step,
                r.canary_weight,
                r.failed_checks,
                [e.reason for e in o.events if e.reason != "AnalysisVerdict"],
            )
        )
    return out


def last_rollout(s: Any, cycles: list[C]) -> Rollout:
    """The rollout after ``cycles`` from STABLE_IDLE (as :func:`drive` runs them)."""
    status = wire(STABLE_IDLE)
    routed = 0
    for c in cycles:
        w = World(
            spec_revision=Revision(s.model.version, s.triton.image), main_replicas=4,
            main_revision=c.main_revision, main_rolled_out=c.main_rolled_out,
            canary_ready=c.canary_ready, routed_canary_weight=routed, canary=c.canary,
            stable=c.stable, window_seconds=10, requests=c.requests,
        )  # fmt: skip
        r = advance(s, unwire(status), w, T0 + c.t).rollout
        assert r is not None
        status, routed = wire(r), r.canary_weight
    out = unwire(status)
    assert out is not None
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
    # Readings are rates over a 10 s window: one batch of evidence per window.
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=0),  # version change: canary started
            C(1, canary=IDLE, canary_ready=0),  # not ready: no weight
            C(2, canary=IDLE, canary_ready=1),  # ready for 10% (ceil(4*10%) = 1), observed
            C(5, canary_ready=1),  # the first window is not over
            *[C(t, canary_ready=1) for t in (12, 22, 32, 42)],  # batches 1-4: too few
            C(52, canary_ready=1),  # batch 5: the sample gate is met, but 50% needs 2 ready
            C(53, canary_ready=2),  # now 50%
            C(63),  # interval over, every signal passes: promoting
            C(64, main_revision=OLD),  # main still rolling to v2: canary keeps 50%
            C(65, main_revision=NEW, main_rolled_out=False),
            C(66, main_revision=NEW),  # main runs v2 at full: weight to main
            C(67, main_revision=NEW, routed=50),  # the route has not followed yet
            C(68, main_revision=NEW, routed=0),  # it has: done
        ],
        STABLE_IDLE,
    )
    assert got == [
        ("Progressing", -1, 0, 0, ["CanaryStarted"]),
        ("Progressing", -1, 0, 0, []),
        ("Progressing", 0, 10, 0, ["CanaryWeight"]),
        *[("Progressing", 0, 10, 0, [])] * 6,
        ("Progressing", 1, 50, 0, ["CanaryWeight"]),
        ("Promoting", 1, 50, 0, ["CanaryPromoting"]),
        ("Promoting", 1, 50, 0, []),
        ("Promoting", 1, 50, 0, []),
        ("Promoting", 1, 0, 0, ["CanaryWeight"]),
        ("Promoting", 1, 0, 0, []),
        ("Succeeded", -1, 0, 0, ["CanaryPromoted"]),
    ]


def _at(t: float, steps: int = 0) -> Rollout:
    """A canary at its first step with traffic since T0 + t, no evidence yet."""
    from sluice.policy import analysis

    return Rollout(
        phase="Progressing",
        stable=OLD,
        canary=NEW,
        step=steps,
        canary_weight=10,
        step_started_at=T0 + t,
        last_progress_at=T0 + t,
        analysis=analysis.start("canary", "main", T0 + t),
    )


def test_promotion_needs_every_signal_to_pass_not_one_lucky_window() -> None:
    # One window passes, the next fails: the evidence is the sum, and with noise
    # between 1x and 4x of stable no Pass is possible: held at the last step.
    s = spec(steps=[10])
    r: Rollout | None = _at(0)
    for k in range(1, 12):
        c = good(p99=10 if k % 2 else 40)
        o = advance(
            s, r, World(NEW, 4, OLD, True, 1, 10, c, STABLE, window_seconds=10), T0 + 10 * k
        )
        r = o.rollout
        assert r is not None and r.phase == "Progressing", (k, r and r.message)
    assert r is not None and r.analysis is not None
    p99 = next(v for v in r.analysis.signals if v.signal == sig.P99_LATENCY)
    assert p99.verdict == "Inconclusive" and p99.batches == 11
    assert "waiting for every signal to pass" in r.message


def test_promotion_result_and_idempotence() -> None:
    s = spec()
    r = Rollout(phase="Promoting", stable=OLD, canary=NEW, step=1, canary_weight=0)
    w = World(spec_revision=NEW, main_replicas=4, main_revision=NEW, routed_canary_weight=0)
    o = advance(s, r, w, T0)
    assert o.rollout is not None
    assert (o.rollout.phase, o.rollout.stable, o.rollout.canary) == ("Succeeded", NEW, None)
    again = advance(s, o.rollout, w, T0 + 100)
    assert again.rollout == o.rollout and not again.events  # nothing changes, nothing said


def test_slow_canary_is_rolled_back_as_soon_as_the_evidence_is_clear() -> None:
    got = drive(
        spec(),
        [
            C(0, canary=IDLE, canary_ready=1),
            C(1, canary=IDLE, canary_ready=1),
            *[C(t, canary=SLOW) for t in (11, 21, 31, 41)],  # 4 batches: not yet sure
            C(51, canary=SLOW),  # 5th: 4x slower than tolerated: rolling back, weight 0
            C(52, canary=SLOW, routed=10),  # the route still sends 10%: canary kept
            C(53, routed=0),  # route follows: canary removed
            C(100),  # the failed revision is not retried while the spec stays
        ],
        STABLE_IDLE,
    )
    assert got == [
        ("Progressing", -1, 0, 0, ["CanaryStarted"]),
        ("Progressing", 0, 10, 0, ["CanaryWeight"]),
        *[("Progressing", 0, 10, 0, [])] * 4,
        ("RollingBack", 0, 0, 1, ["CanaryRollingBack"]),
        ("RollingBack", 0, 0, 1, []),
        ("RolledBack", -1, 0, 1, ["CanaryRolledBack"]),
        ("RolledBack", -1, 0, 1, []),
    ]


def test_rollback_says_why_with_the_numbers() -> None:
    s = spec()
    r: Rollout | None = _at(0)
    o = None
    for k in range(1, 6):
        w = World(spec_revision=NEW, main_replicas=4, canary=SLOW, stable=STABLE,
                  canary_ready=1, window_seconds=10)  # fmt: skip
        o = advance(s, r, w, T0 + 10 * k)
        r = o.rollout
    assert o is not None and o.rollout is not None and o.rollout.phase == "RollingBack"
    msg = o.rollout.message
    assert "p99LatencyMs Fail: 40 vs baseline 10" in msg
    assert "tolerance 50%" in msg and "99% confidence" in msg and "requests" in msg
    assert any(e.reason == "AnalysisVerdict" and e.type == "Warning" for e in o.events)
    assert condition(o.rollout) == (False, "RollingBack", msg)


def test_abort_promote_and_retry_requests_act_once_per_token() -> None:
    s = spec()
    r = _at(0)
    w = World(NEW, 4, OLD, True, 1, 10, good(), STABLE, window_seconds=10)
    o = advance(s, r, replace(w, requests={"abort": "t1"}), T0 + 1)
    assert o.rollout is not None and o.rollout.phase == "RollingBack"
    assert "aborted by request" in o.rollout.message
    assert o.rollout.handled is not None and o.rollout.handled.abort == "t1"
    done = advance(s, o.rollout, replace(w, requests={"abort": "t1"}, routed_canary_weight=0),
                   T0 + 2).rollout  # fmt: skip
    assert done is not None and done.phase == "RolledBack"
    # The same token again does nothing; a retry token starts the revision again.
    again = advance(s, done, replace(w, requests={"abort": "t1"}), T0 + 3)
    assert again.rollout == done and not again.events
    retried = advance(s, done, replace(w, requests={"abort": "t1", "retry": "r1"}), T0 + 4)
    assert retried.rollout is not None and retried.rollout.phase == "Progressing"
    assert [e.reason for e in retried.events] == ["CanaryStarted"]
    # promote skips the remaining steps and the analysis
    p = advance(s, _at(0), replace(w, requests={"promote": "p1"}), T0 + 1)
    assert p.rollout is not None and p.rollout.phase == "Promoting"
    # a request that does not apply is acknowledged with a Warning, not kept pending
    ig = advance(s, STABLE_IDLE, replace(w, spec_revision=OLD, requests={"promote": "p2"}), T0)
    assert [e.reason for e in ig.events] == ["RequestIgnored"]
    assert ig.rollout is not None and ig.rollout.handled is not None
    assert ig.rollout.handled.promote == "p2"


def test_paused_holds_the_weight_and_the_deadline_but_not_a_rollback() -> None:
    s = spec(paused=True)
    r: Rollout | None = _at(0)
    for k in range(1, 40):  # far past the 5m deadline and the interval
        w = World(NEW, 4, OLD, True, 2, 10, good(), STABLE, window_seconds=10)
        o = advance(s, r, w, T0 + 10 * k)
        r = o.rollout
        assert r is not None and (r.phase, r.canary_weight, r.paused) == ("Progressing", 10, True)
    assert "paused" in r.message
    # resumed: moves on at once (the evidence accumulated while paused counts)
    o = advance(spec(), r, World(NEW, 4, OLD, True, 2, 10, good(), STABLE, window_seconds=10),
                T0 + 400)  # fmt: skip
    assert o.rollout is not None and o.rollout.canary_weight == 50 and not o.rollout.paused
    # a clear regression still rolls back while paused
    r = _at(0)
    for k in range(1, 6):
        o = advance(s, r, World(NEW, 4, OLD, True, 2, 10, SLOW, STABLE, window_seconds=10),
                    T0 + 10 * k)  # fmt: skip
        r = o.rollout
    assert r is not None and r.phase == "RollingBack"


def test_with_a_baseline_the_canary_waits_for_it_and_is_compared_with_it() -> None:
    s = spec(baseline=True)
    w = World(NEW, 4, OLD, True, canary_ready=1, canary=good(), stable=SLOW, baseline={},
              baseline_ready=0, window_seconds=10)  # fmt: skip
    r = Rollout(phase="Progressing", stable=OLD, canary=NEW, step_started_at=T0,
                last_progress_at=T0)  # fmt: skip
    o = advance(s, r, w, T0 + 1)
    assert o.rollout is not None and o.rollout.canary_weight == 0
    assert "baseline" in o.rollout.message
    w = replace(w, baseline_ready=1, baseline=good())
    o = advance(s, r, w, T0 + 2)
    assert o.rollout is not None and o.rollout.canary_weight == 10
    assert o.rollout.analysis is not None and o.rollout.analysis.baseline == "baseline"
    # compared with the baseline (same readings: passes), not with main (4x slower)
    r2: Rollout | None = o.rollout
    for k in range(1, 7):
        r2 = advance(s, r2, w, T0 + 2 + 10 * k).rollout
    assert r2 is not None and r2.analysis is not None and r2.analysis.verdict == "Pass"


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


IDLE_UNTIL_DEADLINE = [
    C(0, canary=IDLE, canary_ready=1),
    C(1, canary=IDLE, canary_ready=1),
    C(200, canary=IDLE),
    C(302, canary=IDLE),  # 5m after the last step (t=1)
]


def test_inconclusive_at_the_progress_deadline_awaits_a_decision() -> None:
    """onInconclusive Pause (default): held at its weight with a Warning, not rolled
    back (a version not shown worse may be fine) nor promoted (it may not be)."""
    got = drive(spec(), [*IDLE_UNTIL_DEADLINE, C(320, canary=IDLE)], STABLE_IDLE)
    assert got[2][:4] == ("Progressing", 0, 10, 0)
    assert got[3][:4] == ("Progressing", 0, 10, 0) and got[3][4] == ["CanaryInconclusive"]
    assert got[4][:4] == ("Progressing", 0, 10, 0) and got[4][4] == []  # said once
    r = last_rollout(spec(), IDLE_UNTIL_DEADLINE)
    assert r.awaiting_decision and "inconclusive at 10% after progressDeadline 5m" in r.message
    assert "sluice promote / sluice abort" in r.message and "errorRate" in r.message


def test_an_inconclusive_rollout_is_decided_by_a_request_or_by_the_evidence() -> None:
    abort = drive(
        spec(), [*IDLE_UNTIL_DEADLINE, C(330, canary=IDLE, requests={"abort": "a1"})], STABLE_IDLE
    )
    assert abort[-1][:3] == ("RollingBack", 0, 0)
    promote = drive(
        spec(), [*IDLE_UNTIL_DEADLINE, C(330, canary=IDLE, requests={"promote": "p1"})],
        STABLE_IDLE,
    )  # fmt: skip
    assert promote[-1][:3] == ("Promoting", 0, 10)
    # Traffic comes back and the evidence passes: the next step, the flag cleared.
    later = [C(310 + 10 * i) for i in range(12)]
    moved = drive(spec(), [*IDLE_UNTIL_DEADLINE, *later], STABLE_IDLE)
    assert ("Progressing", 1, 50) in [g[:3] for g in moved] and moved[-1][0] == "Promoting"
    assert not last_rollout(spec(), [*IDLE_UNTIL_DEADLINE, *later]).awaiting_decision
    # A regression shown while held still rolls back.
    slow = [C(310 + 10 * i, canary=SLOW) for i in range(12)]
    assert "RollingBack" in [
        g[0] for g in drive(spec(), [*IDLE_UNTIL_DEADLINE, *slow], STABLE_IDLE)
    ]


def test_on_inconclusive_rollback_rolls_back_at_the_deadline() -> None:
    s = spec(
        analysis={"maxLatencyRatio": 1.5, "minSamples": 100, "progressDeadline": "5m",
                  "onInconclusive": "Rollback"}
    )  # fmt: skip
    got = drive(s, IDLE_UNTIL_DEADLINE, STABLE_IDLE)
    assert got[2][:4] == ("Progressing", 0, 10, 0)
    assert got[3][:4] == ("RollingBack", 0, 0, 0)


def test_a_canary_that_never_got_traffic_is_rolled_back_at_the_deadline() -> None:
    got = drive(
        spec(), [C(0, canary_ready=0), C(200, canary_ready=0), C(302, canary_ready=0)],
        STABLE_IDLE,
    )  # fmt: skip
    assert got[1][:3] == ("Progressing", -1, 0)
    assert got[2][:3] == ("RollingBack", -1, 0)


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


def test_a_custom_signal_is_judged_and_its_absence_holds_the_weight() -> None:
    s = spec(
        analysis={"maxLatencyRatio": 1.5, "minSamples": 100, "progressDeadline": "5m",
                  "customSignals": [{"name": "margin", "query": "m{{selector}}",
                                     "compare": "Difference", "direction": "higher",
                                     "tolerance": 0.5}]}
    )  # fmt: skip
    start = [C(0, canary_ready=1), C(1, canary_ready=1)]

    def with_margin(c: float, b: float) -> tuple[dict[str, Reading], dict[str, Reading]]:
        return {**good(), "margin": sig.value(c)}, {**STABLE, "margin": sig.value(b)}

    worse = [C(10 * i + 11, *with_margin(1.0, 3.0)) for i in range(8)]
    got = drive(s, start + worse, STABLE_IDLE)
    assert "RollingBack" in [g[0] for g in got]
    r = last_rollout(s, start + worse)
    assert "margin Fail" in r.message and "tolerance -0.5" in r.message
    # No value for the custom signal: never acted on (held, with why).
    missing = [C(10 * i + 11) for i in range(8)]
    got = drive(s, start + missing, STABLE_IDLE)
    assert [g[:3] for g in got[2:]] == [("Progressing", 0, 10)] * 8
    assert "margin" in last_rollout(s, start + missing).message
