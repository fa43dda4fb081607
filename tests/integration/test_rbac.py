"""The chart's RBAC is enough and no more: the real operator, run with a token of
the chart's ServiceAccount, serves an InferenceService; the same token is refused
everything else (Secrets, Pods, the InferenceService's spec, other Leases...).

Cluster mode runs the operator with leader election on the chart's Lease;
namespaced mode runs it on one namespace with nothing cluster-wide.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import CHART, REPO, Helm
from tests.support.kube import Kubectl, temp_namespace
from tests.support.sluice_run import sluice_run
from tests.support.wait import until

ISVC = "inferenceservices.sluice.dev"
SAMPLE = REPO / "manifests" / "samples" / "resnet50-h100.yaml"


@dataclass
class Identity:
    """A kubeconfig that authenticates as the chart's ServiceAccount, by a TokenRequest."""

    kubeconfig: Path
    user: str

    def kubectl(self) -> Kubectl:
        return Kubectl(self.kubeconfig)

    def can(self, verb: str, resource: str, *flags: str) -> bool:
        """Like ``kubectl auth can-i VERB RESOURCE[.GROUP][/NAME] [-n NS|-A] [--subresource=S]``,
        asked as a SelfSubjectAccessReview so that kinds whose API is not installed
        (PodMonitor) are answered by RBAC too instead of by kubectl's discovery."""
        res, _, name = resource.partition("/")
        plural, _, group = res.partition(".")
        attrs = {"verb": verb, "resource": plural, "group": group}
        if name:
            attrs["name"] = name
        it = iter(flags)
        for f in it:
            if f == "-n":
                attrs["namespace"] = next(it)
            elif f.startswith("--subresource="):
                attrs["subresource"] = f.split("=", 1)[1]
            else:
                assert f == "-A", f  # all namespaces: no namespace in the review
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        r = self.kubectl().run(
            "create", "--validate=false", "-f", "-", "-o", "json", stdin=json.dumps(review)
        )
        return bool(json.loads(r.stdout)["status"].get("allowed"))


def token_identity(kubectl: Kubectl, admin: Path, sa: str, ns: str, out: Path) -> Identity:
    token = kubectl.run("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    cfg = yaml.safe_load(admin.read_text())
    cluster = cfg["clusters"][0]["cluster"]
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
        "current-context": "c",
    }
    out.write_text(json.dumps(kc))
    out.chmod(0o600)
    who = Kubectl(out).run("auth", "whoami", "-o", "json").stdout
    user = json.loads(who)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{ns}:{sa}"
    assert "certificate-authority-data" in cluster and "client-certificate-data" not in json.dumps(
        kc
    )
    return Identity(out, user)


@contextmanager
def operator(identity: Identity, log: Path, *args: str, **env: str) -> Iterator[Path]:
    run_args = ["--health-port", "0", "--metrics-port", "0", "--control-interval", "2", *args]
    with sluice_run(identity.kubeconfig, run_args, log, env):
        yield log


def refusals(log: Path, user: str) -> list[str]:
    """RBAC denials (and kopf's fallbacks for them) in the operator's log."""
    return [
        line
        for line in log.read_text().splitlines()
        if (user in line and " cannot " in line) or "Not enough permissions" in line
    ]


def sample(ns: str, replicas: int) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    doc["metadata"]["namespace"] = ns
    doc["spec"]["replicas"] = replicas
    return doc


def apply_as_git(kubectl: Kubectl, doc: dict[str, Any]) -> None:
    """What a GitOps tool does: server-side apply of the manifest as kept in git."""
    kubectl.run(
        "apply", "--server-side", "--field-manager=gitops", "-f", "-", stdin=json.dumps(doc)
    )


def served(kubectl: Kubectl, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    obj: dict[str, Any] | None = kubectl.get(ISVC, name, "-n", ns)
    if not obj:
        return None
    st = obj.get("status") or {}
    ready = next((c for c in st.get("conditions") or [] if c["type"] == "Ready"), {})
    dep = kubectl.get("deployment", f"{name}-main", "-n", ns)
    ok = (
        ready.get("status") == "True"
        and st.get("observedGeneration") == obj["metadata"]["generation"]
        and dep is not None
        and dep["spec"]["replicas"] == replicas
    )
    return obj if ok else None


def serve_and_update(kubectl: Kubectl, ns: str) -> None:
    """The reconcile scenario: a sample becomes Ready, then follows a spec change."""
    doc = sample(ns, replicas=2)
    name = doc["metadata"]["name"]
    apply_as_git(kubectl, doc)
    obj = until(lambda: served(kubectl, ns, name, 2), 120, f"{name} Ready, generation 1")
    assert obj["metadata"]["generation"] == 1
    for kind, child in (("service", name), ("service", f"{name}-main")):
        assert kubectl.get(kind, child, "-n", ns) is not None, f"{kind}/{child}"
    events = kubectl.get("events", "-n", ns, "--field-selector", f"involvedObject.name={name}")
    assert any(e.get("source", {}).get("component") == "sluice" for e in events["items"])

    doc["spec"]["replicas"] = 1
    apply_as_git(kubectl, doc)
    obj = until(lambda: served(kubectl, ns, name, 1), 120, f"{name} Ready at generation 2")
    assert obj["metadata"]["generation"] == 2

    # No drift: the operator wrote the status only; the spec is exactly git's.
    obj = kubectl.get(ISVC, name, "-n", ns, "--show-managed-fields")
    assert {mf.get("subresource") for mf in obj["metadata"]["managedFields"]} == {None, "status"}
    for mf in obj["metadata"]["managedFields"]:
        if mf.get("subresource") != "status":
            assert mf["manager"] == "gitops", f"{mf['manager']} wrote {mf.get('fieldsV1')}"
    diff = kubectl.run(
        "diff", "--server-side", "--field-manager=gitops", "-f", "-", stdin=json.dumps(doc),
        check=False,
    )  # fmt: skip
    assert diff.returncode == 0, diff.stdout + diff.stderr


# ------------------------------------------------------------------ cluster mode


@pytest.fixture(scope="module")
def helm(kubeconfig: Path) -> Helm:
    return Helm(kubeconfig)


@pytest.fixture(scope="module")
def cluster_release(
    helm: Helm, kubectl: Kubectl, kubeconfig: Path, crds: None, tmp_path_factory: Any
) -> Iterator[tuple[str, str, Identity]]:
    with temp_namespace(kubectl, "rbac") as ns:
        release = f"rb-{ns.rsplit('-', 1)[-1]}"
        helm.run("install", release, str(CHART), "-n", ns)
        sa = f"{release}-sluice"
        identity = token_identity(
            kubectl, kubeconfig, sa, ns, tmp_path_factory.mktemp("rbac") / "kubeconfig"
        )
        try:
            yield ns, release, identity
        finally:
            helm.run("uninstall", release, "-n", ns, "--wait", check=False)


def test_chart_identity_runs_the_operator_cluster_wide_with_leader_election(
    kubectl: Kubectl, cluster_release: tuple[str, str, Identity]
) -> None:
    ns, release, identity = cluster_release
    lease = f"{release}-sluice-leader"
    log = REPO / ".cluster" / "logs" / f"rbac-cluster-{ns}.log"
    env = {"POD_NAME": "rbac-op", "SLUICE_LEASE_NAMESPACE": ns, "SLUICE_LEASE_NAME": lease}
    with temp_namespace(kubectl, "rbac-app") as app, operator(identity, log, **env):
        until(
            lambda: (
                (kubectl.get("lease", lease, "-n", ns) or {}).get("spec", {}).get("holderIdentity")
                == "rbac-op"
            ),
            30,
            "the operator to hold the chart's Lease (get + update, no create)",
        )
        serve_and_update(kubectl, app)
    assert not refusals(log, identity.user), refusals(log, identity.user)


ALLOWED_CLUSTER = [
    ("list", ISVC, "-A"),
    ("watch", ISVC, "-A"),
    ("update", ISVC, "--subresource=status", "-n", "default"),
    ("patch", "deployments.apps", "-n", "default"),
    ("create", "deployments.apps", "-n", "default"),
    ("delete", "services", "-n", "default"),
    ("patch", "httproutes.gateway.networking.k8s.io", "-n", "default"),
    ("create", "podmonitors.monitoring.coreos.com", "-n", "default"),
    ("create", "events", "-n", "default"),
    ("list", "pods", "-A"),
    ("watch", "pods", "-A"),  # the watch cache (reconcile/cache.py)
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
]
REFUSED_EVERYWHERE = [
    ("get", "secrets", "-n", "default"),
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("create", "pods", "-n", "default"),
    ("delete", "pods", "-n", "default"),
    ("get", "pods", "-n", "default"),  # listed, never fetched one by one
    ("get", "pods", "--subresource=log", "-n", "default"),
    ("create", "pods", "--subresource=exec", "-n", "default"),
    ("get", "configmaps", "-n", "default"),
    ("update", ISVC, "-n", "default"),  # the spec is the user's
    ("patch", ISVC, "-n", "default"),
    ("create", ISVC, "-n", "default"),
    ("delete", ISVC, "-n", "default"),
    ("update", ISVC, "--subresource=scale", "-n", "default"),
    ("update", "deployments.apps", "-n", "default"),  # only server-side apply
    ("update", "deployments.apps", "--subresource=scale", "-n", "default"),
    ("list", "nodes"),
    ("delete", "namespaces"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("create", "roles.rbac.authorization.k8s.io", "-n", "default"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "serviceaccounts", "--subresource=token", "-n", "default"),
    ("create", "leases.coordination.k8s.io", "-n", "default"),
]


def test_cluster_identity_may_do_exactly_what_the_operator_does(
    cluster_release: tuple[str, str, Identity],
) -> None:
    ns, release, identity = cluster_release
    lease = f"leases.coordination.k8s.io/{release}-sluice-leader"
    for check in ALLOWED_CLUSTER:
        assert identity.can(*check), f"refused: {check}"
    assert identity.can("get", lease, "-n", ns) and identity.can("update", lease, "-n", ns)
    for check in REFUSED_EVERYWHERE:
        assert not identity.can(*check), f"allowed: {check}"
    # The Lease rights name one Lease in one namespace.
    assert not identity.can("update", "leases.coordination.k8s.io/other", "-n", ns)
    assert not identity.can("create", "leases.coordination.k8s.io", "-n", ns)
    assert not identity.can("update", lease, "-n", "default")


def test_cluster_identity_is_refused_secrets_for_real(
    cluster_release: tuple[str, str, Identity], kubectl: Kubectl
) -> None:
    ns, _, identity = cluster_release
    kubectl.run("create", "secret", "generic", "model-store-credentials", "-n", ns,
                "--from-literal=AWS_SECRET_ACCESS_KEY=hunter2")  # fmt: skip
    as_sa = identity.kubectl()
    for args in (("get", "secret", "model-store-credentials", "-n", ns), ("get", "secrets", "-A")):
        r = as_sa.run(*args, check=False)
        assert r.returncode != 0 and "Forbidden" in r.stderr, r.stdout + r.stderr
        assert "hunter2" not in r.stdout
    r = as_sa.run("get", "configmaps", "-n", ns, check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr


# --------------------------------------------------------------- namespaced mode


def test_namespaced_mode_serves_its_namespace_with_no_cluster_rights(
    helm: Helm, kubectl: Kubectl, kubeconfig: Path, crds: None, tmp_path: Path
) -> None:
    with temp_namespace(kubectl, "rbacns") as ns, temp_namespace(kubectl, "team") as team:
        release = f"rn-{ns.rsplit('-', 1)[-1]}"
        helm.run(
            "install", release, str(CHART), "-n", ns,
            "--set", f"watchNamespaces={{{team}}},leaderElection.enabled=false,replicaCount=1",
        )  # fmt: skip
        try:
            identity = token_identity(
                kubectl, kubeconfig, f"{release}-sluice", ns, tmp_path / "kubeconfig"
            )
            assert identity.can("list", ISVC, "-n", team)
            assert identity.can("patch", "deployments.apps", "-n", team)
            for check in (
                ("list", ISVC, "-A"),
                ("list", ISVC, "-n", "default"),
                ("patch", "deployments.apps", "-n", "default"),
                ("list", "namespaces"),
                ("list", "customresourcedefinitions.apiextensions.k8s.io"),
                ("get", "secrets", "-n", team),
                ("get", "leases.coordination.k8s.io", "-n", ns),  # no Lease without election
            ):
                assert not identity.can(*check), f"allowed: {check}"

            log = REPO / ".cluster" / "logs" / f"rbac-namespaced-{team}.log"
            with operator(identity, log, "--standalone", "-n", team):
                serve_and_update(kubectl, team)
            assert not refusals(log, identity.user), refusals(log, identity.user)
        finally:
            helm.run("uninstall", release, "-n", ns, "--wait", check=False)
