"""`sluice get` and the rollout-control subcommands, offline."""

from __future__ import annotations

from sluice.cli import build_parser, control_patch, format_get


def test_controls_are_spec_for_pause_and_tokens_for_one_shot_requests() -> None:
    assert control_patch("pause", "t") == {"spec": {"rollout": {"paused": True}}}
    assert control_patch("resume", "t") == {"spec": {"rollout": {"paused": None}}}
    for action in ("abort", "promote", "retry"):
        p = control_patch(action, "tok-1")
        assert p == {"metadata": {"annotations": {f"sluice.dev/{action}": "tok-1"}}}


def test_every_control_subcommand_parses() -> None:
    p = build_parser()
    for action in ("pause", "resume", "abort", "promote", "retry"):
        a = p.parse_args([action, "resnet", "-n", "team-a"])
        assert (a.action, a.name, a.namespace) == (action, "resnet", "team-a")
    a = p.parse_args(["get", "resnet", "-w"])
    assert a.watch and a.name == "resnet"


def test_get_shows_variants_pods_weights_verdicts_and_decisions() -> None:
    obj = {
        "metadata": {"name": "resnet", "namespace": "default"},
        "spec": {
            "model": {"name": "resnet", "version": 2},
            "rollout": {"strategy": "Canary", "steps": [10, 25, 50], "paused": True},
        },
        "status": {
            "ready": "3/3",
            "rollout": {
                "phase": "Progressing",
                "step": 1,
                "canaryWeight": 25,
                "awaitingDecision": True,
                "stable": {"version": 1, "image": "img"},
                "canary": {"version": 2, "image": "img"},
                "message": "canary 10% -> 25%",
                "analysis": {
                    "verdict": "Inconclusive",
                    "signals": [
                        {"signal": "errorRate", "candidate": 0.01, "baseline": 0.012,
                         "tolerance": 0.01, "lower": -0.01, "upper": 0.008, "samples": 900,
                         "confidence": 0.99, "verdict": "Pass"},
                        {"signal": "p99LatencyMs", "candidate": 51.0, "baseline": 50.0,
                         "tolerance": 0.15, "effect": 1.02, "lower": 0.9, "upper": 1.2,
                         "samples": 900, "confidence": 0.99, "verdict": "Inconclusive"},
                        {"signal": "conversionRate", "kind": "difference", "direction": "higher",
                         "candidate": 0.081, "baseline": 0.1, "tolerance": 0.01,
                         "effect": -0.019, "lower": -0.03, "upper": -0.011, "samples": 900,
                         "batches": 12, "confidence": 0.99, "verdict": "Fail"},
                    ],
                },
            },
            "variants": [
                {"name": "main", "version": 1, "weight": 50, "readyReplicas": 2, "replicas": 2},
                {"name": "canary", "version": 2, "weight": 25, "readyReplicas": 1, "replicas": 1},
                {"name": "baseline", "version": 1, "weight": 25, "readyReplicas": 1,
                 "replicas": 1},
            ],
        },
    }  # fmt: skip
    pods = [
        {
            "metadata": {
                "name": "resnet-canary-abc",
                "labels": {"sluice.dev/variant": "canary"},
                "creationTimestamp": "2026-12-01T10:00:00Z",
            },
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
        }
    ]
    events = [
        {
            "type": "Normal",
            "reason": "CanaryWeight",
            "message": "canary 10% -> 25% (step 2)",
            "lastTimestamp": "2026-12-01T10:05:00Z",
        }
    ]
    now = 1796119800.0  # 2026-12-01T10:10:00Z
    out = format_get(obj, pods, events, now)
    for text in (
        "Phase:     Progressing",
        "Step:      2/3",
        "Weight:    25%",
        "Paused:      yes",
        "99% confidence",
        "p99LatencyMs",
        "+15%",
        "baseline  1",
        "resnet-canary-abc",
        "CanaryWeight",
        "Decision:  awaited",
        "-0.03..-0.011",
        "conversionRate",
        "5m",
    ):
        assert text in out, text
