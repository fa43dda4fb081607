"""The Prometheus Operator PodMonitor that scrapes the Triton pods with our labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..render import Meta
from .apply import SyncResult, sync_kind
from .kube import Kube

API_VERSION, KIND = "monitoring.coreos.com/v1", "PodMonitor"


def available(kube: Kube) -> bool:
    return kube.has_kind(API_VERSION, KIND)


def wanted(mode: str, crd_present: bool) -> bool:
    return mode == "Always" or (mode == "Auto" and crd_present)


def sync(kube: Kube, meta: Meta, desired: Sequence[Mapping[str, Any]]) -> SyncResult:
    if not available(kube):
        return SyncResult()
    return sync_kind(kube, meta, API_VERSION, KIND, desired)
