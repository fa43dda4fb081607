"""Bad input through the real apiserver with the operator running: every case
ends in status and an Event, the running fleet untouched, no traceback.

Two routes past ``kubectl apply``:

* objects stored before the CRD tightened (the CRD is loosened for a moment,
  as an older one would be): every case of the bad-input table must come back
  as ``SpecValid=False`` with the parser's message;
* children the apiserver refuses for reasons the schema cannot know (a quota,
  an immutable field of an existing object, an admission policy, a
  pass-through pod field Kubernetes rejects): ``Ready=False/ApplyFailed``
  naming the child and quoting the apiserver, one Warning Event, nothing
  written.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.invalid_specs import CASES, Case
from tests.support.kube import Kubectl, temp_namespace
from tests.support.operator import running_operator
from tests.support.wait import until

REPO = Path(__file__).resolve().parents[2]
ISVC = "inferenceservices.sluice.dev"


@pytest.fixture(scope="module")
def env(kubectl: Kubectl, kubeconfig: Path, crds: None) -> Iterator[tuple[str, Path]]:
    with temp_namespace(kubectl, "refused") as ns:
        log = REPO / ".cluster" / "logs" / f"operator-{ns}.log"
        with running_operator(kubeconfig, [ns], log_path=log):
            yield ns, log


def service(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"name": "m", "repository": "s3://bucket/models", "version": 1},
        "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
        "gpu": {"count": 0},
    }
    body.update(spec)
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": ns},
        "spec": body,
    }


def get(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any] | None:
    out: dict[str, Any] | None = kubectl.get(ISVC, name, "-n", ns)
    return out


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def current(obj: dict[str, Any] | None) -> bool:
    return bool(obj) and (obj or {}).get("status", {}).get("observedGeneration") == (obj or {}).get(
        "metadata", {}
    ).get("generation")


def events(kubectl: Kubectl, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl.get(
        "events", "-n", ns, "--field-selector", f"involvedObject.name={name},reason={reason}"
    )["items"]
    return items


def apply_failed(kubectl: Kubectl, ns: str, name: str, fragment: str) -> dict[str, Any]:
    def failed() -> dict[str, Any] | None:
        o = get(kubectl, ns, name)
        c = condition(o, "Ready")
        ok = c.get("reason") == "ApplyFailed" and fragment in c.get("message", "") and current(o)
        return o if ok else None

    obj: dict[str, Any] = until(failed, 60, f"{name}: Ready=False/ApplyFailed with {fragment!r}")
    return obj


def serving(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    def ok() -> dict[str, Any] | None:
        o = get(kubectl, ns, name)
        return o if condition(o, "Ready").get("status") == "True" and current(o) else None

    obj: dict[str, Any] = until(ok, 90, f"{name} Ready")
    return obj


def fleet(kubectl: Kubectl, ns: str, name: str) -> dict[str, str]:
    """resourceVersion of every child: equal before and after means untouched."""
    out = {}
    for kind in ("deployments", "services", "httproutes.gateway.networking.k8s.io"):
        items = kubectl.get(kind, "-n", ns, "-l", f"sluice.dev/inferenceservice={name}")["items"]
        for o in items:
            out[f"{kind}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return out


def no_traceback(log: Path) -> None:
    text = log.read_text() if log.exists() else ""
    assert "Traceback" not in text, text[text.find("Traceback") - 2000 :][:4000]


# ------------------------------------------------- children the apiserver refuses


def test_quota_refusal_leaves_the_running_fleet_as_it_was(
    kubectl: Kubectl, env: tuple[str, Path]
) -> None:
    ns, log = env
    kubectl.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "deployments", "namespace": ns},
            "spec": {"hard": {"count/deployments.apps": "1"}},
        }
    )
    obj = service("quota", ns, router={"gateway": {"name": "gw"}})
    kubectl.apply(obj)
    serving(kubectl, ns, "quota")
    before = fleet(kubectl, ns, "quota")

    obj["spec"]["variants"] = [{"name": "b", "weight": 20, "model": {"version": 2}}]
    kubectl.apply(obj)
    st = apply_failed(kubectl, ns, "quota", "Deployment/quota-b: ")
    assert "exceeded quota" in condition(st, "Ready")["message"]
    assert fleet(kubectl, ns, "quota") == before  # no b Service, route weights unchanged
    evs = until(lambda: events(kubectl, ns, "quota", "ApplyFailed"), 30, "an ApplyFailed Event")
    assert "exceeded quota" in evs[0]["message"]

    # Fixing the spec (dropping the variant) serves again; the refusal made one Event
    # however many resyncs (every 2 s here) saw it.
    obj["spec"].pop("variants")
    kubectl.apply(obj)
    serving(kubectl, ns, "quota")
    assert sum(e.get("count", 1) for e in events(kubectl, ns, "quota", "ApplyFailed")) == 1
    kubectl.run("delete", "resourcequota", "deployments", "-n", ns)
    no_traceback(log)


def test_immutable_field_of_an_existing_deployment(kubectl: Kubectl, env: tuple[str, Path]) -> None:
    ns, log = env
    labels = {"app": "someone-else"}
    kubectl.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "immut-main", "namespace": ns},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
                },
            },
        }
    )
    before = kubectl.get("deployment", "immut-main", "-n", ns)["metadata"]["resourceVersion"]
    kubectl.apply(service("immut", ns))
    st = apply_failed(kubectl, ns, "immut", "Deployment/immut-main: ")
    assert "field is immutable" in condition(st, "Ready")["message"]
    after = kubectl.get("deployment", "immut-main", "-n", ns)["metadata"]["resourceVersion"]
    assert after == before
    assert fleet(kubectl, ns, "immut") == {}  # not even the Services were created
    assert events(kubectl, ns, "immut", "ApplyFailed")
    kubectl.run("delete", ISVC, "immut", "-n", ns)
    no_traceback(log)


@pytest.mark.parametrize(
    ("name", "anti", "says"),
    [
        # 422: a valid shape with an invalid value
        (
            "podaff",
            {"requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": ""}]},
            "topologyKey",
        ),
        # server-side apply's 500: a shape that does not fit the Pod schema
        (
            "podaff-shape",
            {"requiredDuringSchedulingIgnoredDuringExecution": "everywhere"},
            "failed to create typed patch object",
        ),
    ],
)
def test_pass_through_pod_field_kubernetes_rejects(
    kubectl: Kubectl, env: tuple[str, Path], name: str, anti: dict[str, Any], says: str
) -> None:
    ns, log = env
    kubectl.apply(service(name, ns, podTemplate={"affinity": {"podAntiAffinity": anti}}))
    st = apply_failed(kubectl, ns, name, f"Deployment/{name}-main: ")
    assert says in condition(st, "Ready")["message"]
    assert fleet(kubectl, ns, name) == {}
    kubectl.run("delete", ISVC, name, "-n", ns)
    no_traceback(log)


def test_admission_policy_denial(kubectl: Kubectl, env: tuple[str, Path]) -> None:
    ns, log = env
    policy = f"sluice-test-deny-{ns}"
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["apps"],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "!has(object.spec.template.metadata.labels) || "
                        "!('cost-center' in object.spec.template.metadata.labels) || "
                        "object.spec.template.metadata.labels['cost-center'] != 'none'",
                        "message": "every Deployment needs a real cost-center",
                    }
                ],
            },
        }
    )
    kubectl.apply(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {
                "policyName": policy,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                },
            },
        }
    )
    probe = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b", "cost-center": "none"}},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/x:1"}]},
            },
        },
    }

    def enforced() -> bool:
        r = kubectl.run(
            "apply", "--dry-run=server", "-f", "-", stdin=json.dumps(probe), check=False
        )
        return r.returncode != 0 and "cost-center" in r.stderr

    try:
        until(enforced, 30, "the admission policy to be enforced", interval=0.5)
        kubectl.apply(service("policy", ns, podTemplate={"labels": {"cost-center": "none"}}))
        st = apply_failed(kubectl, ns, "policy", "Deployment/policy-main: ")
        assert "every Deployment needs a real cost-center" in condition(st, "Ready")["message"]
        assert fleet(kubectl, ns, "policy") == {}
    finally:
        kubectl.run("delete", "validatingadmissionpolicybinding", policy, check=False)
        kubectl.run("delete", "validatingadmissionpolicy", policy, check=False)
    kubectl.run("delete", ISVC, "policy", "-n", ns)
    no_traceback(log)


# ------------------------------------------ the bad-input table, stored anyway


def _stored_name(i: int, case: Case) -> str:
    name = case.obj()["metadata"]["name"]
    return name if name != "bad" else f"case-{i}"


def test_every_stored_bad_input_becomes_status_and_an_event(
    kubectl: Kubectl, env: tuple[str, Path]
) -> None:
    """Each case of the table, stored under a CRD without its rules (as an older
    CRD would have accepted it), ends as SpecValid=False with the parser's
    message within a resync, and an InvalidSpec Event; nothing crashes."""
    ns, log = env
    crd = kubectl.get("crd", ISVC)
    loose = copy.deepcopy(crd)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        loose["metadata"].pop(key, None)
    loose.pop("status", None)
    schema = loose["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema.pop("x-kubernetes-validations", None)
    schema["properties"]["spec"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=json.dumps(loose))
    names: dict[str, Case] = {}
    try:
        docs = []
        for i, case in enumerate(CASES):
            if "unknown field" in case.parser_says:
                continue  # the apiserver prunes unknown fields once the schema is back
            obj = case.obj()
            obj["metadata"]["name"] = _stored_name(i, case)
            obj["metadata"]["namespace"] = ns
            names[obj["metadata"]["name"]] = case
            docs.append(obj)
        body = json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})

        def stored() -> bool:
            r = kubectl.run("apply", "-f", "-", stdin=body, check=False)
            return r.returncode == 0

        until(stored, 30, "the loose CRD to accept the table", interval=1.0)
    finally:
        kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))

    def reported() -> list[str] | None:
        items = kubectl.get(ISVC, "-n", ns)["items"]
        by_name = {o["metadata"]["name"]: o for o in items}
        missing = []
        for name, case in names.items():
            o = by_name.get(name)
            c = condition(o, "SpecValid")
            err = ((o or {}).get("status") or {}).get("specError") or ""
            if not (current(o) and c.get("status") == "False" and case.parser_says in err):
                missing.append(f"{case.id}: {err or c or 'no status'}")
        return None if missing else []

    try:
        until(lambda: reported() is not None, 90, "every stored case reported in status")
    except Exception:
        items = kubectl.get(ISVC, "-n", ns)["items"]
        raise AssertionError(
            [
                (o["metadata"]["name"], (o.get("status") or {}).get("specError"))
                for o in items
                if o["metadata"]["name"] in names
            ]
        ) from None
    for name in names:
        assert events(kubectl, ns, name, "InvalidSpec"), f"no InvalidSpec Event for {name}"
    # Nothing was rendered for any of them.
    for name in names:
        assert fleet(kubectl, ns, name) == {}, name
    no_traceback(log)
    kubectl.run("delete", ISVC, "--all", "-n", ns, "--wait=false")


# -------------------------------------------- what Kubernetes already says


@pytest.mark.parametrize(
    ("field", "says"),
    [
        ("serviceAccountName", 'serviceaccount "no-such-sa" not found'),
        ("priorityClassName", "no PriorityClass with name no-such-sa was found"),
    ],
)
def test_pods_that_cannot_be_created_are_explained(
    kubectl: Kubectl, env: tuple[str, Path], field: str, says: str
) -> None:
    """A missing ServiceAccount or PriorityClass: the Deployment applies, its
    ReplicaSet cannot create pods, and the Deployment's ReplicaFailure says why."""
    ns, log = env
    name = "no-" + field.lower()[:8]
    kubectl.apply(service(name, ns, podTemplate={field: "no-such-sa"}))

    def explained() -> str | None:
        c = condition(get(kubectl, ns, name), "Ready")
        msg = str(c.get("message", ""))
        return msg if c.get("status") == "False" and says in msg else None

    msg = until(explained, 90, f"Ready=False naming the missing {field}")
    assert "main 0/1 ready (version 1): ReplicaFailure (FailedCreate): " in msg
    kubectl.run("delete", ISVC, name, "-n", ns)
    no_traceback(log)
