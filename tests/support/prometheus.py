"""A real Prometheus (Debian's ``prometheus`` 2.42) on loopback for integration tests.

It scrapes the targets listed in a ``file_sd_configs`` file; each target
carries the labels a PodMonitor would put on a pod's series (namespace,
inferenceservice, variant, pod). Tests rewrite the file to point Prometheus at
the tritonserver processes that stand in for each variant's pods; Prometheus
picks changes up by watching the file.

Started and stopped by PID (:class:`tests.support.triton.Proc`); it can be
stopped and started again on the same port and data directory to simulate an
outage.
"""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.triton import Proc, free_port, http_get
from tests.support.wait import until


@dataclass(frozen=True)
class Target:
    address: str  # host:port of a /metrics endpoint
    labels: Mapping[str, str]


def binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise AssertionError(
            "prometheus not found: install Debian's package (hack/install-deps.sh does: "
            "apt-get install -y prometheus)"
        )
    return path


class PrometheusServer:
    def __init__(self, workdir: Path, scrape_interval: str = "1s") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.targets_file = self.dir / "targets.json"
        self.config_file = self.dir / "prometheus.yml"
        self.scrape_interval = scrape_interval
        self.proc: Proc | None = None
        self.set_targets([])
        self.config_file.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": scrape_interval,
                        "scrape_timeout": scrape_interval,
                        "evaluation_interval": scrape_interval,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "triton",
                            "metrics_path": "/metrics",
                            "file_sd_configs": [
                                {"files": [str(self.targets_file)], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                }
            )
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Replace the scraped targets (atomically: Prometheus watches the file)."""
        doc = [{"targets": [t.address], "labels": dict(t.labels)} for t in targets]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.targets_file)

    def start(self) -> PrometheusServer:
        assert self.proc is None or not self.proc.running(), "already running"
        self.proc = Proc(
            [
                binary(),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
                "--log.level=warn",
            ],
            env={"PATH": "/usr/bin:/bin"},
            log_path=self.dir / "prometheus.log",
        ).start()
        until(
            lambda: http_get(f"{self.url}/-/ready", timeout=2)[0] == 200,
            60,
            f"Prometheus on {self.url} to be ready (log: {self.dir / 'prometheus.log'})",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=30)

    def running(self) -> bool:
        return self.proc is not None and self.proc.running()

    def query(self, promql: str) -> list[dict[str, Any]]:
        status, text = http_get(
            f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=10
        )
        assert status == 200, f"query {promql!r} answered {status}: {text[:500]}"
        result: list[dict[str, Any]] = json.loads(text)["data"]["result"]
        return result

    def targets_up(self) -> dict[str, str]:
        """{address: health} of the active targets."""
        status, text = http_get(f"{self.url}/api/v1/targets", timeout=10)
        if status != 200:
            return {}
        active = json.loads(text)["data"]["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}
