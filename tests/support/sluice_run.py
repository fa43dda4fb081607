"""``sluice run`` as a child process with an environment of its own.

For tests that need what tests/support/operator.py's standalone runner does not
give: leader election (the chart's POD_NAME and SLUICE_LEASE_* variables), or an
identity other than the admin's (a ServiceAccount token's kubeconfig).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def start(
    kubeconfig: Path, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "sluice.cli", "run", *args]
    full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), **(env or {})}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the operator releases its Lease and stops), SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def sluice_run(
    kubeconfig: Path, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = start(kubeconfig, args, log, env)
    try:
        yield proc
    finally:
        stop(proc)
