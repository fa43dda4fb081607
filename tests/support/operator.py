"""Run the real operator (`sluice run`) as a process against the local cluster.

Each test module that needs one starts it watching only its own namespaces,
so several operators in one session never act on the same objects.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .wait import until

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def running_operator(
    kubeconfig: Path,
    namespaces: Sequence[str],
    *extra: str,
    log_path: Path | None = None,
    control_interval: float = 2.0,
) -> Iterator[subprocess.Popen[bytes]]:
    args = [
        sys.executable,
        "-m",
        "sluice.cli",
        "run",
        "--standalone",
        "--health-port",
        "0",
        "--metrics-port",
        "0",
        "--control-interval",
        str(control_interval),
        *[a for ns in namespaces for a in ("-n", ns)],
        *extra,
    ]
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    log_path = log_path or REPO / ".cluster" / "logs" / f"operator-{'-'.join(namespaces)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        until(lambda: proc.poll() is not None, 10, "the operator to exit")


def install_crds(kubectl: object) -> None:
    """Apply Sluice's CRD and the Gateway API CRDs (from the Go module cache)."""
    from .kube import Kubectl

    assert isinstance(kubectl, Kubectl)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/inferenceservices.sluice.dev",
    )
    versions = dict(
        line.split("=", 1)
        for line in (REPO / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    cache = Path(os.environ.get("SLUICE_CACHE", Path.home() / ".cache" / "sluice"))
    gw = cache / f"gateway-api-{versions['GATEWAY_API_VERSION']}" / "standard.yaml"
    if not gw.exists():
        subprocess.run([str(REPO / "hack" / "build-bins.sh"), "gateway"], check=True)
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(gw))
    kubectl.run(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/httproutes.gateway.networking.k8s.io",
    )
