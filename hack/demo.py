#!/usr/bin/env python3
"""The main job: a local cluster with the operator reconciling the samples.

    python hack/demo.py up     # cluster, CRDs, operator, samples applied and Ready
    python hack/demo.py down   # stop the operator and the cluster, by PID

The operator runs in the background (its PID in .cluster/operator.pid, its
log in .cluster/logs/operator-demo.log) so you can keep using kubectl:

    export KUBECONFIG=$PWD/.cluster/kubeconfig
    kubectl get inferenceservices
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster

REPO = localcluster.REPO
SAMPLES = (
    "model-store-pvc.yaml",
    "resnet50-h100.yaml",
    "text-embed-cpu.yaml",
    "bert-ab.yaml",
)
NAMES = ("resnet50", "text-embed", "bert")


def pid_file(c: localcluster.Cluster) -> Path:
    return c.root / "operator.pid"


def operator_running(c: localcluster.Cluster) -> int | None:
    try:
        pid = int(pid_file(c).read_text())
    except (OSError, ValueError):
        return None
    return pid if localcluster.Cluster.alive(pid) else None


def up() -> int:
    c = localcluster.Cluster()
    kubeconfig = c.up()
    c.install_crds()
    if not operator_running(c):
        log = open(c.logs / "operator-demo.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.cli", "run", "--standalone",
             "--health-port", "0", "--metrics-port", "0", "--control-interval", "5"],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        pid_file(c).write_text(str(proc.pid))
        localcluster.log(f"operator started (pid {proc.pid}, log {c.logs / 'operator-demo.log'})")
    for f in SAMPLES:
        c.kubectl("apply", "-f", str(REPO / "manifests" / "samples" / f))
    t0 = time.monotonic()
    c.kubectl("wait", "--for=condition=Ready", "--timeout=180s",
              *[f"inferenceservices.sluice.dev/{n}" for n in NAMES])
    localcluster.log(f"samples Ready in {time.monotonic() - t0:.1f}s")
    print(c.kubectl("get", "inferenceservices.sluice.dev"))
    print(c.kubectl("get", "deployments,services,httproutes.gateway.networking.k8s.io",
                    "-l", "app.kubernetes.io/managed-by=sluice"))
    print(c.kubectl("get", "pods", "-o", "wide", "-l", "app.kubernetes.io/managed-by=sluice"))
    print(f"export KUBECONFIG={kubeconfig}")
    return 0


def down() -> int:
    c = localcluster.Cluster()
    pid = operator_running(c)
    if pid:
        localcluster.stop_pid(pid, "operator")
    c.down()
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    sys.exit({"up": up, "down": down}[cmd]())
