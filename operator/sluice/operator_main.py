"""``sluice run``: start the operator (kopf) against the current kubeconfig.

Unless ``--standalone``, the process first takes part in leader election on a
Lease (see leader.py): a standby serves its metrics (``sluice_leader 0``) and
answers liveness on the health port while it waits, and only the holder runs
kopf. kopf itself always runs with ``standalone=True``: its peering pauses
all replicas of equal priority, so leadership is ours, not kopf's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf

log = logging.getLogger("sluice.main")


class _StandbyHealth(BaseHTTPRequestHandler):
    """Liveness of a standby: the process is up and waiting for the Lease."""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/healthz":
            self.send_error(404)
            return
        body = b'{"leader": false}\n'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass  # probes every few seconds: not worth a log line


@contextlib.contextmanager
def _standby_health(port: int) -> Iterator[None]:
    """Serve /healthz on ``port`` while waiting; free the port for kopf after."""
    if not port:
        yield
        return
    server = ThreadingHTTPServer(("0.0.0.0", port), _StandbyHealth)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, name="standby-health", daemon=True)
    t.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        t.join(timeout=5)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set the yielded event (kopf installs its own handlers later)."""
    stop = threading.Event()
    sigs = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in sigs}
    for s in sigs:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _exit_on_lost_lease() -> None:
    """Another replica may act now: stop at once, mid-work, as client-go does.

    The exit code is non-zero so the kubelet restarts the container, which
    comes back as a standby.
    """
    logging.shutdown()
    sys.stderr.flush()
    os._exit(3)


def run(
    *,
    namespaces: list[str],
    prometheus_url: str | None,
    prometheus_token_file: str | None,
    prometheus_ca_file: str | None,
    query_timeout: float,
    control_interval: float,
    metrics_port: int,
    rate_window: str | None = None,
    signals_refresh: float | None = None,
    health_port: int,
    log_level: str,
    standalone: bool,
) -> int:
    logging.basicConfig(
        level=getattr(logging, log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import handlers, observability
    from .leader import LeaderElector, LeaseConfig
    from .reconcile.kube import load_config

    metrics = observability.serve(metrics_port)
    observability.set_leader(False)
    elector: LeaderElector | None = None
    try:
        if not standalone:
            elector = LeaderElector(load_config(), LeaseConfig.from_env())
            with _standby_health(health_port), _stop_on_signals() as stop:
                if not elector.acquire(stop):
                    log.info("stopped while standing by")
                    return 0
            elector.hold(on_lost=_exit_on_lost_lease)
            log.info("leading as %s", elector.config.identity)
        observability.set_leader(True)

        handlers.configure(
            namespaces,
            {
                "prometheus_url": prometheus_url,
                "prometheus_token_file": prometheus_token_file,
                "prometheus_ca_file": prometheus_ca_file,
                "query_timeout": query_timeout,
                "control_interval": control_interval,
                "metrics_port": metrics_port,
                "rate_window": rate_window,
                "signals_refresh": signals_refresh,
            },
        )
        settings = kopf.OperatorSettings()
        # Watching only named namespaces needs no cluster-scoped reads: kopf
        # then neither lists Namespaces nor watches CRDs (which the namespaced
        # install's Roles cannot grant). Cluster-wide, kopf watches CRDs so the
        # Gateway API or Prometheus Operator installed later are noticed.
        settings.scanning.disabled = bool(namespaces)
        liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None
        kopf.run(
            standalone=True,
            namespaces=namespaces,
            clusterwide=not namespaces,
            liveness_endpoint=liveness,
            settings=settings,
        )
        return 0
    finally:
        observability.set_leader(False)
        if elector is not None:
            elector.release()
        if metrics is not None:
            metrics.close()
