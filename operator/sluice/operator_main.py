"""``sluice run``: start the operator (kopf) against the current kubeconfig."""

from __future__ import annotations

import logging

import kopf


def run(
    *,
    namespaces: list[str],
    prometheus_url: str | None,
    prometheus_token_file: str | None,
    prometheus_ca_file: str | None,
    query_timeout: float,
    control_interval: float,
    metrics_port: int,
    health_port: int,
    log_level: str,
    standalone: bool,
) -> int:
    logging.basicConfig(
        level=getattr(logging, log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from . import handlers

    handlers.configure(
        namespaces,
        {
            "prometheus_url": prometheus_url,
            "prometheus_token_file": prometheus_token_file,
            "prometheus_ca_file": prometheus_ca_file,
            "query_timeout": query_timeout,
            "control_interval": control_interval,
            "metrics_port": metrics_port,
        },
    )
    liveness = f"http://0.0.0.0:{health_port}/healthz" if health_port else None
    kopf.run(
        standalone=True,
        namespaces=namespaces,
        clusterwide=not namespaces,
        liveness_endpoint=liveness,
    )
    return 0
