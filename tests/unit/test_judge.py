"""The statistical judge: its intervals, verdicts and their stated confidence."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from sluice.policy import judge as J
from sluice.policy.signals import AVG_LATENCY, ERROR_RATE, P99_LATENCY, REQUEST_RATE, value

LAT = J.Criterion(P99_LATENCY, "ratio", 0.15)
ERR = J.Criterion(ERROR_RATE, "proportion", 0.01)
GATE = J.Gate()


def batch(n: float, f: float, p99: float, mean: float | None = None) -> J.Batch:
    vals = {P99_LATENCY: p99}
    if mean is not None:
        vals[AVG_LATENCY] = mean
    return J.Batch(n, f, vals)


def run(
    rng: random.Random,
    batches: int,
    ratio: float = 1.0,
    noise: float = 0.1,
    n: int = 600,
    p_base: float = 0.01,
    p_cand: float = 0.01,
    crit: tuple[J.Criterion, ...] = (LAT, ERR),
) -> list[dict[str, J.Judgement]]:
    """Judgements after every batch of a simulated rollout."""
    ev: dict[str, J.Evidence] = {}
    out = []
    for _ in range(batches):
        load = math.exp(rng.gauss(0, 0.3))  # shared by both sides: cancels in the ratio
        b = batch(n, _binom(rng, n, p_base), 50 * load * math.exp(rng.gauss(0, noise)))
        c = batch(n, _binom(rng, n, p_cand), 50 * ratio * load * math.exp(rng.gauss(0, noise)))
        ev = J.accumulate(ev, crit, c, b, GATE)
        out.append({k.signal: J.judge(k, ev.get(k.signal), GATE) for k in crit})
    return out


def _binom(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def test_t_halfwidth_is_infinite_without_enough_batches_and_shrinks() -> None:
    assert J.t_halfwidth(1, 1.0, 0.01) == math.inf
    assert J.t_halfwidth(4, 1.0, 0.01) == math.inf  # c = 2: finite from 5 batches
    widths = [J.t_halfwidth(n, 1.0, 0.01) for n in (5, 10, 20, 50, 200)]
    assert all(a > b for a, b in itertools.pairwise(widths))
    # wider than a fixed-n t interval (it holds at every n at once), but not absurdly
    assert 2.576 / math.sqrt(200) < widths[-1] < 3 * 2.576 / math.sqrt(200)


def test_mixture_halfwidth_scales_with_the_standard_error() -> None:
    a = J.mixture_halfwidth(1e-6, 0.01, 0.01)
    b = J.mixture_halfwidth(4e-6, 0.01, 0.01)
    assert 1.5 < b / a < 2.5
    assert J.mixture_halfwidth(0.0, 0.01, 0.01) == 0.0


def test_no_evidence_is_inconclusive_not_a_failure() -> None:
    for c in (LAT, ERR):
        j = J.judge(c, None)
        assert j.verdict == "Inconclusive"
        assert j.samples == 0


def test_a_window_with_too_few_requests_adds_nothing() -> None:
    ev = J.accumulate({}, [LAT, ERR], batch(5, 5, 500), batch(600, 0, 50))
    assert ev == {}


def test_a_clear_regression_fails_within_a_few_batches_ignoring_the_sample_gate() -> None:
    rng = random.Random(1)
    hist = run(rng, 8, ratio=2.0)
    first = next(i for i, h in enumerate(hist) if h[P99_LATENCY].verdict == "Fail")
    assert first <= 5
    j = hist[first][P99_LATENCY]
    assert j.effect is not None and 1.7 < j.effect < 2.3
    assert j.lower is not None and j.lower > 1.15


def test_identical_versions_pass_once_the_evidence_is_there() -> None:
    rng = random.Random(2)
    hist = run(rng, 30)
    assert all(h[P99_LATENCY].verdict != "Fail" and h[ERROR_RATE].verdict != "Fail" for h in hist)
    assert hist[0][P99_LATENCY].verdict == "Inconclusive"
    assert hist[-1][P99_LATENCY].verdict == "Pass"
    assert hist[-1][ERROR_RATE].verdict == "Pass"
    assert J.overall(hist[-1].values()) == "Pass"


def test_error_rate_regression_fails_on_counts() -> None:
    rng = random.Random(3)
    hist = run(rng, 10, p_cand=0.05)
    first = next(i for i, h in enumerate(hist) if h[ERROR_RATE].verdict == "Fail")
    assert first <= 2
    j = hist[first][ERROR_RATE]
    assert j.candidate is not None and j.candidate > 0.03
    assert j.baseline is not None and j.baseline < 0.02
    assert "tolerance" in j.describe() and "requests" in j.describe()


def test_zero_failures_on_both_sides_pass() -> None:
    rng = random.Random(4)
    hist = run(rng, 6, p_base=0.0, p_cand=0.0)
    assert hist[-1][ERROR_RATE].verdict == "Pass"


@pytest.mark.parametrize("ratio", [1.0, 1.15])
def test_false_failures_stay_below_alpha_under_continuous_monitoring(ratio: float) -> None:
    """Looked at after every batch for 60 batches, identical (and exactly-at-tolerance)
    candidates fail in at most alpha of the runs."""
    rng = random.Random(5)
    fails = 0
    runs = 300
    for _ in range(runs):
        hist = run(rng, 60, ratio=ratio, noise=0.2, crit=(LAT,))
        fails += any(h[P99_LATENCY].verdict == "Fail" for h in hist)
    assert fails / runs <= GATE.alpha + 0.01


def test_error_false_failures_stay_below_alpha() -> None:
    rng = random.Random(6)
    fails = 0
    runs = 200
    for _ in range(runs):
        hist = run(rng, 40, p_base=0.02, p_cand=0.03, crit=(ERR,))  # exactly +1 pp
        fails += any(h[ERROR_RATE].verdict == "Fail" for h in hist)
    assert fails / runs <= GATE.alpha + 0.02


def test_higher_is_better_flips_the_direction() -> None:
    crit = J.Criterion("conversion", "ratio", 0.1, direction="higher")
    ev: dict[str, J.Evidence] = {}
    rng = random.Random(7)
    for _ in range(12):
        ev = J.accumulate(
            ev,
            [crit],
            J.Batch(500, 0, {"conversion": 0.05 * math.exp(rng.gauss(0, 0.05))}),
            J.Batch(500, 0, {"conversion": 0.10 * math.exp(rng.gauss(0, 0.05))}),
        )
    j = J.judge(crit, ev["conversion"])
    assert j.verdict == "Fail"  # half the conversions: worse
    assert J.better(j)[0] == "baseline"


def test_ab_better_names_the_faster_variant_and_none_for_identical() -> None:
    rng = random.Random(8)
    fast = run(rng, 30, ratio=0.8, crit=(LAT,))[-1][P99_LATENCY]
    assert J.better(fast)[0] == "candidate"
    same = run(rng, 30, ratio=1.0, crit=(LAT,))[-1][P99_LATENCY]
    assert J.better(same)[0] == "none"


def test_evidence_round_trips_through_status() -> None:
    rng = random.Random(9)
    ev: dict[str, J.Evidence] = {}
    for _ in range(7):
        ev = J.accumulate(ev, [LAT, ERR], batch(700, 7, 60 * rng.random() + 1), batch(650, 3, 50))
    for s, e in ev.items():
        back = J.Evidence.from_status(s, e.to_status())
        crit = LAT if s == P99_LATENCY else ERR
        assert J.judge(crit, back).to_status() == J.judge(crit, e).to_status()
    j = J.judge(LAT, ev[P99_LATENCY]).to_status()
    assert {"signal", "verdict", "tolerance", "samples", "confidence"} <= set(j)


def test_batch_from_readings_turns_rates_into_counts() -> None:
    b = J.Batch.from_readings(
        {REQUEST_RATE: value(10), ERROR_RATE: value(0.02), P99_LATENCY: value(40)}, 30
    )
    assert b is not None
    assert b.requests == pytest.approx(300) and b.failures == pytest.approx(6)
    assert b.values == {P99_LATENCY: 40}
    assert J.Batch.from_readings({}, 30) is None


# ------------------------------------------------------------ custom signals

CONV = J.Criterion("conversionRate", "difference", 0.01, "higher")  # absolute tolerance


def test_difference_signals_judge_the_mean_per_window_difference() -> None:
    """A Difference custom signal: one observation per window (candidate - baseline),
    any sign allowed; tolerance in the signal's unit, direction higher-is-better."""
    rng = random.Random(5)

    def judged(drop: float) -> J.Judgement:
        ev: dict[str, J.Evidence] = {}
        for _ in range(30):
            base = 0.10 + rng.gauss(0, 0.005)
            cand = base - drop + rng.gauss(0, 0.005)
            ev = J.accumulate(
                ev,
                [CONV],
                J.Batch(600, 0, {CONV.signal: cand}),
                J.Batch(600, 0, {CONV.signal: base}),
            )
        return J.judge(CONV, ev[CONV.signal])

    bad = judged(0.03)  # 3 points lower, tolerance 1 point: worse
    assert bad.verdict == "Fail" and bad.upper is not None and bad.upper < -0.01
    assert bad.batches == 30 and bad.samples == 30 * 600
    assert "difference" in bad.describe() and "tolerance -0.01" in bad.describe()
    same = judged(0.0)
    assert same.verdict == "Pass" and same.effect is not None and abs(same.effect) < 0.005
    assert same.candidate is not None and abs(same.candidate - 0.10) < 0.01  # arithmetic mean
    # Two-sided (experiments): the higher one is better.
    better = J.judge(J.Criterion("conversionRate", "difference", 0.0, "higher"),
                     J.Evidence.from_status("conversionRate", {"batches": 10, "sumX": 0.2,
                                            "sumX2": 0.0041, "candidateRequests": 6000,
                                            "baselineRequests": 6000}))  # fmt: skip
    assert J.better(better)[0] == "candidate"


def test_a_zero_or_negative_value_is_evidence_for_a_difference_not_for_a_ratio() -> None:
    ratio = J.Criterion("margin", "ratio", 0.1)
    diff = J.Criterion("margin", "difference", 0.1)
    c, b = J.Batch(100, 0, {"margin": -1.0}), J.Batch(100, 0, {"margin": 2.0})
    assert "margin" not in J.accumulate({}, [ratio], c, b)
    assert J.accumulate({}, [diff], c, b)["margin"].sum_x == -3.0
