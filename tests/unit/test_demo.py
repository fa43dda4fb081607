"""The pure parts of hack/demo.py: the predicates its narration waits on."""

from __future__ import annotations

from typing import Any

from tests.support.hack import hack_module

demo = hack_module("demo")


class FakeWorld:
    """The two reads :class:`demo.Settled` makes, from a list of snapshots."""

    def __init__(self, snapshots: list[tuple[dict[str, Any], dict[str, float]]]) -> None:
        self.snapshots = snapshots
        self.i = -1

    def rollout(self, name: str) -> dict[str, Any]:
        self.i += 1
        return self.snapshots[self.i][0]

    def weights(self, name: str) -> dict[str, float]:
        return self.snapshots[self.i][1]


ANALYSIS = {"verdict": "Pass", "signals": []}


def test_settled_waits_for_phase_route_and_version_and_keeps_the_last_analysis() -> None:
    world = FakeWorld(
        [
            ({"phase": "Progressing", "analysis": ANALYSIS}, {"main": 50.0, "canary": 50.0}),
            ({"phase": "Succeeded", "stable": {"version": 1}}, {"main": 100.0}),
            ({"phase": "Succeeded", "stable": {"version": 2}}, {"main": 90.0, "canary": 10.0}),
            ({"phase": "Succeeded", "stable": {"version": 2}}, {"main": 100.0}),
        ]
    )
    done = demo.Settled(world, "rollout", "Succeeded", stable_version=2)
    assert done() is None  # still progressing
    assert done() is None  # the old version is stable
    assert done() is None  # the route is not back on main
    assert done() == {"phase": "Succeeded", "stable": {"version": 2}}
    assert done.analysis == ANALYSIS  # the final status no longer carries it


def test_settled_without_a_version_accepts_any_stable_one() -> None:
    world = FakeWorld(
        [
            ({"phase": "Progressing"}, {"main": 75.0, "canary": 25.0}),
            ({"phase": "RolledBack", "stable": {"version": 2}}, {}),
        ]
    )
    done = demo.Settled(world, "rollout", "RolledBack")
    assert done() is None
    assert done() is not None
    assert done.analysis is None
