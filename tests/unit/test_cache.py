"""The watch cache, the work queue and the routing of changes, without a cluster."""

from __future__ import annotations

import json
import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from sluice.reconcile import cache as c
from sluice.reconcile.kube import Kube, classify
from sluice.reconcile.loop import Engine, WorkQueue, _inputs


def deployment(name: str, rv: str, replicas: int = 1, ready: int = 0, **extra: Any) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"uid-{name}",
            "resourceVersion": rv,
            "labels": {
                "sluice.dev/inferenceservice": "m",
                "app.kubernetes.io/managed-by": "sluice",
            },
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "a": "b"},
            "ownerReferences": [
                {"apiVersion": "sluice.dev/v1alpha1", "kind": "InferenceService", "name": "m"}
            ],
            "managedFields": [{"manager": "sluice"}],
        },
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"args": ["x" * 50]}]}},
        },
        "status": {
            "readyReplicas": ready,
            "conditions": [{"type": "Available", "lastUpdateTime": rv}],
        },
        **extra,
    }


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, Any, Any]] = []

    def __call__(self, kind: c.Kind, old: Any, new: Any) -> None:
        self.changes.append((kind.kind, old, new))


def informer(kind: c.Kind = c.KINDS[1]) -> tuple[c.Informer, Recorder]:
    rec = Recorder()
    inf = c.Informer(None, kind, "ns", rec, threading.Event())  # type: ignore[arg-type]
    inf.synced.set()
    return inf, rec


def test_deployment_projection_keeps_what_is_read_and_shares_strings() -> None:
    a = c.project_deployment(deployment("m-main", "1"))
    b = c.project_deployment(deployment("m-b", "2"))
    assert "managedFields" not in a["metadata"]
    assert a["metadata"]["annotations"] == {"a": "b"}
    assert a["status"] == {"readyReplicas": 0}  # conditions dropped
    assert a["spec"]["replicas"] == 1
    args_a = a["spec"]["template"]["spec"]["containers"][0]["args"][0]
    args_b = b["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert args_a is args_b  # one copy of a long string however many objects hold it


def test_pod_projection_keeps_why_it_does_not_run() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"x": "y"}, "resourceVersion": "3"},
        "spec": {"containers": [{"name": "triton", "image": "i"}]},
        "status": {
            "conditions": [
                {"type": "PodScheduled", "status": "False", "message": "no node"},
                {"type": "Initialized", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": "triton",
                    "state": {"waiting": {"reason": "ErrImagePull", "message": "m"}},
                },
                {"name": "side", "state": {"running": {}}},
            ],
        },
    }
    p = c.project_pod(pod)
    assert "spec" not in p
    assert [x["type"] for x in p["status"]["conditions"]] == ["PodScheduled"]
    assert p["status"]["containerStatuses"] == [
        {"name": "triton", "state": {"waiting": {"reason": "ErrImagePull", "message": "m"}}}
    ]


def test_a_change_only_of_dropped_fields_or_version_wakes_nobody() -> None:
    inf, rec = informer()
    inf.put(deployment("m-main", "1"))
    assert len(rec.changes) == 1
    inf.put(deployment("m-main", "2"))  # only resourceVersion and a condition time moved
    assert len(rec.changes) == 1
    inf.put(deployment("m-main", "3", ready=1))
    assert len(rec.changes) == 2 and rec.changes[-1][2]["status"]["readyReplicas"] == 1
    assert inf.get("ns", "m-main")["metadata"]["resourceVersion"] == "3"


def test_an_older_event_never_replaces_a_newer_write_through() -> None:
    inf, _ = informer()
    inf.put(deployment("m-main", "10", replicas=2), notify=False)  # the apply's answer
    inf.put(deployment("m-main", "9", replicas=1))  # the watch delivers an older version
    assert inf.get("ns", "m-main")["spec"]["replicas"] == 2


def test_deletion_of_an_older_object_keeps_the_recreated_one() -> None:
    inf, rec = informer()
    old = deployment("m-main", "5")
    inf.put(old)
    new = deployment("m-main", "8")
    new["metadata"]["uid"] = "uid-recreated"
    inf.put(new)
    inf.remove(old)  # DELETED of the first object arrives late
    assert inf.get("ns", "m-main")["metadata"]["uid"] == "uid-recreated"
    inf.remove(new)
    assert inf.get("ns", "m-main") is None
    assert rec.changes[-1][2] is None
    assert inf.items("ns", owner="m") == []


def test_owner_index_lists_children_of_one_inferenceservice() -> None:
    inf, _ = informer()
    inf.put(deployment("m-main", "1"))
    other = deployment("n-main", "1")
    other["metadata"]["ownerReferences"][0]["name"] = "n"
    other["metadata"]["labels"]["sluice.dev/inferenceservice"] = "n"
    inf.put(other)
    assert [o["metadata"]["name"] for o in inf.items("ns", owner="m")] == ["m-main"]
    assert len(inf.items("ns")) == 2


def test_selectors_the_cache_can_answer() -> None:
    assert c.parse_selector("a=b,c=d") == {"a": "b", "c": "d"}
    assert c.parse_selector(None) == {}
    assert c.parse_selector("a!=b") is None
    assert c.parse_selector("a in (b)") is None


def test_requests_are_classified_as_the_audit_log_names_them() -> None:
    base = "https://127.0.0.1:6443"
    assert classify("GET", f"{base}/apis/apps/v1/namespaces/n/deployments?limit=500") == (
        "list",
        "deployments",
    )
    assert classify("GET", f"{base}/api/v1/pods?watch=1&resourceVersion=5") == ("watch", "pods")
    assert classify("GET", f"{base}/apis/sluice.dev/v1alpha1/namespaces/n/inferenceservices/x") == (
        "get",
        "inferenceservices",
    )
    assert classify(
        "PUT", f"{base}/apis/sluice.dev/v1alpha1/namespaces/n/inferenceservices/x/status"
    ) == ("update", "inferenceservices_status")
    assert classify("PATCH", f"{base}/api/v1/namespaces/n/services/s?force=true") == (
        "patch",
        "services",
    )
    assert classify("GET", f"{base}/apis/gateway.networking.k8s.io/v1") == ("get", "discovery")


def test_queue_holds_a_key_once_and_reruns_a_key_changed_while_active() -> None:
    q = WorkQueue()
    q.add(("ns", "a"))
    q.add(("ns", "a"))
    q.add(("ns", "b"))
    assert len(q) == 2
    k = q.get()
    assert k == ("ns", "a")
    q.add(("ns", "a"))  # changed while being reconciled
    assert q.get() == ("ns", "b")
    q.done(("ns", "b"))
    q.done(("ns", "a"))
    assert q.get() == ("ns", "a")  # once more, after it finished
    q.done(("ns", "a"))
    assert q.idle()
    q.close()
    assert q.get() is None


def test_queue_delayed_retry_comes_back() -> None:
    q = WorkQueue()
    q.add_after(("ns", "a"), 0.01)
    assert q.get() == ("ns", "a")


class _FakeEngine:
    changed = Engine.changed
    resync = Engine.resync

    def __init__(self) -> None:
        self.queue = WorkQueue()
        self.forgotten: list[Any] = []
        self.workers = self
        self.reconciler = self
        self.last_ok: dict[Any, float] = {}

    def forget(self, *key: Any) -> None:  # both Workers.forget(key) and Reconciler.forget(ns, n)
        self.forgotten.append(key[0] if len(key) == 1 else key)


def isvc(status: dict | None = None, generation: int = 1) -> dict:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation},
        "spec": {"model": {"name": "m"}},
        "status": status or {},
    }


def test_own_status_writes_do_not_enqueue_but_decisions_and_spec_do() -> None:
    e = _FakeEngine()
    kind = c.ISVC
    e.changed(kind, None, isvc())
    assert len(e.queue) == 1
    e.queue.get(), e.queue.done(("ns", "m"))
    # The reconciler's own status (conditions, ready counts) is not an input.
    e.changed(kind, isvc(), isvc({"ready": "1/1", "conditions": [{"type": "Ready"}]}))
    assert len(e.queue) == 0
    # The control cycle's decision is: the children must follow it.
    e.changed(kind, isvc(), isvc({"scaling": [{"variant": "main", "desiredReplicas": 2}]}))
    assert len(e.queue) == 1
    e.queue.get(), e.queue.done(("ns", "m"))
    e.changed(kind, isvc(), isvc(generation=2) | {"spec": {"model": {"name": "n"}}})
    assert len(e.queue) == 1
    e.changed(kind, isvc(), None)
    assert e.forgotten == [("ns", "m"), ("ns", "m")]
    assert _inputs(isvc()) != _inputs(isvc(generation=2))


def test_child_changes_enqueue_the_owner_and_pods_only_when_they_explain_a_failure() -> None:
    e = _FakeEngine()
    dep_kind = c.KINDS[1]
    e.changed(dep_kind, None, c.project_deployment(deployment("m-main", "1")))
    assert e.queue.get() == ("ns", "m")
    e.queue.done(("ns", "m"))
    pod_kind = c.KINDS[-1]
    pod = {
        "kind": "Pod",
        "metadata": {
            "name": "m-main-x",
            "namespace": "ns",
            "labels": {"sluice.dev/inferenceservice": "m", "sluice.dev/variant": "main"},
        },
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},
    }
    running = {**pod, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    e.changed(pod_kind, pod, running)
    assert len(e.queue) == 0
    stuck = {**pod, "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}
    e.changed(pod_kind, pod, stuck)
    assert e.queue.get() == ("ns", "m")


class _Api:
    """The API of one object: status writes answer 409 while the write's
    resourceVersion is not the stored one."""

    def __init__(self, stored: dict) -> None:
        self.stored = stored
        self.reads = 0
        self.puts: list[dict] = []

    def path(self, *a: Any, **kw: Any) -> str:
        return "/".join(str(x) for x in a if x)

    def read(self, *a: Any) -> dict | None:
        self.reads += 1
        return json.loads(json.dumps(self.stored))

    def call_json(self, method: str, path: str, **kw: Any) -> dict:
        assert method == "PUT"
        body = kw["body"]
        self.puts.append(body)
        if body["metadata"]["resourceVersion"] != self.stored["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        rv = str(int(self.stored["metadata"]["resourceVersion"]) + 1)
        self.stored = {**self.stored, "status": body["status"]}
        self.stored["metadata"] = {**self.stored["metadata"], "resourceVersion": rv}
        return json.loads(json.dumps(self.stored))


def _cached(stored: dict, cached: dict) -> tuple[c.CachedKube, _Api, c.Informer]:
    api = _Api(stored)
    kube = Kube.__new__(Kube)  # no client: its HTTP is the fake's
    kube.__dict__.update(path=api.path, read=api.read, call_json=api.call_json)
    cache = c.Cache(kube, ["ns"], lambda *_: None, kinds=[c.ISVC])
    inf = cache.informers[(c.ISVC.api_version, c.ISVC.kind)][0]
    inf.put(cached, notify=False)
    inf.synced.set()
    return c.CachedKube(kube, cache), api, inf


def test_status_write_starts_from_the_cache_and_rereads_the_api_on_conflict() -> None:
    live = isvc({"ready": "0/1"}) | {"metadata": {**isvc()["metadata"], "resourceVersion": "7"}}
    stale = isvc({"ready": "0/1"}) | {"metadata": {**isvc()["metadata"], "resourceVersion": "5"}}
    kube, api, inf = _cached(live, stale)
    out = kube.update_status(
        "sluice.dev/v1alpha1", "InferenceService", "ns", "m", lambda o, st: {**st, "ready": "1/1"}
    )
    # One PUT from the cached (stale) copy, a 409, one GET from the API, one PUT.
    assert [p["metadata"]["resourceVersion"] for p in api.puts] == ["5", "7"]
    assert api.reads == 1
    assert out is not None and out["status"] == {"ready": "1/1"}
    assert inf.get("ns", "m")["metadata"]["resourceVersion"] == "8"  # the answer is cached


def test_status_write_that_changes_nothing_sends_nothing() -> None:
    obj = isvc({"ready": "1/1"}) | {"metadata": {**isvc()["metadata"], "resourceVersion": "3"}}
    kube, api, _ = _cached(obj, obj)
    kube.update_status(
        "sluice.dev/v1alpha1", "InferenceService", "ns", "m", lambda o, st: {**st, "ready": "1/1"}
    )
    assert api.puts == [] and api.reads == 0


def test_a_quiet_service_costs_no_write_on_resync_or_control_cycle() -> None:
    """Level-triggered: once the children and status are right, reconciles (the
    resync) and control cycles with nothing new send nothing, however often."""
    from sluice.reconcile.control import Controller
    from sluice.reconcile.isvc import Reconciler
    from tests.unit.test_refused_children import FakeKube
    from tests.unit.test_refused_children import isvc as bad_isvc

    kube = FakeKube()
    bad_isvc(kube)
    r = Reconciler(kube)  # type: ignore[arg-type]
    ctl = Controller(kube, r, ["ns"], {})  # type: ignore[arg-type]
    r.reconcile("ns", "bad")
    # The Deployment rolls out (the controller-manager's part), then the fleet is quiet.
    for (kind, _, _), o in kube.objects.items():
        if kind == "Deployment":
            n = o["spec"]["replicas"]
            o["status"] = {"observedGeneration": 1, "replicas": n, "readyReplicas": n}
            o["status"] |= {"updatedReplicas": n, "availableReplicas": n}
    r.reconcile("ns", "bad")
    objs = [kube.objects[("InferenceService", "ns", "bad")]]
    ctl.run(objs)
    assert (
        next(
            c
            for c in kube.objects[("InferenceService", "ns", "bad")]["status"]["conditions"]
            if c["type"] == "Ready"
        )["status"]
        == "True"
    )
    writes, events, dry = len(kube.writes), len(kube.events), kube.dry_runs
    for _ in range(3):
        r.reconcile("ns", "bad")
        ctl.run([kube.objects[("InferenceService", "ns", "bad")]])
    assert kube.writes[writes:] == [] and kube.events[events:] == [] and kube.dry_runs == dry
