"""What Sluice reads, known from watch streams and kept in memory.

One :class:`Informer` per watched kind and namespace (or cluster-wide) lists
its objects once, in pages, then watches from the list's resourceVersion with
bookmarks, and lists again only when the apiserver answers 410 Gone. The
children are watched with the server-side selector
``app.kubernetes.io/managed-by=sluice``, so objects Sluice does not manage never
reach the process.

Each object is kept as a projection: only the fields the reconciler and the
control cycle read (:data:`KINDS`), strings shared between objects (the
launcher source embedded in every Deployment is one string, not 1,000). The
full object of a watch event is dropped as soon as it is projected.

:class:`CachedKube` is a :class:`~sluice.reconcile.kube.Kube` whose reads of
the watched kinds come from the cache: a synced cache that does not hold an
object means the object does not exist, so a reconcile neither lists nor GETs.
Writes go to the API and their answers into the cache at once (write-through),
so the next read is current before the watch echo arrives, and the echo,
carrying the same resourceVersion, changes nothing.

A change of an object calls ``on_change(kind, old, new)`` (either may be None);
reconcile/loop.py turns that into work-queue keys. Projections equal apart from
their resourceVersion are not changes: a Deployment's condition timestamps or
a status write that only refreshed them wake nobody.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from .. import observability
from ..api.v1alpha1 import API_VERSION as ISVC_API_VERSION
from ..api.v1alpha1 import GROUP
from ..api.v1alpha1 import KIND as ISVC_KIND
from ..policy.readiness import STUCK_REASONS, deployment_problem
from ..render import LABEL_ISVC, MANAGED_BY
from .kube import Kube

log = logging.getLogger("sluice.cache")

MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
_DROP_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_META_KEEP = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "annotations",
    "ownerReferences",
)
_DEPLOYMENT_STATUS = (
    "observedGeneration",
    "replicas",
    "readyReplicas",
    "updatedReplicas",
    "availableReplicas",
)
_WAITING_REASONS = STUCK_REASONS  # what policy.readiness explains in the Ready message

Obj = dict[str, Any]
Key = tuple[str, str]


# ------------------------------------------------------------------ projections


def _intern(v: Any) -> Any:
    """The same value with every string interned, so equal strings are shared."""
    if isinstance(v, str):
        return sys.intern(v)
    if isinstance(v, dict):
        return {sys.intern(k): _intern(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_intern(x) for x in v]
    return v


def _meta(obj: Mapping[str, Any]) -> Obj:
    md = obj.get("metadata") or {}
    out = {k: md[k] for k in _META_KEEP if k in md}
    ann = out.get("annotations")
    if ann and any(a in ann for a in _DROP_ANNOTATIONS):
        out["annotations"] = {k: v for k, v in ann.items() if k not in _DROP_ANNOTATIONS}
    return out


def _head(obj: Mapping[str, Any]) -> Obj:
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": _meta(obj)}


def project_isvc(obj: Mapping[str, Any]) -> Obj:
    """Everything but managedFields and kubectl's copy of the spec."""
    out = _head(obj)
    out["spec"] = obj.get("spec") or {}
    if "status" in obj:
        out["status"] = obj["status"]
    return _intern(out)  # type: ignore[no-any-return]


def project_spec(obj: Mapping[str, Any]) -> Obj:
    """Services, HTTPRoutes, PodMonitors: what Sluice renders (the spec), no status."""
    out = _head(obj)
    out["spec"] = obj.get("spec") or {}
    return _intern(out)  # type: ignore[no-any-return]


def project_deployment(obj: Mapping[str, Any]) -> Obj:
    """The spec (drift is judged against it) and the rollout counters of status."""
    out = _head(obj)
    out["spec"] = obj.get("spec") or {}
    st = obj.get("status") or {}
    out["status"] = {k: st[k] for k in _DEPLOYMENT_STATUS if k in st}
    # Only the conditions that explain a stuck Deployment (ReplicaFailure,
    # ProgressDeadlineExceeded), without their timestamps: a refresh wakes nobody.
    conds = [
        {k: c[k] for k in ("type", "status", "reason", "message") if k in c}
        for c in st.get("conditions") or []
        if deployment_problem([c])
    ]
    if conds:
        out["status"]["conditions"] = conds
    return _intern(out)  # type: ignore[no-any-return]


def project_pod(obj: Mapping[str, Any]) -> Obj:
    """Labels, age, readiness, and why it does not run (if it does not)."""
    md = obj.get("metadata") or {}
    meta = {
        k: md[k]
        for k in ("name", "namespace", "uid", "resourceVersion", "labels", "creationTimestamp")
        if k in md
    }
    if md.get("deletionTimestamp"):
        meta["deletionTimestamp"] = md["deletionTimestamp"]
    st = obj.get("status") or {}
    conds = [
        {k: c[k] for k in ("type", "status", "reason", "message", "lastTransitionTime") if k in c}
        for c in st.get("conditions") or []
        if c.get("type") in ("Ready", "PodScheduled")
    ]
    waiting = []
    for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]:
        w = (cs.get("state") or {}).get("waiting") or {}
        if w.get("reason") in _WAITING_REASONS:
            entry: Obj = {"name": cs.get("name"), "state": {"waiting": dict(w)}}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if last:
                entry["lastState"] = {
                    "terminated": {k: last[k] for k in ("exitCode", "reason") if k in last}
                }
            waiting.append(entry)
    status: Obj = {"conditions": conds}
    if waiting:
        status["containerStatuses"] = waiting
    out = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": status}
    return _intern(out)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    project: Callable[[Mapping[str, Any]], Obj]
    selector: str | None = MANAGED_SELECTOR
    optional: bool = False  # an API that may be installed later (CRDs of others)


ISVC = Kind(ISVC_API_VERSION, ISVC_KIND, project_isvc, selector=None)
KINDS: tuple[Kind, ...] = (
    ISVC,
    Kind("apps/v1", "Deployment", project_deployment),
    Kind("v1", "Service", project_spec),
    Kind("gateway.networking.k8s.io/v1", "HTTPRoute", project_spec, optional=True),
    Kind("monitoring.coreos.com/v1", "PodMonitor", project_spec, optional=True),
    Kind("v1", "Pod", project_pod),
)


def _rv(obj: Mapping[str, Any]) -> int | None:
    s = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(s) if s.isdigit() else None


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Equal projections, apart from resourceVersion."""
    if a is None or b is None:
        return a is b
    if a.keys() != b.keys():
        return False
    for k in a:
        if k == "metadata":
            ma, mb = a[k], b[k]
            if {x: y for x, y in ma.items() if x != "resourceVersion"} != {
                x: y for x, y in mb.items() if x != "resourceVersion"
            }:
                return False
        elif a[k] != b[k]:
            return False
    return True


def owner_of(obj: Mapping[str, Any]) -> str | None:
    """The InferenceService an object belongs to: its owner reference, or for pods
    (owned by ReplicaSets) the inferenceservice label."""
    md = obj.get("metadata") or {}
    for ref in md.get("ownerReferences") or []:
        if ref.get("kind") == ISVC_KIND and str(ref.get("apiVersion", "")).startswith(GROUP + "/"):
            return str(ref["name"])
    if obj.get("kind") == "Pod":
        label = (md.get("labels") or {}).get(LABEL_ISVC)
        return str(label) if label else None
    return None


def parse_selector(selector: str | None) -> dict[str, str] | None:
    """``a=b,c=d`` as a dict; None for anything but plain equalities."""
    if not selector:
        return {}
    out: dict[str, str] = {}
    for term in selector.split(","):
        k, sep, v = term.partition("=")
        if not sep or v.startswith("=") or k.endswith("!") or not k.strip():
            return None
        out[k.strip()] = v.strip()
    return out


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


# --------------------------------------------------------------------- informer


class Informer:
    """The objects of one kind in one namespace (None: cluster-wide)."""

    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str | None,
        on_change: Callable[[Kind, Obj | None, Obj | None], None],
        stop: threading.Event,
    ) -> None:
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.on_change = on_change
        self._stop = stop
        self._lock = threading.Lock()
        self._objs: dict[Key, Obj] = {}
        self._by_owner: dict[Key, set[str]] = {}
        self._rv = ""
        self.synced = threading.Event()
        self.present = not kind.optional
        self.relists = 0
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- reading

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._objs.get((namespace, name))

    def items(self, namespace: str | None = None, owner: str | None = None) -> list[Obj]:
        with self._lock:
            if owner is not None and namespace is not None:
                names = self._by_owner.get((namespace, owner)) or ()
                return [self._objs[(namespace, n)] for n in names]
            return [o for (ns, _), o in self._objs.items() if namespace is None or ns == namespace]

    def __len__(self) -> int:
        return len(self._objs)

    # ---------------------------------------------------------------- writing

    def put(self, obj: Mapping[str, Any], notify: bool = True, projected: bool = False) -> None:
        new: Obj = dict(obj) if projected else self.kind.project(obj)
        md = new["metadata"]
        key = (str(md.get("namespace") or ""), str(md["name"]))
        with self._lock:
            old = self._objs.get(key)
            if old is not None:
                ro, rn = _rv(old), _rv(new)
                if ro is not None and rn is not None and rn < ro:
                    return  # older than what is known (a write-through got here first)
            self._objs[key] = new
            self._index(key, old, new)
        if notify and not same(old, new):
            self.on_change(self.kind, old, new)

    def remove(self, obj: Mapping[str, Any], notify: bool = True) -> None:
        md = obj.get("metadata") or {}
        key = (str(md.get("namespace") or ""), str(md["name"]))
        with self._lock:
            old = self._objs.get(key)
            if old is None:
                return
            uid = md.get("uid")
            if uid and old["metadata"].get("uid") not in (None, uid):
                return  # the deletion of an older object of that name
            ro, rn = _rv(old), _rv(obj)
            if ro is not None and rn is not None and rn < ro:
                return
            del self._objs[key]
            self._index(key, old, None)
        if notify:
            self.on_change(self.kind, old, None)

    def _index(self, key: Key, old: Obj | None, new: Obj | None) -> None:
        before = owner_of(old) if old else None
        after = owner_of(new) if new else None
        if before == after:
            return
        if before:
            names = self._by_owner.get((key[0], before))
            if names is not None:
                names.discard(key[1])
                if not names:
                    del self._by_owner[(key[0], before)]
        if after:
            self._by_owner.setdefault((key[0], after), set()).add(key[1])

    # ----------------------------------------------------------------- stream

    def start(self) -> None:
        name = f"watch-{self.kind.kind.lower()}-{self.namespace or 'all'}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                if self.kind.optional and not self._served():
                    self._stop.wait(30.0)
                    continue
                if not self._rv:
                    self._relist()
                self._watch()
                backoff = 1.0
            except Gone:
                log.info("%s %s: resourceVersion expired, listing again", self.kind.kind, self._ns)
                self._rv = ""
            except Exception as e:  # the apiserver restarted, a timeout, a reset: retry
                if self._stop.is_set():
                    return
                log.warning("watch of %s %s failed (%s); retrying", self.kind.kind, self._ns, e)
                self._stop.wait(backoff + random.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 30.0)

    @property
    def _ns(self) -> str:
        return f"in {self.namespace}" if self.namespace else "cluster-wide"

    def _served(self) -> bool:
        """Whether the optional API is served; while it is not, the cache is
        synced and empty (a CRD installed later is picked up within 30 s)."""
        present = self.kube.has_kind(self.kind.api_version, self.kind.kind)
        if not present:
            if self.present:
                log.info("%s is not served", self.kind.kind)
            self.present = False
            self._rv = ""
            for o in self.items():
                self.remove(o)
            self.synced.set()
        return present

    def _relist(self) -> None:
        items, rv = self.kube.list_with_version(
            self.kind.api_version,
            self.kind.kind,
            self.namespace,
            self.kind.selector,
            each=self.kind.project,
        )
        self.relists += 1
        seen: set[Key] = set()
        for o in items:
            md = o["metadata"]
            seen.add((str(md.get("namespace") or ""), str(md["name"])))
            self.put(o, projected=True)
        for o in self.items():
            md = o["metadata"]
            if (str(md.get("namespace") or ""), str(md["name"])) not in seen:
                self.remove({"metadata": {"namespace": md.get("namespace"), "name": md["name"]}})
        self._rv = rv
        self.present = True
        self.synced.set()
        observability.set_cached(self.kind.kind.lower(), len(self))

    def _watch(self) -> None:
        for ev in self.kube.watch(
            self.kind.api_version,
            self.kind.kind,
            self.namespace,
            self._rv,
            self.kind.selector,
            timeout_seconds=random.randint(240, 360),
        ):
            if self._stop.is_set():
                return
            typ, obj = ev.get("type"), ev.get("object") or {}
            if typ == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise ApiException(status=obj.get("code"), reason=obj.get("message"))
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if typ in ("ADDED", "MODIFIED"):
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                self.put(obj)
            elif typ == "DELETED":
                self.remove(obj)
            if rv:
                self._rv = rv
        observability.set_cached(self.kind.kind.lower(), len(self))


# ------------------------------------------------------------------------ cache


class Cache:
    """Informers for every kind in :data:`KINDS`, in every watched namespace."""

    def __init__(
        self,
        kube: Kube,
        namespaces: Iterable[str],
        on_change: Callable[[Kind, Obj | None, Obj | None], None],
        kinds: Iterable[Kind] = KINDS,
    ) -> None:
        self.kube = kube
        self.namespaces = list(namespaces)
        self._stop = threading.Event()
        scopes: list[str | None] = list(self.namespaces) or [None]
        self.informers: dict[tuple[str, str], list[Informer]] = {}
        for k in kinds:
            self.informers[(k.api_version, k.kind)] = [
                Informer(kube, k, ns, on_change, self._stop) for ns in scopes
            ]

    def start(self) -> None:
        for infs in self.informers.values():
            for i in infs:
                i.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return all(i.synced.wait(timeout) for infs in self.informers.values() for i in infs)

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for infs in self.informers.values() for i in infs)

    def watches(self, api_version: str, kind: str, namespace: str | None) -> bool:
        """Whether reads of this kind in this namespace can come from the cache."""
        infs = self.informers.get((api_version, kind))
        if not infs or not all(i.synced.is_set() for i in infs):
            return False
        return not self.namespaces or (namespace is not None and namespace in self.namespaces)

    def informer(self, api_version: str, kind: str, namespace: str | None) -> Informer | None:
        for i in self.informers.get((api_version, kind)) or ():
            if i.namespace is None or i.namespace == namespace:
                return i
        return None

    def present(self, api_version: str, kind: str) -> bool | None:
        infs = self.informers.get((api_version, kind))
        if not infs or not all(i.synced.is_set() for i in infs):
            return None
        return all(i.present for i in infs)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        inf = self.informer(api_version, kind, namespace)
        return inf.get(namespace, name) if inf else None

    def list(
        self, api_version: str, kind: str, namespace: str | None, labels: Mapping[str, str]
    ) -> list[Obj]:
        owner = labels.get(LABEL_ISVC)
        infs = self.informers.get((api_version, kind)) or []
        out: list[Obj] = []
        for inf in infs:
            if namespace is not None and inf.namespace not in (None, namespace):
                continue
            for o in inf.items(namespace, owner if kind != ISVC_KIND else None):
                have = (o.get("metadata") or {}).get("labels") or {}
                if all(have.get(k) == v for k, v in labels.items()):
                    out.append(o)
        return out

    def observe(self, obj: Mapping[str, Any], notify: bool = True) -> None:
        """An object the API just returned (an apply's or a status write's answer)."""
        md = obj.get("metadata") or {}
        inf = self.informer(str(obj.get("apiVersion")), str(obj.get("kind")), md.get("namespace"))
        if inf is not None and inf.synced.is_set():
            inf.put(obj, notify=notify)

    def forget(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        inf = self.informer(api_version, kind, namespace)
        if inf is not None:
            inf.remove({"metadata": {"namespace": namespace, "name": name}}, notify=False)

    def counts(self) -> dict[str, int]:
        return {k: sum(len(i) for i in infs) for (_, k), infs in self.informers.items()}


class CachedKube(Kube):
    """A :class:`Kube` whose reads of the watched kinds come from the cache.

    Objects returned by ``get`` and ``list`` are the cache's own: read them,
    never change them (``status_base`` hands ``update_status`` a private copy).
    """

    def __init__(self, kube: Kube, cache: Cache) -> None:
        self.__dict__.update(kube.__dict__)  # share the client, discovery and locks
        self.cache = cache

    def has_kind(self, api_version: str, kind: str) -> bool:
        present = self.cache.present(api_version, kind)
        if present is not None:
            return present
        return super().has_kind(api_version, kind)

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        if namespace is not None and self.cache.watches(api_version, kind, namespace):
            return self.cache.get(api_version, kind, namespace, name)
        return super().get(api_version, kind, namespace, name)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        # The cache holds the objects Sluice manages (its watch selector); the
        # reconcilers and the control cycle list only those.
        labels = parse_selector(label_selector)
        if labels is not None and self.cache.watches(api_version, kind, namespace):
            return self.cache.list(api_version, kind, namespace, labels)
        return super().list(api_version, kind, namespace, label_selector)

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        out = super().apply(obj)
        self.cache.observe(out, notify=False)  # our own write: nothing new to react to
        return out

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        gone = super().delete(api_version, kind, namespace, name)
        if namespace is not None:
            self.cache.forget(api_version, kind, namespace, name)
        return gone

    def status_base(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        if not self.cache.watches(api_version, kind, namespace):
            return super().status_base(api_version, kind, namespace, name)
        cached = self.cache.get(api_version, kind, namespace, name)
        if cached is None:
            return None
        copy: dict[str, Any] = json.loads(json.dumps(cached))  # mutate's private copy
        return copy

    def seen(self, obj: Mapping[str, Any]) -> None:
        self.cache.observe(obj)
