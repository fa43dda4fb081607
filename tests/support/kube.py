"""The local Kubernetes cluster for integration tests: started by hack/localcluster.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def localcluster_module() -> Any:
    spec = importlib.util.spec_from_file_location("localcluster", REPO / "hack" / "localcluster.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@contextmanager
def local_cluster() -> Iterator[Path]:
    """Yield a kubeconfig: SLUICE_TEST_KUBECONFIG's, a running local cluster, or a new one.

    Only a cluster this fixture started is stopped at the end.
    """
    given = os.environ.get("SLUICE_TEST_KUBECONFIG")
    if given:
        yield Path(given)
        return
    lc = localcluster_module()
    cluster = lc.Cluster()
    if cluster.state().get("dataplane"):
        # `make cluster-up` runs the data plane there; these tests want kwok's pods.
        cluster = lc.Cluster(root=REPO / ".cluster-test")
    started = not cluster.healthy()
    kubeconfig = cluster.up()
    try:
        yield kubeconfig
    finally:
        if started:
            cluster.down()


class Kubectl:
    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {r.stderr.strip()}")
        return r

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str) -> str:
        doc = obj if isinstance(obj, dict) else {"apiVersion": "v1", "kind": "List", "items": obj}
        return self.run("apply", "-f", "-", *extra, stdin=json.dumps(doc)).stdout

    def get(self, *args: str) -> Any:
        r = self.run("get", *args, "-o", "json", check=False)
        if r.returncode != 0:
            if "NotFound" in r.stderr or "not found" in r.stderr:
                return None
            raise RuntimeError(r.stderr)
        return json.loads(r.stdout)


@contextmanager
def temp_namespace(kubectl: Kubectl, prefix: str = "t") -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)
