"""The load generator's pure parts (hack/load.py): shapes, percentiles, intervals, summary.

No server: results are given as the workers would record them.
"""

from __future__ import annotations

import math

import pytest

from tests.support.hack import hack_module

load_mod = hack_module("load")
Result = load_mod.Result


def test_percentile_is_the_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]  # 1..100
    assert load_mod.percentile(xs, 0.5) == 50
    assert load_mod.percentile(xs, 0.99) == 99
    assert load_mod.percentile(xs, 1.0) == 100
    assert load_mod.percentile([7.0], 0.99) == 7.0
    assert load_mod.percentile(list(reversed(xs)), 0.95) == 95  # order does not matter
    assert math.isnan(load_mod.percentile([], 0.5))  # no data is not 0


def test_shapes() -> None:
    steady = load_mod.shape_fn("steady", 30, 60)
    assert steady(0) == steady(59) == 30
    ramp = load_mod.shape_fn("ramp", 30, 60)
    assert ramp(0) == pytest.approx(3) and ramp(30) == pytest.approx(16.5)
    assert ramp(60) == ramp(90) == pytest.approx(30)
    burst = load_mod.shape_fn("burst", 40, 60)
    assert [burst(t) for t in (0, 19.9, 20, 39.9, 40)] == [10, 10, 40, 40, 10]
    with pytest.raises(ValueError, match="unknown shape"):
        load_mod.shape_fn("spiky", 1, 1)


def loaded(results: list[tuple[float, float, str, int | None]], rate: float = 10.0) -> object:
    load = load_mod.Load("127.0.0.1:1/ns/m", "m", rate=lambda t: rate)
    load.results = [Result(s, ms, e, v) for s, ms, e, v in results]
    return load


def test_an_interval_counts_requests_by_when_they_finished() -> None:
    rs = [(t / 10, 100.0, "", 1) for t in range(100)]  # 10/s for 10 s, 100 ms each
    rs.append((3.0, 2500.0, "", 1))  # sent at 3 s, done at 5.5 s
    rs.append((4.0, 50.0, "503", None))
    load = loaded(rs)
    iv = load.interval(5.0, 6.0)
    # finished in [5, 6): sent 4.9..5.8 (10), and the slow one
    assert iv.rate == pytest.approx(11)
    assert iv.p99 == 2500.0 and iv.p50 == 100.0
    assert iv.errors == 0 and iv.target_rate == 10.0
    assert iv.versions == {"1": 11}
    assert load.interval(4.0, 4.1).errors == 1


def test_the_summary_counts_errors_by_kind_and_answers_by_version() -> None:
    rs = [(i / 20, 40.0, "", 1 if i < 60 else 2) for i in range(100)]
    rs += [(1.0, 5.0, "503", None), (2.0, 5.0, "503", None), (3.0, 30000.0, "timeout", None)]
    s = loaded(rs).summary()
    assert s["requests"] == 103 and s["errors"] == 3
    assert s["error_kinds"] == {"503": 2, "timeout": 1}
    assert s["versions"] == {"1": 60, "2": 40}
    assert s["p99_ms"] == 40.0  # failed requests do not count in the latencies
    assert s["rate"] == pytest.approx(103 / 33.0)  # over the span until the last finished


def test_an_empty_load_summarises_as_nothing_not_as_zero_latency() -> None:
    s = loaded([]).summary()
    assert s["requests"] == 0 and s["errors"] == 0 and s["rate"] == 0.0
    assert math.isnan(s["p99_ms"])


def test_the_interval_line_shows_the_version_split() -> None:
    iv = load_mod.Interval(5, 20.0, 20.0, 0, 40.0, 50.0, 60.0, {"1": 3, "2": 1})
    line = load_mod.fmt_interval(iv)
    assert "rate   20.0/s" in line and "p99   60.0 ms" in line
    assert "versions v1:75% v2:25%" in line
