"""The Gateway API HTTPRoute that splits traffic between variants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..render import Meta
from .apply import SyncResult, sync_kind
from .kube import Kube

API_VERSION, KIND = "gateway.networking.k8s.io/v1", "HTTPRoute"


def available(kube: Kube) -> bool:
    return kube.has_kind(API_VERSION, KIND)


def sync(kube: Kube, meta: Meta, desired: Sequence[Mapping[str, Any]]) -> SyncResult:
    """Apply the route when one is wanted; remove an owned route that is not."""
    if not available(kube):
        return SyncResult()
    return sync_kind(kube, meta, API_VERSION, KIND, desired)
