from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import Kubectl, local_cluster


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[Path]:
    """A real control plane on loopback (hack/localcluster.py), for the whole session."""
    with local_cluster() as kc:
        yield kc


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    return Kubectl(kubeconfig)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    """Sluice's CRD and the Gateway API CRDs, installed once per session."""
    from tests.support.operator import install_crds

    install_crds(kubectl)
