"""The cost of reading the signals: one query per signal for the fleet, or per service.

A real Prometheus (Debian's) scrapes a synthetic exporter that serves Triton's
metric families for N InferenceServices of two variants each. For each N the
operator's own client (:class:`sluice.reconcile.prometheus.Prometheus`) runs
the six fleet-wide queries Sluice uses, then the same six signals queried once
per service (what per-service glue such as one ScaledObject per service does).
Both are timed in the same run; the ratio is what the grouping saves.
"""

from __future__ import annotations

import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sluice.policy import signals as sig
from sluice.reconcile.prometheus import Prometheus
from tests.support.prometheus import PrometheusServer, Target
from tests.support.wait import until

WINDOW = "10s"
SIZES = (10, 50, 100)
VARIANTS = ("main", "b")


class Exporter:
    """Triton-shaped metrics for one pod per path /<service>/<variant>."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                _, svc, variant = self.path.split("/", 2)
                body = exporter.metrics(svc, variant).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def metrics(self, svc: str, variant: str) -> str:
        t = time.monotonic() - self.start
        rate = 10 + hash(svc) % 50
        n = int(t * rate)
        lbl = f'model="m",version="{1 if variant == "main" else 2}"'
        lines = [
            f"nv_inference_request_success{{{lbl}}} {n}",
            f"nv_inference_request_failure{{{lbl}}} {n // 100}",
            f"nv_inference_request_duration_us{{{lbl}}} {n * 20000}",
            f"nv_inference_queue_duration_us{{{lbl}}} {n * 2000}",
        ]
        for q, v in (("0.5", 15000), ("0.9", 22000), ("0.95", 26000), ("0.99", 31000)):
            lines.append(f'nv_inference_request_summary_us{{{lbl},quantile="{q}"}} {v}')
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def targets(exporter: Exporter, n: int) -> list[Target]:
    out = []
    for i in range(n):
        for v in VARIANTS:
            out.append(
                Target(
                    exporter.address,
                    {
                        "__metrics_path__": f"/svc{i}/{v}",
                        "namespace": "bench",
                        "inferenceservice": f"svc{i}",
                        "variant": v,
                        "pod": f"svc{i}-{v}-0",
                    },
                )
            )
    return out


def run(out: Path) -> dict[str, Any]:
    exporter = Exporter()
    prom = PrometheusServer(out.parent.parent / ".bench" / "prometheus", scrape_interval="2s")
    rows = []
    try:
        prom.start()
        client = Prometheus(prom.url, timeout=30)
        fleet = sig.fleet_queries([], WINDOW)
        for n in SIZES:
            prom.set_targets(targets(exporter, n))
            # Enough samples of every series for rate() over the window.
            until(
                lambda n=n: (
                    len(prom.query(f"rate(nv_inference_request_success[{WINDOW}])")) == 2 * n
                ),
                120,
                f"{2 * n} series with a rate",
                interval=1.0,
            )
            per_service = {
                f"svc{i}/{s}": q
                for i in range(n)
                for s, q in sig.fleet_queries([], WINDOW).items()
                for q in [q.replace('inferenceservice!=""', f'inferenceservice="svc{i}"')]
            }
            batched_t, per_t = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                answers = client.query_all(fleet)
                batched_t.append(time.perf_counter() - t0)
                assert all(a.error is None for a in answers.values())
                t0 = time.perf_counter()
                answers_ps = client.query_all(per_service)
                per_t.append(time.perf_counter() - t0)
                assert all(a.error is None for a in answers_ps.values())
            rows.append(
                {
                    "services": n,
                    "series_per_signal": 2 * n,
                    "batched_queries": len(fleet),
                    "per_service_queries": len(per_service),
                    "batched_ms": statistics.median(batched_t) * 1000,
                    "per_service_ms": statistics.median(per_t) * 1000,
                    "ratio_per_service_to_batched": statistics.median(per_t)
                    / statistics.median(batched_t),
                }
            )
        client.close()
    finally:
        prom.stop()
        exporter.stop()
    _plot(out, rows)
    return {"window": WINDOW, "rows": rows}


def _plot(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [r["services"] for r in rows]
    ax.plot(xs, [r["batched_ms"] for r in rows], marker="o", label="6 fleet-wide queries")
    ax.plot(xs, [r["per_service_ms"] for r in rows], marker="s", label="6 queries per service")
    ax.set_xlabel("InferenceServices (2 variants each)")
    ax.set_ylabel("reading all signals, ms (median)")
    ax.set_title("One control cycle's Prometheus reads")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "prometheus.png", dpi=110)
    plt.close(fig)
