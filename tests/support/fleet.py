"""Real tritonserver processes that stand in for each variant's pods.

The local cluster's pods are kwok's (they run nothing), so the data plane of a
control test is a handful of tritonserver processes on loopback, one per
variant, each serving one version of a Python-backend model with a chosen
service time. Prometheus scrapes them with the labels a PodMonitor would add
(namespace, inferenceservice, variant, pod), so the operator sees exactly the
series it would see from the cluster.

Built on :mod:`tests.support.triton` (the wheel's tritonserver, its backend
directory and test model repositories). Keep fleets small: each process is a
server plus a Python stub, and the machine has two cores.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube import Kubectl
from tests.support.operator import running_operator
from tests.support.prometheus import Target
from tests.support.triton import (
    Proc,
    TritonInstall,
    find_install,
    free_port,
    http_get,
    make_model_repository,
    prepare_backends,
    triton_env,
)
from tests.support.wait import until

MODEL = "m"


@dataclass
class StandIn:
    """One tritonserver playing the pods of one variant."""

    variant: str
    version: int
    sleep_ms: float
    http_port: int
    metrics_port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_address(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"


class Fleet:
    def __init__(self, workdir: Path, install: TritonInstall | None = None) -> None:
        self.dir = workdir
        self.install = install or find_install()
        self.backends = prepare_backends(self.install, workdir)
        self.servers: dict[str, StandIn] = {}

    def start(self, variant: str, version: int, sleep_ms: float = 0) -> StandIn:
        """Start a tritonserver serving ``version`` of the model, ``sleep_ms`` per request.

        One model instance and no batching (max_batch_size 1): requests queue
        behind each other, so tail latency grows with load, as on a saturated GPU.
        """
        assert variant not in self.servers, f"{variant} already started"
        repo = make_model_repository(
            self.dir / f"repo-{variant}",
            model=MODEL,
            versions=(version,),
            max_batch_size=1,
            sleep_ms=sleep_ms,
        )
        http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
        proc = Proc(
            [
                str(self.install.binary),
                f"--model-repository={repo}",
                f"--backend-directory={self.backends}",
                "--model-control-mode=none",
                "--strict-readiness=true",
                f"--http-port={http_port}",
                f"--grpc-port={grpc_port}",
                f"--metrics-port={metrics_port}",
                "--http-address=127.0.0.1",
                "--grpc-address=127.0.0.1",
                "--metrics-address=127.0.0.1",
                "--allow-metrics=true",
                "--allow-gpu-metrics=false",
                "--allow-cpu-metrics=false",
                # As Sluice renders them (render/triton.py): summaries for p95/p99.
                "--metrics-config=summary_latencies=true",
                "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.95:0.001,0.99:0.001",
                "--log-verbose=0",
            ],
            env=triton_env(self.install),
            log_path=self.dir / f"triton-{variant}.log",
        ).start()
        server = StandIn(variant, version, sleep_ms, http_port, metrics_port, proc)
        self.servers[variant] = server
        ready = f"{server.url}/v2/models/{MODEL}/versions/{version}/ready"
        until(
            lambda: http_get(ready, timeout=2)[0] == 200 or not proc.running(),
            120,
            f"tritonserver for {variant} to serve version {version}",
        )
        assert proc.running(), f"tritonserver for {variant} exited:\n{proc.log()[-3000:]}"
        return server

    def targets(self, namespace: str, isvc: str) -> list[Target]:
        """Scrape targets labelled as the PodMonitor labels the pods' series."""
        return [
            Target(
                s.metrics_address,
                {
                    "namespace": namespace,
                    "inferenceservice": isvc,
                    "variant": s.variant,
                    "pod": f"{isvc}-{s.variant}-0",
                },
            )
            for s in self.servers.values()
        ]

    def stop(self) -> None:
        errors = []
        for s in self.servers.values():
            try:
                s.proc.stop(timeout=30)
            except Exception as e:  # stop the others regardless
                errors.append(f"{s.variant}: {e}")
        self.servers.clear()
        assert not errors, errors


# ------------------------------------------------------- the cluster side of it

ISVC = "inferenceservices.sluice.dev"


def isvc_manifest(namespace: str, name: str, version: int, **spec: Any) -> dict[str, Any]:
    """A CPU-only InferenceService whose kwok pods fit anywhere."""
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": MODEL, "repository": "s3://models/triton", "version": version},
            "gpu": {"count": 0},
            "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
            **spec,
        },
    }


class ClusterView:
    """Reads of one InferenceService and its children, for assertions and waits."""

    def __init__(self, kubectl: Kubectl, namespace: str, name: str) -> None:
        self.kubectl, self.ns, self.name = kubectl, namespace, name

    def obj(self) -> dict[str, Any]:
        o: dict[str, Any] | None = self.kubectl.get(ISVC, self.name, "-n", self.ns)
        assert o is not None, f"{ISVC}/{self.name} is gone"
        return o

    def status(self) -> dict[str, Any]:
        return dict(self.obj().get("status") or {})

    def condition(self, type_: str) -> dict[str, Any]:
        for c in self.status().get("conditions") or []:
            if c["type"] == type_:
                return dict(c)
        return {}

    def wait_metrics_query_failed(self, timeout: float = 30) -> dict[str, Any]:
        """Wait until MetricsAvailable is False because Prometheus cannot be queried."""
        cond: dict[str, Any] = until(
            lambda: (
                (c := self.condition("MetricsAvailable")).get("reason") == "QueryFailed"
                and c.get("status") == "False"
                and c
            ),
            timeout,
            "MetricsAvailable=False because Prometheus cannot be queried",
        )
        return cond

    def rollout(self) -> dict[str, Any]:
        return dict(self.status().get("rollout") or {})

    def scaling(self, variant: str = "main") -> dict[str, Any]:
        for e in self.status().get("scaling") or []:
            if e["variant"] == variant:
                return dict(e)
        return {}

    def deployment(self, variant: str) -> dict[str, Any] | None:
        d: dict[str, Any] | None = self.kubectl.get(
            "deployment", f"{self.name}-{variant}", "-n", self.ns
        )
        return d

    def replicas(self, variant: str = "main") -> int | None:
        d = self.deployment(variant)
        return None if d is None else int(d["spec"]["replicas"])

    def route_weights(self) -> dict[str, int]:
        route = self.kubectl.get("httproutes.gateway.networking.k8s.io", self.name, "-n", self.ns)
        if route is None:
            return {}
        for rule in route["spec"]["rules"]:
            if not any("headers" in m for m in rule.get("matches") or []):
                return {b["name"]: int(b["weight"]) for b in rule["backendRefs"]}
        return {}

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        evs = self.kubectl.get(
            "events", "-n", self.ns, "--field-selector", f"involvedObject.name={self.name}"
        )["items"]
        return [e for e in evs if reason is None or e["reason"] == reason]

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.kubectl.run(
            "patch",
            ISVC,
            self.name,
            "-n",
            self.ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": spec}),
        )


@contextmanager
def control_operator(
    kubeconfig: Path,
    namespace: str,
    prometheus_url: str,
    log_dir: Path,
    metrics_port: int = 0,
) -> Iterator[subprocess.Popen[bytes]]:
    """`sluice run` for one namespace with short windows: control every second, a
    5 s rate window (Prometheus scrapes every second), signals refreshed every 2 s."""
    with running_operator(
        kubeconfig,
        [namespace],
        "--prometheus-url",
        prometheus_url,
        "--query-timeout",
        "3",
        "--rate-window",
        "5s",
        "--signals-refresh",
        "2",
        "--metrics-port",  # the last one given wins over running_operator's 0
        str(metrics_port),
        control_interval=1.0,
        log_path=log_dir / f"operator-{namespace}.log",
    ) as proc:
        yield proc
