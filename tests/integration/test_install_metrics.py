"""The operator's own metrics, scraped by a real Prometheus, answer every query of
the Grafana dashboard the chart ships (helm/sluice/dashboards/sluice-operator.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import sluice
from tests.support.helm import CHART, REPO
from tests.support.kube import Kubectl, temp_namespace
from tests.support.operator import running_operator
from tests.support.prometheus import PrometheusServer, Target
from tests.support.triton import free_port, http_get
from tests.support.wait import until

DASHBOARD = CHART / "dashboards" / "sluice-operator.json"
# The labels a ServiceMonitor's scrape puts on the operator's series.
LABELS = {"namespace": "sluice-system", "pod": "sluice-7d9f-abcde", "job": "sluice-metrics"}


def panel_queries() -> dict[str, str]:
    d = json.loads(DASHBOARD.read_text())
    out = {}
    for p in d["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$namespace", LABELS["namespace"])
            out[f"{p['title']} [{t['refId']}]"] = expr.replace("$__rate_interval", "1m")
    return out


@pytest.fixture(scope="module")
def scraped(
    kubectl: Kubectl, kubeconfig: Path, crds: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    port = free_port()
    prom = PrometheusServer(tmp_path_factory.mktemp("prom-operator"))
    prom.set_targets([Target(f"127.0.0.1:{port}", LABELS)])
    with (
        temp_namespace(kubectl, "opmetrics") as ns,
        running_operator(kubeconfig, [ns], "--metrics-port", str(port)),
    ):
        prom.start()
        try:
            until(lambda: http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200, 30, "/metrics")
            doc = yaml.safe_load(
                (REPO / "manifests" / "samples" / "resnet50-h100.yaml").read_text()
            )
            doc["metadata"]["namespace"] = ns
            kubectl.apply(doc)
            until(
                lambda: prom.query('sluice_reconciles_total{result="ok"} > 2'),
                90,
                "Prometheus to see several good reconciles",
            )
            yield prom
        finally:
            prom.stop()


def test_operator_exports_its_metrics(scraped: PrometheusServer) -> None:
    leader = scraped.query("sluice_leader")
    assert [float(r["value"][1]) for r in leader] == [1.0]  # standalone: it acts
    build = scraped.query("sluice_build_info")
    assert build and build[0]["metric"]["version"] == sluice.__version__
    count = scraped.query("sum(sluice_reconcile_duration_seconds_count)")
    assert float(count[0]["value"][1]) >= 3


@pytest.mark.parametrize("title", sorted(panel_queries()))
def test_every_dashboard_query_is_valid_and_the_core_panels_have_data(
    scraped: PrometheusServer, title: str
) -> None:
    expr = panel_queries()[title]
    result = scraped.query(expr)  # asserts HTTP 200: the PromQL parses and evaluates
    core = ("Acting replica", "Replicas up", "Version", "Reconciles", "Reconcile duration")
    if title.startswith(core) or title.startswith("Operator "):
        until(lambda: scraped.query(expr), 30, f"data for {title}: {expr}")
    else:  # decisions and query errors: none happen without Prometheus-driven control
        assert isinstance(result, list)
