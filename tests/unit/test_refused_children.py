"""Children the apiserver refuses: status, one Event per distinct error, nothing
changed, per-object backoff. The reconciler against an in-memory apiserver
stand-in that refuses what a test tells it to (the real apiserver drives the
same classes in tests/integration/test_refused_children.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from sluice.reconcile.isvc import Reconciler
from tests.support.invalid_specs import BASE


class FakeKube:
    """Enough of :class:`sluice.reconcile.kube.Kube` for one reconcile."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.writes: list[str] = []
        self.dry_runs = 0
        self.refuse: Callable[[Mapping[str, Any]], ApiException | None] = lambda o: None

    # reads
    def has_kind(self, api_version: str, kind: str) -> bool:
        return kind == "HTTPRoute"

    def get(self, api_version: str, kind: str, ns: str | None, name: str) -> Any:
        o = self.objects.get((kind, ns or "", name))
        return copy.deepcopy(o) if o else None

    def list(self, api_version: str, kind: str, ns: str | None = None, sel: Any = None) -> Any:
        return [copy.deepcopy(o) for (k, n, _), o in self.objects.items() if k == kind and n == ns]

    # writes
    def dry_run_apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.dry_runs += 1
        e = self.refuse(obj)
        if e is not None:
            raise e
        return dict(obj)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        e = self.refuse(obj)
        if e is not None:
            raise e
        md = obj["metadata"]
        live = json.loads(json.dumps(obj))
        live["metadata"]["generation"] = 1
        live.setdefault("status", {})
        self.objects[(obj["kind"], md["namespace"], md["name"])] = live
        self.writes.append(f"apply {obj['kind']}/{md['name']}")
        return copy.deepcopy(live)

    def delete(self, api_version: str, kind: str, ns: str | None, name: str) -> bool:
        self.writes.append(f"delete {kind}/{name}")
        return self.objects.pop((kind, ns or "", name), None) is not None

    def update_status(self, api_version: str, kind: str, ns: str, name: str, mutate: Any) -> Any:
        obj = self.objects[(kind, ns, name)]
        new = mutate(copy.deepcopy(obj), copy.deepcopy(obj.get("status") or {}))
        if new is not None:
            obj["status"] = new
            self.writes.append(f"status {kind}/{name}")
        return copy.deepcopy(obj)

    def event(self, involved: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((type_, reason, message))


def refusal(status: int, message: str) -> ApiException:
    e = ApiException(status=status, reason="Unprocessable Entity")
    e.body = json.dumps({"kind": "Status", "message": message})
    return e


def isvc(kube: FakeKube, **spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    obj["metadata"].update(namespace="ns", uid="u1", generation=1)
    obj["spec"].update(spec)
    kube.objects[("InferenceService", "ns", "bad")] = obj
    return obj


def ready(kube: FakeKube) -> dict[str, Any]:
    st = kube.objects[("InferenceService", "ns", "bad")].get("status") or {}
    return next(c for c in st.get("conditions") or [] if c["type"] == "Ready")


def test_a_refused_child_changes_nothing_and_is_reported_once() -> None:
    kube = FakeKube()
    isvc(kube)
    message = 'Deployment.apps "bad-main" is invalid: spec.template.spec.x: Invalid value'
    kube.refuse = lambda o: refusal(422, message) if o["kind"] == "Deployment" else None
    r = Reconciler(kube)  # type: ignore[arg-type]
    t = [100.0]
    r.clock = lambda: t[0]

    r.reconcile("ns", "bad")
    assert [w for w in kube.writes if not w.startswith("status")] == []  # not even the Services
    c = ready(kube)
    assert (c["status"], c["reason"]) == ("False", "ApplyFailed")
    assert "Deployment/bad-main: " + message in c["message"]
    st = kube.objects[("InferenceService", "ns", "bad")]["status"]
    assert st["observedGeneration"] == 1
    assert [(e[0], e[1]) for e in kube.events] == [("Warning", "ApplyFailed")]

    # The next resyncs within the backoff send nothing; after it, one dry run,
    # and the same error makes neither an Event nor a status write.
    dry, writes = kube.dry_runs, len(kube.writes)
    r.reconcile("ns", "bad")
    assert kube.dry_runs == dry
    t[0] += 5.1
    r.reconcile("ns", "bad")
    assert kube.dry_runs > dry
    assert len(kube.events) == 1 and len(kube.writes) == writes
    # Backoff doubles: 10 s now.
    dry = kube.dry_runs
    t[0] += 6
    r.reconcile("ns", "bad")
    assert kube.dry_runs == dry

    # A different error is news: one more Event.
    kube.refuse = lambda o: refusal(403, "exceeded quota") if o["kind"] == "Deployment" else None
    t[0] += 11
    r.reconcile("ns", "bad")
    assert [e[1] for e in kube.events] == ["ApplyFailed", "ApplyFailed"]
    assert "exceeded quota" in ready(kube)["message"]

    # Fixed: the next retry writes everything and Ready leaves ApplyFailed.
    kube.refuse = lambda o: None
    t[0] += 30
    r.reconcile("ns", "bad")
    assert "apply Deployment/bad-main" in kube.writes
    assert ready(kube)["reason"] != "ApplyFailed"


def test_a_spec_change_retries_at_once() -> None:
    kube = FakeKube()
    obj = isvc(kube)
    kube.refuse = lambda o: (
        refusal(422, "nope") if o["kind"] == "Deployment" and o["spec"]["replicas"] == 1 else None
    )
    r = Reconciler(kube)  # type: ignore[arg-type]
    r.clock = lambda: 0.0
    r.reconcile("ns", "bad")
    assert ready(kube)["reason"] == "ApplyFailed"
    obj["spec"]["replicas"] = 2
    obj["metadata"]["generation"] = 2
    r.reconcile("ns", "bad")
    assert "apply Deployment/bad-main" in kube.writes
    assert ready(kube)["reason"] != "ApplyFailed"


def test_transient_errors_are_not_refusals() -> None:
    kube = FakeKube()
    isvc(kube)
    kube.refuse = lambda o: ApiException(status=503, reason="Service Unavailable")
    r = Reconciler(kube)  # type: ignore[arg-type]
    try:
        r.reconcile("ns", "bad")
    except ApiException as e:
        assert e.status == 503
    else:  # pragma: no cover
        raise AssertionError("a 503 must propagate (the resync retries it)")
    assert kube.events == []


def test_a_render_failure_is_reported_not_crash_looped(monkeypatch: Any) -> None:
    import sluice.reconcile.isvc as isvc_module

    def broken(*a: Any, **kw: Any) -> Any:
        raise AttributeError("'str' object has no attribute 'setdefault'")

    monkeypatch.setattr(isvc_module, "desired", broken)
    kube = FakeKube()
    isvc(kube)
    r = Reconciler(kube)  # type: ignore[arg-type]
    r.clock = lambda: 0.0
    r.reconcile("ns", "bad")
    r.reconcile("ns", "bad")
    c = ready(kube)
    assert c["reason"] == "RenderFailed" and "setdefault" in c["message"]
    assert [e[1] for e in kube.events] == ["RenderFailed"]
    assert kube.objects[("InferenceService", "ns", "bad")]["status"]["observedGeneration"] == 1


def test_the_watch_cache_keeps_what_explains_a_stuck_deployment_or_pod() -> None:
    from sluice.reconcile.cache import project_deployment, project_pod

    dep = {
        "metadata": {"name": "d"},
        "spec": {},
        "status": {
            "replicas": 0,
            "conditions": [
                {"type": "Available", "status": "False", "lastUpdateTime": "t1"},
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "reason": "FailedCreate",
                    "message": "quota",
                    "lastUpdateTime": "t2",
                },
            ],
        },
    }
    assert project_deployment(dep)["status"]["conditions"] == [
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota"}
    ]
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "containerStatuses": [
                {
                    "name": "triton",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "x": 1}},
                }
            ]
        },
    }
    cs = project_pod(pod)["status"]["containerStatuses"][0]
    assert cs["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}


def test_what_counts_as_a_refusal() -> None:
    from sluice.reconcile.apply import is_refusal

    assert is_refusal(refusal(422, "invalid")) and is_refusal(refusal(403, "exceeded quota"))
    assert is_refusal(refusal(409, "conflict"))
    assert is_refusal(refusal(500, "failed to create typed patch object (x): expected list"))
    assert not is_refusal(refusal(500, "etcdserver: request timed out"))
    assert not is_refusal(refusal(429, "too many requests"))
    assert not is_refusal(refusal(503, "unavailable"))
    assert not is_refusal(ValueError("x"))
