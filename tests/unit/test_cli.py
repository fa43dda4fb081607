"""The sluice command line."""

from __future__ import annotations

import pytest

from sluice.cli import build_parser


def test_run_flags_for_the_control_loop() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "-n",
            "a",
            "-n",
            "b",
            "--prometheus-url",
            "http://p:9090",
            "--rate-window",
            "1m30s",
            "--signals-refresh",
            "5",
            "--control-interval",
            "3",
        ]
    )
    assert args.namespace == ["a", "b"]
    assert (args.rate_window, args.signals_refresh, args.control_interval) == ("1m30s", 5.0, 3.0)


def test_defaults_leave_rate_window_to_the_environment() -> None:
    args = build_parser().parse_args(["run"])
    assert args.rate_window is None and args.signals_refresh is None and args.namespace == []


def test_bad_duration_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--rate-window", "five"])
    assert "is not a duration" in capsys.readouterr().err
