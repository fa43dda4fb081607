"""Fixtures the metrics-driven control scenarios share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import Fleet
from tests.support.prometheus import PrometheusServer


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus on loopback, one per test module, stopped by PID."""
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fleet(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[Fleet]:
    """Real tritonservers standing in for a test's pods; Prometheus scrapes them."""
    f = Fleet(tmp_path)
    try:
        yield f
    finally:
        prometheus.set_targets([])
        f.stop()
