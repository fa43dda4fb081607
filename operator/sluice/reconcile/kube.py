"""A thin, blocking Kubernetes client for the reconcilers.

Wraps the ``kubernetes`` package's DynamicClient: generic get/list/apply/delete
by apiVersion and kind, server-side apply with field manager ``sluice``, status
patches with optimistic concurrency, discovery of optional APIs (Gateway API,
Prometheus Operator) and Events.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

FIELD_MANAGER = "sluice"
log = logging.getLogger("sluice.kube")


def load_config(kubeconfig: str | None = None) -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig)
    return k8s.ApiClient()


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: k8s.ApiClient | None = None) -> None:
        self.api = api or load_config()
        self.dyn = DynamicClient(self.api)
        self._kinds: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._absent: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------- discovery

    def resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        with self._lock:
            if key in self._kinds:
                return self._kinds[key]
        res = self.dyn.resources.get(api_version=api_version, kind=kind)
        with self._lock:
            self._kinds[key] = res
        return res

    def has_kind(self, api_version: str, kind: str) -> bool:
        """Whether the API serves this kind now. Optional APIs (Gateway API,
        Prometheus Operator) may be installed after the operator starts, so a
        "no" is remembered for 30 s only."""
        key = (api_version, kind)
        with self._lock:
            if key in self._kinds:
                return True
            checked = self._absent.get(key)
            if checked is not None and time.monotonic() - checked < 30:
                return False
        path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        try:
            data = _plain(self.dyn.request("get", path))
        except ApiException as e:
            if e.status != 404:
                raise
            data = {}
        present = any(r.get("kind") == kind for r in (data or {}).get("resources", []))
        with self._lock:
            if present:
                self._absent.pop(key, None)
            else:
                self._absent[key] = time.monotonic()
        if present:
            try:
                self.resource(api_version, kind)
            except ResourceNotFoundError:
                # The DynamicClient's discovery cache predates the CRD: start a fresh one.
                self.dyn = DynamicClient(self.api)
                self.resource(api_version, kind)
        return present

    # ------------------------------------------------------------------ reads

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        try:
            obj = self.resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        return _plain(obj)

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        res = self.resource(api_version, kind)
        out = res.get(namespace=namespace, label_selector=label_selector)
        return [_plain(i) for i in out.to_dict().get("items", [])]

    # ----------------------------------------------------------------- writes

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        res = self.resource(obj["apiVersion"], obj["kind"])
        out = res.server_side_apply(
            body=dict(obj),
            name=md["name"],
            namespace=md.get("namespace"),
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        return _plain(out)

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        try:
            self.resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
            return True
        except NotFoundError:
            return False

    def update_status(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        mutate: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any] | None],
        attempts: int = 5,
    ) -> dict[str, Any] | None:
        """Read-modify-write of ``status`` with resourceVersion as precondition.

        ``mutate(obj, status)`` returns the new status, or None when nothing
        changes (then nothing is written). Conflicts are retried on a fresh read,
        so writers of different status fields never lose each other's work.
        """
        res = self.resource(api_version, kind)
        for _ in range(attempts):
            obj = self.get(api_version, kind, namespace, name)
            if obj is None:
                return None
            current = obj.get("status") or {}
            new = mutate(obj, current)
            if new is None or new == current:
                return obj
            body = {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": obj["metadata"]["resourceVersion"],
                },
                "status": new,
            }
            try:
                return _plain(res.status.replace(body=body, name=name, namespace=namespace))
            except ApiException as e:
                if e.status == 409:
                    continue
                raise
        raise RuntimeError(f"status of {namespace}/{name}: conflicts on {attempts} attempts")

    # ----------------------------------------------------------------- events

    def event(
        self,
        involved: Mapping[str, Any],
        type_: str,
        reason: str,
        message: str,
        component: str = "sluice",
    ) -> None:
        md = involved["metadata"]
        ts = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{md['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": md["namespace"],
            },
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": md["name"],
                "namespace": md["namespace"],
                "uid": md.get("uid"),
                "resourceVersion": md.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        }
        try:
            self.resource("v1", "Event").create(body=body, namespace=md["namespace"])
        except ApiException as e:  # an Event is best effort, never a reason to fail
            log.warning("could not post event %s: %s", reason, e.reason)


def _plain(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()  # type: ignore[no-any-return]
    return dict(obj)
