"""Run the real operator (`sluice run`) as a process against the local cluster.

Each test module that needs one starts it watching only its own namespaces,
so several operators in one session never act on the same objects.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .kube import Kubectl, localcluster_module
from .sluice_run import start, stop
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
    log_path = log_path or REPO / ".cluster" / "logs" / f"operator-{'-'.join(namespaces)}.log"
    proc = start(kubeconfig, args, log_path)
    try:
        yield proc
    finally:
        stop(proc)
        until(lambda: proc.poll() is not None, 10, "the operator to exit")


def install_crds(kubectl: Kubectl) -> None:
    """Apply Sluice's CRD and the Gateway API CRDs (from the Go module cache)."""
    cluster = localcluster_module().Cluster()
    cluster.kubeconfig = kubectl.kubeconfig
    cluster.install_crds()
