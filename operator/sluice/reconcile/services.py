"""The Services: one per variant and the apex Service of the InferenceService."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..render import Meta
from .apply import SyncResult, sync_kind
from .kube import Kube

API_VERSION, KIND = "v1", "Service"


def sync(kube: Kube, meta: Meta, desired: Sequence[Mapping[str, Any]]) -> SyncResult:
    return sync_kind(kube, meta, API_VERSION, KIND, desired)


def url(meta: Meta) -> str:
    return f"http://{meta.name}.{meta.namespace}.svc.cluster.local:8000"
