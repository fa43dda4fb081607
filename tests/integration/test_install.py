"""The install paths on the local cluster: helm template + server-side dry run,
helm install / upgrade / uninstall, and kubectl apply of manifests/install.yaml.

The cluster's kwok "kubelet" runs no containers, so the operator pods here are
scheduled and marked Running without the image; what is tested is what the API
server decides: schema, admission (Pod Security "restricted" enforced on the
namespace), RBAC objects, the rollout of changed values, and what is left after
an uninstall. The operator itself runs under the chart's identity in test_rbac.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import CHART, REPO, Helm
from tests.support.kube import Kubectl, temp_namespace
from tests.support.wait import until

INSTALL_YAML = REPO / "manifests" / "install.yaml"
DOCS = REPO / "docs" / "install.md"
CRD = "customresourcedefinition/inferenceservices.sluice.dev"
NAMESPACED_KINDS = (
    "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,leases,"
    "configmaps,poddisruptionbudgets,secrets"
)
CLUSTER_KINDS = "clusterroles,clusterrolebindings"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
}


@pytest.fixture(scope="module")
def helm(kubeconfig: Path) -> Helm:
    return Helm(kubeconfig)


@pytest.fixture
def restricted_ns(kubectl: Kubectl) -> Iterator[str]:
    """A namespace that enforces Pod Security "restricted": a violating pod is refused."""
    with temp_namespace(kubectl, "install") as ns:
        kubectl.run("label", "namespace", ns, *(f"{k}={v}" for k, v in RESTRICTED.items()))
        yield ns


def items(kubectl: Kubectl, kinds: str, selector: str, *where: str) -> list[str]:
    out: dict[str, Any] = kubectl.get(kinds, "-l", selector, *where)
    return [
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in out["items"]
        if not o["metadata"].get("deletionTimestamp")
    ]


def leftovers(kubectl: Kubectl, selector: str) -> list[str]:
    return items(kubectl, NAMESPACED_KINDS, selector, "-A") + items(
        kubectl, CLUSTER_KINDS, selector
    )


def available(kubectl: Kubectl, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    d: dict[str, Any] | None = kubectl.get("deployment", name, "-n", ns)
    if not d:
        return None
    st = d.get("status") or {}
    ok = (
        st.get("observedGeneration") == d["metadata"]["generation"]
        and st.get("updatedReplicas") == replicas
        and st.get("availableReplicas") == replicas
        and st.get("replicas") == replicas  # no old pods left over
    )
    return d if ok else None


def running_pods(kubectl: Kubectl, ns: str, selector: str) -> list[dict[str, Any]]:
    pods: list[dict[str, Any]] = kubectl.get("pods", "-n", ns, "-l", selector)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


# ------------------------------------------------------------------ dry runs


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={default,kube-public}"],
        ["--set", "leaderElection.enabled=false,replicaCount=1,dashboard.enabled=true"],
    ],
    ids=["cluster", "namespaced", "single-with-dashboard"],
)
def test_helm_template_passes_server_side_dry_run(
    helm: Helm, kubectl: Kubectl, restricted_ns: str, crds: None, values: list[str]
) -> None:
    text = helm.template("dry", restricted_ns, "--include-crds", *values)
    r = kubectl.run("apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=text)
    kinds = {d["kind"] for d in yaml.safe_load_all(text) if d}
    assert r.stdout.count("(server dry run)") == sum(1 for d in yaml.safe_load_all(text) if d)
    assert "Deployment" in kinds
    # The namespace warns on, and enforces, the "restricted" level: not a word from it.
    assert "PodSecurity" not in r.stderr and "violate" not in r.stderr, r.stderr


def test_crd_upgrade_path_from_the_chart(helm: Helm, kubectl: Kubectl, crds: None) -> None:
    """What the README says to run before `helm upgrade`, as a server-side dry run."""
    shown = helm.run("show", "crds", str(CHART)).stdout
    assert yaml.safe_load(shown)["metadata"]["name"] == "inferenceservices.sluice.dev"
    r = kubectl.run(
        "apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-", stdin=shown
    )
    assert "inferenceservices.sluice.dev" in r.stdout


# ------------------------------------------------------------ helm lifecycle


def test_helm_install_upgrade_uninstall_leaves_nothing(
    helm: Helm, kubectl: Kubectl, restricted_ns: str, crds: None
) -> None:
    ns = restricted_ns
    release = f"sl-{ns.rsplit('-', 1)[-1]}"
    full = f"{release}-sluice"
    selector = f"app.kubernetes.io/instance={release}"
    with temp_namespace(kubectl, "watched") as watched:
        helm.run("install", release, str(CHART), "-n", ns, "--wait", "--timeout", "180s")
        until(lambda: available(kubectl, ns, full, 2), 60, "2 operator replicas available")
        pods = until(lambda: len(p := running_pods(kubectl, ns, selector)) == 2 and p, 60, "pods")
        for p in pods:  # admitted by the enforcing namespace, with the chart's context
            assert p["spec"]["securityContext"]["runAsNonRoot"] is True
            assert p["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
        assert kubectl.get("clusterrole", full) is not None
        assert kubectl.get("clusterrolebinding", full) is not None
        assert kubectl.get("lease", f"{full}-leader", "-n", ns) is not None
        assert kubectl.get("service", f"{full}-metrics", "-n", ns) is not None
        generation = kubectl.get("deployment", full, "-n", ns)["metadata"]["generation"]

        # Changed values: namespaced mode, more logging, slower control loop.
        helm.run(
            "upgrade",
            release,
            str(CHART),
            "-n",
            ns,
            "--reuse-values",
            "--set",
            f"watchNamespaces={{{watched}}},logLevel=DEBUG,controlInterval=30",
            "--wait",
            "--timeout",
            "180s",
        )
        dep = until(lambda: available(kubectl, ns, full, 2), 90, "the upgraded rollout")
        assert dep["metadata"]["generation"] > generation
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        for a in (f"--namespace={watched}", "--log-level=DEBUG", "--control-interval=30"):
            assert a in args
        assert kubectl.get("clusterrole", full) is None, "the ClusterRole outlived the upgrade"
        assert kubectl.get("clusterrolebinding", full) is None
        assert kubectl.get("role", full, "-n", watched) is not None
        assert kubectl.get("rolebinding", full, "-n", watched) is not None
        history = yaml.safe_load(helm.run("history", release, "-n", ns, "-o", "yaml").stdout)
        assert [h["status"] for h in history] == ["superseded", "deployed"]

        helm.run("uninstall", release, "-n", ns, "--wait", "--timeout", "120s")
        until(lambda: not leftovers(kubectl, selector), 90, "nothing of the release left")
        assert not items(kubectl, "secrets", f"owner=helm,name={release}", "-n", ns)
        assert kubectl.get("role", full, "-n", watched) is None
    # The CRD stays: removing it would delete every InferenceService in the cluster.
    assert kubectl.get(CRD) is not None


# ------------------------------------------- docs/install.md, command by command


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", DOCS.read_text(), re.S)


def block(marker: str) -> str:
    """The one ```sh block of docs/install.md that contains ``marker``."""
    found = [b for b in shell_blocks() if marker in b]
    assert len(found) == 1, f"{len(found)} blocks with {marker!r}"
    return found[0]


@pytest.fixture
def sh(helm: Helm, kubeconfig: Path) -> Callable[[str], str]:
    """Run a block of docs/install.md as written, with this cluster and the cached helm."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "PATH": f"{helm.binary.parent}:{os.environ['PATH']}",
    }

    def run(script: str) -> str:
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, f"{script}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        return r.stdout

    return run


def test_the_documented_helm_and_kubectl_paths_work_as_written(
    helm: Helm, kubectl: Kubectl, sh: Callable[[str], str], crds: None
) -> None:
    ns, selector = "sluice-system", "app.kubernetes.io/instance=sluice"
    docs = [d for d in yaml.safe_load_all(INSTALL_YAML.read_text()) if d]
    assert next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"] == ns
    until(lambda: kubectl.get("namespace", ns) is None, 120, f"no {ns} from an earlier run")
    try:
        # 1. Helm: install, upgrade (CRD first), uninstall.
        sh(block("kubectl create namespace sluice-system"))
        dep = available(kubectl, ns, "sluice", 2)
        assert dep is not None
        c = dep["spec"]["template"]["spec"]["containers"][0]
        assert c["image"] == "registry.example.com/sluice/operator:0.1.0"
        assert "--prometheus-url=http://prometheus-operated.monitoring:9090" in c["args"]
        sh(block("helm upgrade sluice"))
        history = yaml.safe_load(helm.run("history", "sluice", "-n", ns, "-o", "yaml").stdout)
        assert [h["revision"] for h in history] == [1, 2]
        sh(block("helm uninstall sluice"))
        until(lambda: not leftovers(kubectl, selector), 90, "nothing of the Helm release left")

        # 2. kubectl: apply, nothing left to change, the image rewritten, delete.
        out = sh(block("kubectl apply --server-side -f manifests/install.yaml"))
        assert out.count("serverside-applied") == len(docs)
        assert len(running_pods(kubectl, ns, selector)) == 2
        diff = kubectl.run("diff", "--server-side", "-f", str(INSTALL_YAML), check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        sh(block("sed 's#image: sluice/operator:"))
        dep = until(lambda: available(kubectl, ns, "sluice", 2), 90, "the new image rolled out")
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == "registry.example.com/sluice/operator:0.1.0"
    finally:
        # The documented kubectl uninstall: everything but the CRD (so every model stays).
        sh(block("kubectl delete -f manifests/install.yaml -l"))
    until(lambda: not leftovers(kubectl, selector), 120, "nothing of install.yaml left")
    until(lambda: kubectl.get("namespace", ns) is None, 120, f"{ns} deleted")
    assert kubectl.get(CRD) is not None


def test_the_documented_argocd_cm_patch_installs_the_health_check(
    kubectl: Kubectl, sh: Callable[[str], str]
) -> None:
    """No Argo CD runs here; its settings ConfigMap takes the patch as documented."""
    until(
        lambda: (
            (n := kubectl.get("namespace", "argocd")) is None or n["status"]["phase"] == "Active"
        ),
        120,
        "no argocd namespace still terminating",
    )
    created = kubectl.get("namespace", "argocd") is None
    if created:
        kubectl.run("create", "namespace", "argocd")
    try:
        if kubectl.get("configmap", "argocd-cm", "-n", "argocd") is None:
            kubectl.run("create", "configmap", "argocd-cm", "-n", "argocd")
        sh(block("kubectl -n argocd patch configmap argocd-cm"))
        cm = kubectl.get("configmap", "argocd-cm", "-n", "argocd")
        key = "resource.customizations.health.sluice.dev_InferenceService"
        assert cm["data"][key] == (REPO / "manifests" / "argocd" / "health.lua").read_text()
        assert "resource.customizations.health.argoproj.io_Application" in cm["data"]
    finally:
        if created:
            kubectl.run("delete", "namespace", "argocd", "--wait=false")
