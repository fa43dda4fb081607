"""A new InferenceService's first create skips the dry run (nothing exists,
nothing to protect); anything that touches an existing child, or follows a
refusal, dry-runs first as before (tests/unit/test_refused_children.py)."""

from __future__ import annotations

from typing import Any

from sluice.reconcile.isvc import Reconciler
from tests.unit.test_refused_children import FakeKube, isvc, ready, refusal


def _reconciler(kube: FakeKube, t: list[float]) -> Reconciler:
    r = Reconciler(kube)  # type: ignore[arg-type]
    r.clock = lambda: t[0]
    return r


def children(kube: FakeKube) -> list[str]:
    return sorted(f"{k}/{n}" for (k, _, n) in kube.objects if k != "InferenceService")


def test_first_create_writes_without_a_dry_run() -> None:
    kube = FakeKube()
    isvc(kube)
    r = _reconciler(kube, [0.0])
    r.reconcile("ns", "bad")
    assert kube.dry_runs == 0
    applied = [w for w in kube.writes if w.startswith("apply")]
    assert applied[0] == "apply Deployment/bad-main"  # first: what is most often refused
    assert sorted(applied[1:]) == ["apply Service/bad", "apply Service/bad-main"]
    assert ready(kube)["reason"] != "ApplyFailed"


def test_a_change_of_existing_children_dry_runs_first() -> None:
    kube = FakeKube()
    obj = isvc(kube)
    r = _reconciler(kube, [0.0])
    r.reconcile("ns", "bad")
    obj["spec"]["replicas"] = 2
    obj["metadata"]["generation"] = 2
    r.reconcile("ns", "bad")
    assert kube.dry_runs == 1  # the Deployment, the only child that changes
    assert kube.writes.count("apply Deployment/bad-main") == 2


def test_a_refused_first_create_stores_nothing_and_retries_with_a_dry_run() -> None:
    kube = FakeKube()
    isvc(kube)
    kube.refuse = lambda o: refusal(422, "bad pod template") if o["kind"] == "Deployment" else None
    t = [0.0]
    r = _reconciler(kube, t)
    r.reconcile("ns", "bad")
    assert children(kube) == []  # the Deployment is created first: the Services never were
    c = ready(kube)
    assert (c["reason"], "Deployment/bad-main: bad pod template" in c["message"]) == (
        "ApplyFailed",
        True,
    )
    assert [(e[0], e[1]) for e in kube.events] == [("Warning", "ApplyFailed")]
    assert kube.dry_runs == 0
    t[0] += 5.1
    r.reconcile("ns", "bad")
    assert kube.dry_runs == 3 and children(kube) == []  # every child, as before


def test_after_a_restart_an_apply_failed_status_dry_runs_first() -> None:
    kube = FakeKube()
    obj = isvc(kube)
    obj["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "False",
                "reason": "ApplyFailed",
                "message": "the apiserver refused Deployment/bad-main: nope",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
    }
    kube.refuse = lambda o: refusal(403, "nope") if o["kind"] == "Service" else None
    r = _reconciler(kube, [0.0])
    r.reconcile("ns", "bad")
    assert kube.dry_runs >= 1 and children(kube) == []


def test_a_later_child_refused_on_first_create_is_reported() -> None:
    """What skipping the dry run can leave: children created before the refused
    one stay (a service that never served); the status names the refused one,
    and the retry dry-runs and creates only what is missing."""
    kube = FakeKube()
    isvc(kube)
    refuse: dict[str, Any] = {"on": True}
    quota = refusal(403, "exceeded quota: services")
    kube.refuse = lambda o: quota if o["kind"] == "Service" and refuse["on"] else None
    t = [0.0]
    r = _reconciler(kube, t)
    r.reconcile("ns", "bad")
    assert children(kube) == ["Deployment/bad-main"]
    c = ready(kube)
    assert c["reason"] == "ApplyFailed" and "exceeded quota: services" in c["message"]
    assert [(e[0], e[1]) for e in kube.events] == [("Warning", "ApplyFailed")]
    refuse["on"] = False
    t[0] += 301
    r.reconcile("ns", "bad")
    assert children(kube) == ["Deployment/bad-main", "Service/bad", "Service/bad-main"]
    assert kube.writes.count("apply Deployment/bad-main") == 1
    assert kube.dry_runs == 2  # the two Services, the Deployment already covers
    assert ready(kube)["reason"] != "ApplyFailed"
