"""The canary/A-B benchmark's report: tables, README blocks, unseen scenarios."""

from __future__ import annotations

from pathlib import Path

from tests.bench.control import canary, canary_bench, report


def test_update_readme_replaces_only_the_block_between_its_markers(tmp_path: Path) -> None:
    p = tmp_path / "README.md"
    p.write_text("# B\n\nbefore\n<!-- x:begin -->\nold\n<!-- x:end -->\nafter\n")
    report.update_readme(p, "new\n", "<!-- x:begin -->", "<!-- x:end -->", "X")
    assert p.read_text() == "# B\n\nbefore\n<!-- x:begin -->\nnew\n<!-- x:end -->\nafter\n"
    report.update_readme(p, "y\n", "<!-- y:begin -->", "<!-- y:end -->", "Y heading")
    assert p.read_text().endswith("## Y heading\n\n<!-- y:begin -->\ny\n<!-- y:end -->\n")


def test_table_reports_rolled_back_promoted_and_undecided() -> None:
    result = {
        "seeds": 3,
        "first_seed": 0,
        "seconds": 1.0,
        "settings": {"steps": [10], "interval": "2m", "rate_window": "30s",
                     "control_interval_s": 15, "scrape_interval_s": 5, "load_time_s": 45},
        "rows": [
            {"scenario": "identical", "rolled_back": 0.0, "promoted": 2 / 3, "undecided": 1 / 3,
             "intervals_mean": None, "intervals_max": None, "minutes_to_decision_mean": 8.0},
        ],
    }  # fmt: skip
    out = canary_bench.table(result)
    assert "| identical | 0 % | 67 % | 33 % | - / - | 8.00 |" in out
    assert "A/B scenario" not in out  # no A/B rows, no A/B table


def test_unseen_scenarios_are_not_the_published_ones() -> None:
    seen = {c.name for c in canary.cases()}
    unseen = canary.unseen_cases()
    assert unseen and not seen & {c.name for c in unseen}
    assert {c.dist for c in unseen} - {"lognormal"}  # other service-time distributions
    assert {c.slowdown for c in unseen} >= {1.2, 1.5}
    assert canary.UNSEEN_SEED_BASE >= 1000  # the published table uses seeds 0..99
