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

from .kube import Kubectl, localcluster_module
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


def install_crds(kubectl: Kubectl) -> None:
    """Apply Sluice's CRD and the Gateway API CRDs (from the Go module cache)."""
    cluster = localcluster_module().Cluster()
    cluster.kubeconfig = kubectl.kubeconfig
    cluster.install_crds()
