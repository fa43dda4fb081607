"""Apply the owned objects of an InferenceService and prune the ones no longer wanted.

In three steps, so that a set the apiserver refuses changes nothing:

1. :func:`plan_kind` reads what exists and decides, per kind, which desired
   objects differ from the live ones and which owned objects are no longer wanted;
2. :func:`refusals` sends every object to be written as a server-side-apply
   dry run (``dryRun=All``: validation, admission, quota; nothing stored) and
   collects what the apiserver refuses, quoting its reason;
3. :func:`execute` writes, only when nothing was refused.

Step 2 is skipped for the first create of an InferenceService none of whose
children exists (:func:`nothing_exists`; the reconciler decides, see
``Reconciler._write_children``). The dry run protects what runs: it makes a
set of writes all-or-nothing, so that a refused write cannot leave an updated
Deployment next to an old Service or route. When nothing exists there is
nothing to protect: a create the apiserver refuses stores nothing, the
Deployments are created first (a pod template is what admission, quota and
validation refuse), and a refusal still ends as ``Ready=False/ApplyFailed``
and a Warning Event. At most, children created before a refused later child
stay, owned by a service that never served and removed with it; the retry
creates the rest. It saves a dry run per child: 3 of the 8 requests of a new
service's create reconcile (7 in all remain with the later Ready reconcile: 3
applies, 2 status updates, 2 Events), and a fleet-wide create waits on the
apiserver's answers.

A refusal is any 4xx answer except the transient ones (408, 429): an invalid
object (422), a quota or an admission policy (403), an immutable field, a
conflict (409); and server-side apply's 500 for an object that does not fit
its kind's schema. Those depend on the input and on the cluster, not on timing, so
the reconciler reports them in status and backs off instead of retrying hot.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

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


def difference(live: Any, desired: Any, path: str = "") -> str | None:
    """The first field of ``desired`` that ``live`` does not hold (as
    :func:`covers` judges), as a dotted path; None when ``live`` covers it."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return path or "."
        for k, v in desired.items():
            sub = f"{path}.{k}" if path else str(k)
            if k not in live:
                return sub
            d = difference(live[k], v, sub)
            if d is not None:
                return d
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path or "."
        for i, (lv, dv) in enumerate(zip(live, desired, strict=True)):
            d = difference(lv, dv, f"{path}[{i}]")
            if d is not None:
                return d
        return None
    return None if covers(live, desired) else (path or ".")


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


# ------------------------------------------------- plan, validate, execute


@dataclass
class KindPlan:
    """What one kind needs: objects to apply, owned objects to delete."""

    api_version: str
    kind: str
    apply: list[Mapping[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    result: SyncResult = field(default_factory=SyncResult)
    present: list[str] = field(default_factory=list)
    """Names of the desired or owned objects that exist (owned or not)."""

    @property
    def changes(self) -> bool:
        return bool(self.apply or self.delete)


def plan_kind(
    kube: Kube,
    meta: Meta,
    api_version: str,
    kind: str,
    desired: Sequence[Mapping[str, Any]],
) -> KindPlan:
    """Reads only: which of ``desired`` differ from live, which owned objects go."""
    plan = KindPlan(api_version, kind)
    existing = {
        o["metadata"]["name"]: o
        for o in kube.list(api_version, kind, meta.namespace, owned_selector(meta))
        if _owned_by(o, meta)
    }
    for obj in desired:
        name = obj["metadata"]["name"]
        live = existing.get(name) or kube.get(api_version, kind, meta.namespace, name)
        if live is not None:
            plan.present.append(name)
        if live is not None and covers(live, obj):
            plan.result.live[name] = live
        else:
            plan.apply.append(obj)
            log.debug(
                "%s %s/%s: %s",
                kind,
                meta.namespace,
                name,
                "absent" if live is None else f"{difference(live, obj)} differs",
            )
    wanted = {o["metadata"]["name"] for o in desired}
    plan.delete = sorted(set(existing) - wanted)
    plan.present = sorted(set(plan.present) | set(existing))
    return plan


def nothing_exists(plans: Sequence[KindPlan]) -> bool:
    """True when no desired or owned object of ``plans`` exists: every write
    is a create and nothing is deleted."""
    return not any(p.present or p.delete for p in plans)


def is_refusal(e: BaseException) -> bool:
    """An answer about the object, not about the moment. Server-side apply
    answers 500 when the object does not fit the kind's schema (a list where an
    object belongs: "failed to create typed patch object"), which no retry fixes."""
    if not isinstance(e, ApiException):
        return False
    if e.status == 500 and "failed to create typed patch object" in reason_of(e):
        return True
    return 400 <= (e.status or 0) < 500 and e.status not in (408, 429)


def reason_of(e: ApiException) -> str:
    """The apiserver's own words: the Status message, else the HTTP reason."""
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or e.reason or f"HTTP {e.status}")


def child_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def refusals(kube: Kube, plans: Sequence[KindPlan]) -> list[str]:
    """Dry-run every write of ``plans``; ``"Kind/name: reason"`` for each refused."""
    out: list[str] = []
    for plan in plans:
        for obj in plan.apply:
            try:
                kube.dry_run_apply(obj)
            except ApiException as e:
                if not is_refusal(e):
                    raise
                out.append(f"{child_name(obj)}: {reason_of(e)}")
    return out


class Refused(Exception):
    """A write the apiserver refused after the dry run passed (a race)."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


def execute(kube: Kube, meta: Meta, plans: Sequence[KindPlan]) -> list[SyncResult]:
    """Write the plans: applies in order, then deletions. Raises :class:`Refused`."""
    for plan in plans:
        for obj in plan.apply:
            name = obj["metadata"]["name"]
            try:
                plan.result.live[name] = kube.apply(obj)
            except ApiException as e:
                if not is_refusal(e):
                    raise
                raise Refused([f"{child_name(obj)}: {reason_of(e)}"]) from None
            plan.result.applied.append(f"{plan.kind}/{name}")
            log.info("applied %s %s/%s", plan.kind, meta.namespace, name)
    for plan in plans:
        for name in plan.delete:
            try:
                gone = kube.delete(plan.api_version, plan.kind, meta.namespace, name)
            except ApiException as e:
                if not is_refusal(e):
                    raise
                raise Refused([f"{plan.kind}/{name} (delete): {reason_of(e)}"]) from None
            if gone:
                plan.result.deleted.append(f"{plan.kind}/{name}")
                log.info("deleted %s %s/%s", plan.kind, meta.namespace, name)
    return [p.result for p in plans]


def fingerprint(plans: Sequence[KindPlan]) -> str:
    """Identifies the writes a plan needs: an unchanged fingerprint means a retry
    would send the apiserver exactly what it refused."""
    return json.dumps(
        [[p.kind, list(p.apply), p.delete] for p in plans], sort_keys=True, default=str
    )
