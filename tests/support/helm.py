"""Helm for tests: the version in hack/versions.env, built and cached by hack/build-bins.sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support.kube import localcluster_module

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "sluice"


def versions() -> dict[str, str]:
    """hack/versions.env, as hack/localcluster.py reads it."""
    v: dict[str, str] = localcluster_module().versions()
    return v


def helm_binary() -> Path:
    """The cached helm binary, built from the Go module proxy when missing."""
    v = versions()["HELM_VERSION"]
    cache = Path(os.environ.get("SLUICE_CACHE", Path.home() / ".cache" / "sluice"))
    path = cache / "bin" / f"helm-{v}" / "helm"
    if not path.exists():
        subprocess.run([str(REPO / "hack" / "build-bins.sh"), "helm"], check=True)
    return path


class Helm:
    """Runs helm with a kubeconfig (or none, for lint and template)."""

    def __init__(self, kubeconfig: Path | None = None) -> None:
        self.binary = helm_binary()
        self.kubeconfig = kubeconfig
        # helm template assumes an old Kubernetes unless told; the chart needs a recent one.
        self.kube_version = versions()["KUBE_VERSION"]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.binary), *args]
        if self.kubeconfig is not None:
            cmd.append(f"--kubeconfig={self.kubeconfig}")
        r = subprocess.run(cmd, capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{r.stderr.strip()}")
        return r

    def template(
        self, release: str = "sluice", namespace: str = "sluice-system", *args: str
    ) -> str:
        return self.run(
            "template",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            self.kube_version,
            *args,
        ).stdout
