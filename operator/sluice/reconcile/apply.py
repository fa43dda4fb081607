"""Apply a set of owned objects of one kind and prune the ones no longer wanted."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..render import LABEL_ISVC, MANAGED_BY, Meta
from .kube import Kube

log = logging.getLogger("sluice.reconcile")


def covers(live: Any, desired: Any) -> bool:
    """True when ``live`` already holds every field ``desired`` sets, to the value.

    Fields the apiserver defaults or others own are allowed on ``live``.
    Scalar lists (args, command) must be equal; object lists must match
    element by element.
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(k in live and covers(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(covers(lv, dv) for lv, dv in zip(live, desired, strict=True))
    return (bool(live == desired) and type(live) is type(desired)) or _same_number(live, desired)


def _same_number(a: Any, b: Any) -> bool:
    return (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and a == b
    )


@dataclass
class SyncResult:
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.deleted)


def owned_selector(meta: Meta) -> str:
    return f"{LABEL_ISVC}={meta.name},app.kubernetes.io/managed-by={MANAGED_BY}"


def sync_kind(
    kube: Kube,
    meta: Meta,
    api_version: str,
    kind: str,
    desired: Sequence[Mapping[str, Any]],
) -> SyncResult:
    """Make the owned objects of one kind exactly ``desired``; write only what differs."""
    result = SyncResult()
    existing = {
        o["metadata"]["name"]: o
        for o in kube.list(api_version, kind, meta.namespace, owned_selector(meta))
        if _owned_by(o, meta)
    }
    for obj in desired:
        name = obj["metadata"]["name"]
        live = existing.get(name) or kube.get(api_version, kind, meta.namespace, name)
        if live is not None and covers(live, obj):
            result.live[name] = live
            continue
        result.live[name] = kube.apply(obj)
        result.applied.append(f"{kind}/{name}")
        log.info("applied %s %s/%s", kind, meta.namespace, name)
    wanted = {o["metadata"]["name"] for o in desired}
    for name in sorted(set(existing) - wanted):
        if kube.delete(api_version, kind, meta.namespace, name):
            result.deleted.append(f"{kind}/{name}")
            log.info("deleted %s %s/%s", kind, meta.namespace, name)
    return result


def _owned_by(obj: Mapping[str, Any], meta: Meta) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return not meta.uid or any(r.get("uid") == meta.uid for r in refs)
