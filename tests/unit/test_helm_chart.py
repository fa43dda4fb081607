"""The Helm chart offline: lint, schema, rendered objects, and the files derived from it.

Everything here runs helm (hack/versions.env, cached) without a cluster; the
install itself is tested in tests/integration/test_install.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import sluice
from sluice import observability
from tests.support.helm import CHART, REPO, Helm


@pytest.fixture(scope="module")
def helm() -> Helm:
    return Helm()


def render(helm: Helm, *args: str, namespace: str = "ops") -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(helm.template("rel", namespace, *args)) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    c: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


# ---------------------------------------------------------------- derived files


def test_chart_crds_are_the_generated_crds() -> None:
    top = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert top, "no CRDs in crds/"
    assert chart == top, "helm/sluice/crds/ differs from crds/: run hack/gen-install.sh"


def test_generated_files_are_up_to_date() -> None:
    r = subprocess.run(
        [str(REPO / "hack" / "gen-install.sh"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_chart_and_package_versions_agree() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == sluice.__version__
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{sluice.__version__}"' in pyproject


def test_install_yaml_is_the_default_render_plus_a_restricted_namespace(helm: Helm) -> None:
    docs = [d for d in yaml.safe_load_all((REPO / "manifests" / "install.yaml").read_text()) if d]
    ns = docs[0]
    assert ns["kind"] == "Namespace" and ns["metadata"]["name"] == "sluice-system"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert docs[1]["kind"] == "CustomResourceDefinition"  # before anything that needs it
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Lease", "Service"} <= kinds
    assert all(d["metadata"].get("namespace") in (None, "sluice-system") for d in docs), (
        "everything namespaced goes to sluice-system"
    )


# ------------------------------------------------------------------ lint, schema


@pytest.mark.parametrize(
    "values",
    [
        [],
        ["--set", "watchNamespaces={team-a,team-b}"],
        ["--set", "leaderElection.enabled=false,replicaCount=1"],
        [
            "--set",
            "metrics.serviceMonitor.enabled=true,dashboard.enabled=true",
            "--set",
            "prometheus.url=https://prometheus.monitoring:9091",
            "--set",
            "prometheus.bearerToken.secretName=prom-token,prometheus.ca.configMapName=prom-ca",
        ],
    ],
    ids=["defaults", "namespaced", "single", "everything-on"],
)
def test_helm_lint(helm: Helm, values: list[str]) -> None:
    r = helm.run("lint", "--strict", str(CHART), *values, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["--set", "logLevel=LOUD"], "/logLevel"),
        (["--set", "replicaCount=0"], "/replicaCount"),
        (["--set", "controlInterval=-1"], "/controlInterval"),
        (["--set", "wathcNamespaces={a}"], "wathcNamespaces"),
        (["--set", "watchNamespaces={Not_A_Namespace}"], "/watchNamespaces/0"),
        (["--set", "prometheus.url=prometheus:9090"], "/prometheus/url"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set", "image.pullPolicy=Sometimes"], "/image/pullPolicy"),
        (["--set", "prometheus.bearerToken.secretNme=x"], "secretNme"),
        # Two acting replicas without an election would both write.
        (["--set", "leaderElection.enabled=false"], "/replicaCount"),
    ],
)
def test_schema_rejects_wrong_values(helm: Helm, values: list[str], error: str) -> None:
    for cmd in (["lint", str(CHART)], ["template", "x", str(CHART)]):
        r = helm.run(*cmd, "--kube-version", helm.kube_version, *values, check=False)
        assert r.returncode != 0, f"helm {cmd[0]} accepted {values}"
        assert error in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (["--set", "leaderElection.renewDeadlineSeconds=15"], "renewDeadlineSeconds"),
        (["--set", "leaderElection.retryPeriodSeconds=10"], "retryPeriodSeconds"),
        (
            ["--set", "prometheus.ca.configMapName=a,prometheus.ca.secretName=b"],
            "at most one of prometheus.ca",
        ),
        (["--set", "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false"], "needs"),
    ],
)
def test_template_rejects_inconsistent_values(helm: Helm, values: list[str], error: str) -> None:
    r = helm.run(
        "template", "x", str(CHART), "--kube-version", helm.kube_version, *values, check=False
    )
    assert r.returncode != 0 and error in r.stderr, r.stderr


def test_values_yaml_documents_every_key_the_schema_knows() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(s: dict[str, Any], v: Any, path: str) -> None:
        props = s.get("properties")
        if not props or s.get("additionalProperties") is not False:
            return
        assert isinstance(v, dict), path
        assert set(v) == set(props), f"{path or '.'}: values {sorted(v)} vs schema {sorted(props)}"
        for k, sub in props.items():
            walk(sub, v[k], f"{path}.{k}")

    walk(schema, values, "")


# --------------------------------------------------------------- rendered objects

READ = ["get", "list", "watch"]
OWN = [*READ, "create", "patch", "delete"]  # server-side apply = patch, + create for new ones
EXPECTED_RULES = [
    {"apiGroups": ["sluice.dev"], "resources": ["inferenceservices"], "verbs": READ},
    {"apiGroups": ["sluice.dev"], "resources": ["inferenceservices/status"], "verbs": ["update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": OWN},
    {"apiGroups": [""], "resources": ["services"], "verbs": OWN},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": OWN},
    {"apiGroups": ["monitoring.coreos.com"], "resources": ["podmonitors"], "verbs": OWN},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
CRD_WATCH = {
    "apiGroups": ["apiextensions.k8s.io"],
    "resources": ["customresourcedefinitions"],
    "verbs": ["list", "watch"],
}


def test_cluster_mode_rbac_is_exactly_the_operators_calls(helm: Helm) -> None:
    docs = render(helm)
    role = one(docs, "ClusterRole")
    assert role["rules"] == [*EXPECTED_RULES, CRD_WATCH]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": one(docs, "ServiceAccount")["metadata"]["name"],
         "namespace": "ops"}
    ]  # fmt: skip
    everything = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]
    assert not [r for r in everything if "secrets" in r["resources"]]
    assert not [r for r in everything if "*" in r["verbs"] or "*" in r["resources"]]


def test_namespaced_mode_has_roles_and_nothing_cluster_wide(helm: Helm) -> None:
    docs = render(helm, "--set", "watchNamespaces={team-a,team-b}")
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind(docs, "Role")}
    assert roles[("team-a", "rel-sluice")]["rules"] == EXPECTED_RULES
    assert roles[("team-b", "rel-sluice")]["rules"] == EXPECTED_RULES
    bindings = {
        (b["metadata"]["namespace"], b["metadata"]["name"]) for b in by_kind(docs, "RoleBinding")
    }
    assert {("team-a", "rel-sluice"), ("team-b", "rel-sluice")} <= bindings
    args = container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args


def test_the_lease_role_names_one_lease_and_cannot_create(helm: Helm) -> None:
    docs = render(helm)
    lease = one(docs, "Lease")
    role = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader"))
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease["metadata"]["name"]],
            "verbs": ["get", "update"],
        }
    ]
    assert "spec" not in lease, "the operator owns the Lease's spec; the chart sets none"
    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["SLUICE_LEASE_NAME"] == lease["metadata"]["name"]
    assert env["SLUICE_LEASE_NAMESPACE"] == "ops"


def test_two_replicas_elect_one_leader_and_one_is_standalone(helm: Helm) -> None:
    docs = render(helm)
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert "--standalone" not in container(docs)["args"]
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1

    single = render(helm, "--set", "leaderElection.enabled=false,replicaCount=1")
    assert one(single, "Deployment")["spec"]["replicas"] == 1
    assert "--standalone" in container(single)["args"]
    assert not by_kind(single, "Lease") and not by_kind(single, "PodDisruptionBudget")


def test_pod_meets_pod_security_restricted(helm: Helm) -> None:
    pod = one(render(helm), "Deployment")["spec"]["template"]["spec"]
    psc, c = pod["securityContext"], pod["containers"][0]
    sc = c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert f"--health-port={ports['health']}" in c["args"]
    assert f"--metrics-port={ports['metrics']}" in c["args"]


def test_dockerfile_user_is_the_charts_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    docker = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users, "the Dockerfile sets no USER"
    psc = values["podSecurityContext"]
    assert users[-1] == f"{psc['runAsUser']}:{psc['runAsGroup']}"


def test_values_reach_the_operator(helm: Helm) -> None:
    docs = render(
        helm,
        "--set",
        "logLevel=DEBUG,controlInterval=30,prometheus.url=https://prom.monitoring:9091",
        "--set",
        "prometheus.queryTimeout=4,prometheus.bearerToken.secretName=prom-token",
        "--set",
        "prometheus.ca.secretName=prom-ca,prometheus.ca.key=bundle.pem,image.tag=9.9.9",
    )
    c = container(docs)
    args = c["args"]
    assert args[0] == "run"
    for a in (
        "--log-level=DEBUG",
        "--control-interval=30",
        "--prometheus-url=https://prom.monitoring:9091",
        "--query-timeout=4",
        "--prometheus-token-file=/etc/sluice/prometheus/token/token",
        "--prometheus-ca-file=/etc/sluice/prometheus/ca/bundle.pem",
    ):
        assert a in args
    assert c["image"] == "sluice/operator:9.9.9"
    vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert vols["prometheus-token"]["secret"]["secretName"] == "prom-token"
    assert vols["prometheus-ca"]["secret"]["secretName"] == "prom-ca"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["prometheus-token"] == "/etc/sluice/prometheus/token"

    sa_token = render(helm, "--set", "prometheus.bearerToken.useServiceAccountToken=true")
    assert (
        "--prometheus-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token"
        in container(sa_token)["args"]
    )


def test_every_rendered_arg_is_one_sluice_run_accepts(helm: Helm) -> None:
    from sluice.cli import build_parser

    docs = render(
        helm,
        "--set",
        "watchNamespaces={a},leaderElection.enabled=false,replicaCount=1",
        "--set",
        "prometheus.url=http://p:9090,prometheus.bearerToken.secretName=t,prometheus.ca.configMapName=c",
    )
    args = build_parser().parse_args(container(docs)["args"])
    assert args.namespace == ["a"] and args.standalone and args.prometheus_url == "http://p:9090"


def test_metrics_service_servicemonitor_and_dashboard(helm: Helm) -> None:
    docs = render(helm, "--set", "metrics.serviceMonitor.enabled=true,dashboard.enabled=true")
    svc = one(docs, "Service")
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == svc["spec"]["ports"][0]["name"] == "metrics"
    assert all(
        svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items()
    )
    cm = one(docs, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "sluice-operator.json").read_text())
    assert json.loads(cm["data"]["sluice-operator.json"]) == shipped
    assert not by_kind(render(helm), "ServiceMonitor"), "off by default: needs the CRD"


def dashboard_exprs() -> list[str]:
    d = json.loads((CHART / "dashboards" / "sluice-operator.json").read_text())
    return [t["expr"] for p in d["panels"] for t in p["targets"]]


def test_dashboard_queries_only_metrics_the_operator_exports() -> None:
    used = {m for e in dashboard_exprs() for m in re.findall(r"\b(sluice_[a-z_]+)", e)}
    exported = set(observability.METRIC_NAMES)
    histogram = {f"{n}_{s}" for n in exported for s in ("bucket", "sum", "count")}
    assert used <= exported | histogram, used - exported - histogram
    for name in exported:
        assert any(name in e for e in dashboard_exprs()), f"no panel shows {name}"


def test_argocd_example_orders_the_operator_before_the_models(helm: Helm, tmp_path: Path) -> None:
    apps = list(
        yaml.safe_load_all((REPO / "manifests" / "argocd" / "application.yaml").read_text())
    )
    wave = "argocd.argoproj.io/sync-wave"
    waves = {a["metadata"]["name"]: int(a["metadata"]["annotations"][wave]) for a in apps}
    assert waves["sluice"] < waves["models"]
    sluice_app = next(a for a in apps if a["metadata"]["name"] == "sluice")
    assert "finalizers" not in sluice_app["metadata"], "deleting the app would delete the CRD"
    src = sluice_app["spec"]["source"]
    assert (REPO / src["path"]) == CHART
    # Its values pass the chart's schema and render.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(src["helm"]["valuesObject"]))
    docs = render(helm, "-f", str(values), namespace=sluice_app["spec"]["destination"]["namespace"])
    assert one(docs, "ServiceMonitor") and one(docs, "ConfigMap")


def test_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    opaque = {"resources", "podSecurityContext", "securityContext"}  # whole objects

    def leaves(v: Any, path: str) -> list[str]:
        if isinstance(v, dict) and v and path not in opaque and not path.endswith("labels"):
            return [p for k, sub in v.items() for p in leaves(sub, f"{path}.{k}".lstrip("."))]
        return [path]

    missing = [p for p in leaves(values, "") if p not in readme]
    assert not missing, f"helm/sluice/README.md does not mention: {missing}"
