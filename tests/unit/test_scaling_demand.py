"""Policy Demand: sizing from demand through the M/G/1 model, decision by decision."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sluice.api.v1alpha1 import parse_spec
from sluice.policy import queueing
from sluice.policy import signals as sig
from sluice.policy.scaling import Previous, ScaleInput, decide

T0 = 1_800_000_000.0
V = sig.value


def spec(**over: Any):
    base: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 40,
        "target": {"metric": "p99LatencyMs", "value": 100},
        **over,
    }
    s = parse_spec(
        {"model": {"name": "m", "repository": "s3://b/p", "version": 1}, "scaling": base}
    ).scaling
    assert s is not None and s.policy == "Demand"
    return s


def readings(
    rate: float, *, ready: int, kappa: float = 0.55, compute: float = 20.0, **extra: sig.Reading
) -> dict[str, sig.Reading]:
    """What Prometheus says for an M/G/1 fleet of ``ready`` pods at ``rate`` req/s whose
    queue time is ``kappa`` times the M/M/1 value (0.55: service-time cv 0.3)."""
    rho = rate / ready * compute / 1000
    queue = queueing.mean_wait_ms(min(rho, 0.95), compute, kappa)
    out = {
        sig.REQUEST_RATE: V(rate),
        sig.COMPUTE_TIME: V(compute),
        sig.BATCH_SIZE: V(1.0),
        sig.QUEUE_TIME: V(queue),
        sig.P99_LATENCY: V(120.0),
        sig.RATE_NOW: V(rate),
        sig.RATE_1M_AGO: V(rate),
        sig.RATE_2M_AGO: V(rate),
        sig.RATE_3M_AGO: V(rate),
        sig.PENDING: V(0.0),
        sig.PENDING_GROWTH: V(0.0),
    }
    out.update(extra)
    return out


def steady_input(
    current: int,
    ready: int,
    signals: dict[str, sig.Reading],
    previous: Previous | None = None,
    ready_for: float = 600.0,
    load_times: tuple[float, ...] | None = None,
    **kw: Any,
) -> ScaleInput:
    """Variant main; by default its pods ready for 10 minutes, each loaded in 60 s."""
    return ScaleInput(
        variant="main",
        current=current,
        ready=ready,
        signals=signals,
        previous=previous or Previous(correction=0.55),
        ready_for=ready_for,
        load_times=(60.0,) * ready if load_times is None else load_times,
        **kw,
    )


def test_queueing_model_is_mm1_at_correction_one_and_capacity_inverts_it() -> None:
    # M/M/1: mean wait rho s / (1 - rho).
    assert queueing.mean_wait_ms(0.5, 20, 1.0) == pytest.approx(20.0)
    cap = queueing.capacity("p99LatencyMs", 100, 20, 20, 0.55)
    assert 20 < cap < 30  # cv 0.3 lognormal load-tests at 25.7 req/s: the model is close
    assert queueing.predict_ms("p99LatencyMs", cap, 20, 20, 0.55) == pytest.approx(100, rel=1e-3)
    # More load, more latency; a correction below one, more capacity.
    assert queueing.predict_ms("p99LatencyMs", 10, 20, 20, 0.55) < 100
    assert queueing.capacity("p99LatencyMs", 100, 20, 20, 1.0) < cap
    assert queueing.predict_ms("avgLatencyMs", 49.99, 20, 20, 1.0) > 1000
    assert math.isinf(queueing.predict_ms("queueTimeMs", 50, 20, 20, 1.0))


def test_out_of_overload_in_one_decision_and_every_number_explained() -> None:
    s = spec()
    d = decide(s, steady_input(4, 4, readings(200.0, ready=4)), T0)
    assert d.code == "ScaleUp"
    # 200 req/s at ~24 req/s per replica: the whole gap at once, not 4 -> 8 by steps.
    assert d.desired == math.ceil(200 / d.capacity) and d.desired >= 8
    assert d.demand == pytest.approx(200.0)
    assert d.correction == pytest.approx(0.55, rel=0.05)
    assert d.predicted is not None and d.predicted <= 100
    assert d.load_time == 60.0
    entry = d.to_status()
    assert entry.demand and entry.capacity_per_replica and entry.predicted_latency_ms
    assert entry.load_time_seconds == 60.0
    assert "M/G/1" in d.reason and "p99LatencyMs" in d.reason and "demand 200" in d.reason


def test_starting_pods_are_coming_capacity_and_the_surge_bound_holds() -> None:
    s = spec()
    sig_ = readings(200.0, ready=4)
    first = decide(s, steady_input(4, 4, sig_), T0)
    # Next cycle: the new pods are loading (counted in current), same demand: no more.
    again = decide(
        s,
        steady_input(
            first.desired,
            4,
            sig_,
            starting=first.desired - 4,
            loading_ages=(15.0,) * (first.desired - 4),
        ),
        T0 + 15,
    )
    assert again.desired == first.desired and again.code == "Steady"
    bounded = decide(spec(scaleUp={"maxStep": 2}), steady_input(4, 4, sig_), T0)
    assert bounded.desired == 6


def test_missing_data_freezes_and_zero_traffic_is_a_value() -> None:
    s = spec()
    gone = readings(100.0, ready=4)
    gone[sig.COMPUTE_TIME] = sig.not_a_number("NaN")
    d = decide(s, steady_input(4, 4, gone), T0)
    assert (d.code, d.desired) == ("MetricsUnavailable", 4)
    assert d.missing[0][0] == sig.COMPUTE_TIME
    err = {sig.REQUEST_RATE: sig.error("Prometheus unreachable")}
    assert decide(s, steady_input(4, 4, err), T0).code == "MetricsUnavailable"
    # Idle: down to minReplicas in one step once the stabilisation window passed.
    idle = {sig.REQUEST_RATE: V(0.0), sig.P99_LATENCY: sig.not_a_number("NaN")}
    d1 = decide(s, steady_input(6, 6, idle), T0)
    assert d1.code == "Stabilizing" and d1.desired == 6
    d2 = decide(
        s, steady_input(6, 6, idle, previous=Previous.from_status(d1.to_status())), T0 + 300
    )
    assert (d2.code, d2.desired) == ("ScaleDown", 1)
    assert "no requests" in d2.reason


def test_consolidation_aware_scale_down_reaches_the_size_in_one_step() -> None:
    s = spec(scaleDown={"stabilizationSeconds": 300})
    sig_ = readings(60.0, ready=12)  # 12 replicas for what 3 serve
    d = decide(s, steady_input(12, 12, sig_), T0)
    assert d.code == "Stabilizing"
    # The survivors take all the load: predicted at the smaller size, within target
    # less the tolerance band.
    target_n = d.pending_replicas
    assert target_n is not None and 3 <= target_n <= 4
    assert queueing.predict_ms("p99LatencyMs", 60 / target_n, 20, 20, 0.55) <= 90
    prev = Previous.from_status(d.to_status())
    mid = decide(s, steady_input(12, 12, sig_, previous=prev), T0 + 150)
    assert mid.code == "Stabilizing"
    done = decide(
        s, steady_input(12, 12, sig_, previous=Previous.from_status(mid.to_status())), T0 + 300
    )
    assert (done.code, done.desired) == ("ScaleDown", target_n)


def test_a_sudden_drop_sizes_the_scale_down_from_the_last_scrape() -> None:
    # A burst of 200 req/s on 8 pods has just ended: the minute window still reads
    # 120, the last scrape interval 66. The pending size is the one 66 needs.
    s = spec(scaleDown={"stabilizationSeconds": 120})
    after = readings(120.0, ready=8, **{sig.RATE_NOW: V(66.0)})
    d = decide(s, steady_input(8, 8, after), T0)
    assert d.code == "Stabilizing" and "down to 66 in the last scrape" in d.reason
    cap_down = queueing.capacity("p99LatencyMs", 90, 20, 20, 0.55)
    assert d.pending_replicas == math.ceil(66 / cap_down)
    # Within Poisson noise of the window it is no drop: sized from the window.
    noise = decide(s, steady_input(8, 8, readings(120.0, ready=8, **{sig.RATE_NOW: V(115.0)})), T0)
    assert noise.pending_replicas == math.ceil(120 / cap_down)
    # A pod ready for less than two scrapes adds nothing to irate() yet: no drop.
    fresh = decide(s, steady_input(8, 8, after, ready_for=10.0), T0)
    assert "in the last scrape" not in fresh.reason
    assert fresh.pending_replicas == math.ceil(120 / cap_down)
    # The window still decides when: nothing is removed before it has held.
    later = decide(s, steady_input(8, 8, after, Previous.from_status(d.to_status())), T0 + 60)
    assert later.desired == 8


def test_scale_down_goes_to_the_highest_call_of_the_window_then_the_lower_one() -> None:
    s = spec(scaleDown={"stabilizationSeconds": 300})
    high = decide(s, steady_input(12, 12, readings(150.0, ready=12)), T0)
    p = Previous.from_status(high.to_status())
    low = decide(s, steady_input(12, 12, readings(60.0, ready=12), previous=p), T0 + 60)
    assert low.pending_low is not None and low.pending_low[0] < (low.pending_replicas or 0)
    p = Previous.from_status(low.to_status())
    first = decide(s, steady_input(12, 12, readings(60.0, ready=12), previous=p), T0 + 300)
    assert first.code == "ScaleDown" and first.desired == high.pending_replicas
    p = Previous.from_status(first.to_status())
    c = first.desired
    second = decide(s, steady_input(c, c, readings(60.0, ready=c), previous=p), T0 + 360)
    assert second.code == "ScaleDown" and second.desired == low.pending_low[0]


def test_observe_mode_and_rollout_hold() -> None:
    d = decide(spec(mode="Observe"), steady_input(4, 4, readings(200.0, ready=4)), T0)
    assert d.applied is False and d.desired > 4 and "would scale" in d.reason
    held = decide(
        spec(),
        steady_input(12, 12, readings(60.0, ready=12), hold_down="a canary rollout is in flight"),
        T0,
    )
    assert (held.code, held.desired) == ("HeldDuringRollout", 12)


def test_looks_ahead_on_a_trend_over_the_measured_load_time_but_not_on_a_jump() -> None:
    s = spec()
    ramp = readings(
        130.0,
        ready=6,
        **{sig.RATE_1M_AGO: V(120.0), sig.RATE_2M_AGO: V(110.0), sig.RATE_3M_AGO: V(100.0)},
    )
    d = decide(s, steady_input(6, 6, ramp, load_times=(180.0,)), T0)
    assert d.load_time == 180.0
    assert d.demand == pytest.approx(130 + 10 * 3)  # +10 req/s per minute over 3 minutes
    jump = readings(
        130.0,
        ready=6,
        **{sig.RATE_1M_AGO: V(70.0), sig.RATE_2M_AGO: V(40.0), sig.RATE_3M_AGO: V(40.0)},
    )
    j = decide(s, steady_input(6, 6, jump, load_times=(180.0,)), T0)
    assert j.demand == pytest.approx(130.0)


def test_no_jump_is_read_from_the_instant_rate_right_after_a_scale_down() -> None:
    # 4 -> 3 replicas 30 s ago at 66 req/s: irate() still sums the removed pod's last
    # rate (its samples stay in the range up to the staleness marker) on top of the
    # survivors', which took its share over: 66 + 16.5 "in the last scrape".
    s = spec()
    after = readings(66.0, ready=3, **{sig.RATE_NOW: V(82.5)})
    prev = Previous(correction=0.55, desired=3, last_scale_time=T0 - 30)
    d = decide(s, steady_input(3, 3, after, prev), T0)
    assert d.demand == pytest.approx(66.0)
    assert d.desired == 3 and d.code == "Steady"
    # The same reading a rate window and a scrape after the scale-down is a jump.
    later = decide(
        s, steady_input(3, 3, after, Previous(correction=0.55, last_scale_time=T0 - 80)), T0
    )
    assert later.demand == pytest.approx(82.5)
    assert later.desired > 3
    # After a scale-up whose pod became ready since, it is a jump too: no pod was removed.
    scaled_up = Previous(correction=0.55, desired=3, last_scale_time=T0 - 70)
    up = decide(s, steady_input(3, 3, after, scaled_up, ready_for=5.0), T0)
    assert up.demand == pytest.approx(82.5)
    # An overload still shows in the queue at once: 3 pods hold 600 queued requests.
    over = readings(
        66.0,
        ready=3,
        **{sig.RATE_NOW: V(150.0), sig.PENDING: V(600.0), sig.PENDING_GROWTH: V(40.0)},
    )
    o = decide(s, steady_input(3, 3, over, prev), T0)
    assert o.desired > 3


def test_queue_growth_counts_as_demand_in_overload() -> None:
    # Saturated: 4 pods complete 200 req/s, the queues grow by 50 req/s.
    over = readings(200.0, ready=4, **{sig.PENDING_GROWTH: V(50.0), sig.PENDING: V(500.0)})
    d = decide(spec(), steady_input(4, 4, over), T0)
    # 500 queued on 4 pods is 2.5 s of work each: overloaded. Arrivals are the
    # completions plus the growth; the whole gap is sized in one decision.
    assert d.demand == pytest.approx(250)
    assert "queue growth +50" in d.reason and "overloaded" in d.reason
    assert d.desired >= math.ceil(250 / (d.capacity or 1)) and d.code == "ScaleUp"
    assert d.overloaded_at == T0
    assert d.to_status().overloaded_at == T0


def test_backlog_drains_within_a_load_time_counting_the_pods_already_starting() -> None:
    # 10,000 queued on 4 ready pods (2,500 each, 50 s of work): each old pod must
    # be left most of its speed, so the fleet needs far more than the rate's 4.
    big = readings(100.0, ready=4, **{sig.PENDING: V(10000.0)})
    d = decide(spec(), steady_input(4, 4, big), T0)
    assert d.code == "ScaleUp" and d.desired == 8
    assert "drains within 60s at 8 replicas" in d.reason
    # The 4 pods started for it are loading: the same backlog is not sized again.
    again = decide(
        spec(),
        steady_input(
            8,
            4,
            big,
            previous=Previous.from_status(d.to_status()),
            starting=4,
            loading_ages=(15.0,) * 4,
        ),
        T0 + 15,
    )
    assert again.desired == 8


def test_no_trend_and_no_learning_shortly_after_an_overload() -> None:
    # Completions rose minute by minute because capacity arrived, not arrivals.
    ramp = readings(
        200.0,
        ready=8,
        **{sig.RATE_1M_AGO: V(170.0), sig.RATE_2M_AGO: V(150.0), sig.RATE_3M_AGO: V(140.0)},
    )
    after = Previous(correction=0.55, overloaded_at=T0 - 60)
    d = decide(spec(), steady_input(8, 8, ramp, previous=after), T0)
    assert "trend" not in d.reason and d.demand == pytest.approx(200)
    # A queue time inflated by the drain is not learnt as the model's correction.
    slow = readings(100.0, ready=8, **{sig.QUEUE_TIME: V(500.0)})
    d = decide(spec(), steady_input(8, 8, slow, previous=after), T0)
    assert d.correction == pytest.approx(0.55)
    # Four minutes later both are read again.
    d = decide(spec(), steady_input(8, 8, ramp, previous=after), T0 + 240)
    assert "trend" in d.reason


def test_default_scale_down_window_is_twice_the_measured_load_time() -> None:
    from sluice.policy.scaling import down_stabilization

    assert down_stabilization(spec(), 60.0) == 120.0
    assert down_stabilization(spec(), 10.0) == 60.0
    assert down_stabilization(spec(), 600.0) == 300.0
    assert down_stabilization(spec(), None) == 300.0
    assert down_stabilization(spec(scaleDown={"stabilizationSeconds": 30}), 600.0) == 30.0
    s = spec()
    d = decide(s, steady_input(12, 12, readings(60.0, ready=12)), T0)
    p = Previous.from_status(d.to_status())
    mid = decide(s, steady_input(12, 12, readings(60.0, ready=12), previous=p), T0 + 100)
    assert mid.code == "Stabilizing" and "held for 120s" in mid.reason
    p = Previous.from_status(mid.to_status())
    done = decide(s, steady_input(12, 12, readings(60.0, ready=12), previous=p), T0 + 120)
    assert done.code == "ScaleDown"


def test_a_growing_queue_means_busy_pods_so_the_whole_gap_is_sized_at_once() -> None:
    # 5 s into a step: the last scrape interval saw only part of it (irate 52), but
    # 132 queued on 2 pods (1.3 s of work each) that are busy: they complete at full
    # speed (50 req/s each), and the arrivals are at least that plus the growth.
    onset = readings(
        37.0, ready=2, **{sig.RATE_NOW: V(52.0), sig.PENDING: V(132.0), sig.PENDING_GROWTH: V(8.8)}
    )
    d = decide(spec(), steady_input(2, 2, onset), T0)
    assert d.demand == pytest.approx(2 * 50 + 8.8, rel=0.01)
    assert d.code == "ScaleUp" and d.desired >= 5


def test_a_pod_that_just_became_ready_does_not_inflate_the_overload_estimate() -> None:
    # Its series start and the old pods drain: irate 300 for 200 arriving.
    mixed = readings(
        150.0,
        ready=6,
        **{sig.RATE_NOW: V(300.0), sig.PENDING: V(3000.0), sig.PENDING_GROWTH: V(18.0)},
    )
    prev = Previous(correction=0.55, overloaded_at=T0 - 15, demand=205.0)
    inp = steady_input(
        8, 6, mixed, prev, ready_for=10.0, load_times=(180.0,) * 6, starting=2,
        loading_ages=(170.0, 170.0),
    )  # fmt: skip
    d = decide(spec(), inp, T0)
    assert d.demand == pytest.approx(205.0)
    assert d.desired == max(8, math.ceil(205.0 / (d.capacity or 1)))


# ------------------------------------------- thin traffic and service-time bound

# What the demo read on real Triton from an idle service whose model_warmup request
# (one cold 265 ms request, counted in Triton's metrics) was its only slow one.
THIN = 0.14  # req/s: about 8 requests in a 1 m window


def thin_readings(compute: float, p99: float) -> dict[str, sig.Reading]:
    return readings(
        THIN,
        ready=1,
        compute=compute,
        **{
            sig.QUEUE_TIME: V(0.0),
            sig.P99_LATENCY: V(p99),
            sig.P99_TYPICAL: V(p99),
        },
    )


def test_evidence_minimums_follow_from_the_statistic() -> None:
    from sluice.policy.scaling import MIN_MEAN_SAMPLES, min_samples

    # Below 1 / (1 - p) requests a p-quantile is the slowest single request.
    assert min_samples("p99LatencyMs") == 100
    assert min_samples("p95LatencyMs") == 20
    assert min_samples("avgLatencyMs") == min_samples("queueTimeMs") == MIN_MEAN_SAMPLES


@pytest.mark.parametrize("previous", [Previous(), Previous(correction=0.55)])
def test_one_cold_request_on_an_idle_service_scales_nothing(previous: Previous) -> None:
    # The demo's bug: Demand went 1 -> 3 on this. Replicas cannot make one slow
    # request faster: 265 ms of compute against a 250 ms target, nothing queued.
    s = spec(target={"metric": "p99LatencyMs", "value": 250})
    prev = previous
    cur, t = 1, T0
    for _ in range(8):  # two minutes of cycles, the reading unchanged
        d = decide(s, steady_input(cur, cur, thin_readings(265.0, 265.0), prev), t)
        assert d.desired == 1, d.reason
        assert d.code == "ServiceTimeBound"
        assert "service-time bound" in d.reason and "replicas would not help" in d.reason
        assert "265ms compute" in d.reason
        # Nothing is learnt from eight requests.
        assert d.tail_correction is None
        assert d.correction == previous.correction
        prev = Previous(correction=d.correction, tail_correction=d.tail_correction, desired=cur)
        t += 15


def test_a_slow_request_under_thin_traffic_is_no_evidence_for_a_scale_up() -> None:
    # Feasible target (200 ms compute < 250 ms), one 300 ms request read as the p99
    # of eight: the prior model would add replicas, the reading cannot justify them.
    s = spec(target={"metric": "p99LatencyMs", "value": 250})
    for previous in (Previous(), Previous(correction=1.0)):
        d = decide(s, steady_input(1, 1, thin_readings(200.0, 300.0), previous), T0)
        assert (d.desired, d.code) == (1, "TooFewRequests"), d.reason
        assert "fewer than" in d.reason
    # The same readings over enough requests (2 req/s, 120 in the window) are evidence.
    busy = readings(
        2.0, ready=1, compute=200.0, **{sig.QUEUE_TIME: V(0.0), sig.P99_LATENCY: V(300.0)}
    )
    d = decide(s, steady_input(1, 1, busy, Previous()), T0)
    assert d.code == "ScaleUp" and d.desired > 1, d.reason


def test_overload_at_low_replicas_still_scales_in_one_decision_on_thin_completions() -> None:
    # A slow model (2 s per request) on one replica: it completes 0.5 req/s (30 in the
    # window, 30 per pod: under the p99 minimum), while 2 req/s arrive and the queue
    # grows. The queue is the evidence: the whole gap in one decision.
    s = spec(target={"metric": "p99LatencyMs", "value": 5000})
    r = readings(
        0.5,
        ready=1,
        compute=2000.0,
        **{
            sig.QUEUE_TIME: V(20000.0),
            sig.P99_LATENCY: V(30000.0),
            sig.P99_TYPICAL: V(30000.0),
            sig.PENDING: V(20.0),
            sig.PENDING_GROWTH: V(1.5),
            sig.RATE_NOW: V(0.5),
        },
    )
    for previous in (Previous(), Previous(correction=0.55)):
        d = decide(s, steady_input(1, 1, r, previous), T0)
        assert d.code == "ScaleUp", d.reason
        # 2 req/s at 2 s each is 4 busy replicas, more to drain the backlog.
        assert d.desired >= 5, d.reason


def test_overload_of_a_fast_model_at_one_replica_scales_in_one_decision() -> None:
    s = spec()
    r = readings(
        50.0,
        ready=1,
        **{
            sig.P99_LATENCY: V(2000.0),
            sig.PENDING: V(300.0),
            sig.PENDING_GROWTH: V(150.0),
            sig.RATE_NOW: V(50.0),
        },
    )
    d = decide(s, steady_input(1, 1, r), T0)
    assert d.code == "ScaleUp" and d.desired >= math.ceil(200 / d.capacity), d.reason


def test_last_scrape_batch_is_explained_but_not_sized_from() -> None:
    # Dynamic batching under a rising load: the last scrape's batches are larger
    # than the window's. The decision quotes them and sizes as without them.
    s = spec()
    base = readings(200.0, ready=4)
    plain = decide(s, steady_input(4, 4, base), T0)
    now = {**base, sig.BATCH_SIZE_NOW: V(4.5), sig.COMPUTE_TIME_NOW: V(61.6)}
    d = decide(s, steady_input(4, 4, now), T0)
    assert "(4.5 at 61.6ms in the last scrape)" in d.reason
    assert (d.desired, d.capacity, d.demand) == (plain.desired, plain.capacity, plain.demand)
    assert "last scrape)" not in plain.reason
    # Within one request of the window's batch: nothing to say.
    close = {**base, sig.BATCH_SIZE_NOW: V(1.5), sig.COMPUTE_TIME_NOW: V(22.0)}
    assert "last scrape)" not in decide(s, steady_input(4, 4, close), T0).reason


def test_last_scrape_batch_signals_reach_status() -> None:
    got = sig.to_status({sig.BATCH_SIZE_NOW: V(4.456), sig.COMPUTE_TIME_NOW: V(61.62)}, T0)
    assert (got.batch_size_now, got.compute_time_now_ms) == (4.456, 61.62)
    assert "irate(nv_inference_exec_count" in sig.BUILTIN_QUERIES[sig.BATCH_SIZE_NOW]
    assert sig.BATCH_SIZE_NOW in sig.OPTIONAL and sig.COMPUTE_TIME_NOW in sig.OPTIONAL
