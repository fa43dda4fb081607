"""A thin, blocking Kubernetes client for the reconcilers.

Generic get/list/watch/apply/delete by apiVersion and kind, server-side apply
with field manager ``sluice``, status writes with optimistic concurrency,
discovery of optional APIs (Gateway API, Prometheus Operator) and Events.

Requests go through the ``kubernetes`` package's ApiClient (authentication,
TLS, the connection pool) but bodies are sent and read as plain JSON: the
package's model and DynamicClient wrapping cost 18-32 % of the operator's CPU
at 1,000 services (docs/bench/README.md, scale section). The DynamicClient is
kept for discovery only (apiVersion + kind -> plural, namespaced).

Every request is counted by verb and resource in
``sluice_api_requests_total`` (see :func:`classify`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError, api_exception

from .. import __version__, observability

FIELD_MANAGER = "sluice"
USER_AGENT = f"sluice/{__version__}"
Objects = list[dict[str, Any]]  # (``list`` is also a method of Kube)
log = logging.getLogger("sluice.kube")


def load_config(kubeconfig: str | None = None) -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig)
    cfg = k8s.Configuration.get_default_copy()
    # Open watches (one per kind and namespace) hold connections; the default
    # pool (5 per CPU) then drops and re-dials the reconcile workers' connections.
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, 64)
    api = k8s.ApiClient(cfg)
    # Named in the apiserver's audit log and metrics, as client-go names its clients.
    api.user_agent = USER_AGENT
    return api


_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def classify(method: str, url: str) -> tuple[str, str]:
    """(verb, resource) of one request, as the apiserver's audit log names them.

    ``GET .../deployments`` is ``list``, ``GET .../deployments?watch=1`` is
    ``watch``, ``GET .../deployments/x`` is ``get``; a subresource is named
    ``deployments_status``; discovery (``/api``, ``/apis/g/v``) is ``discovery``.
    """
    parts = urlsplit(url)
    segs = [p for p in parts.path.split("/") if p]
    if segs and segs[0] == "api":
        rest = segs[2:]
    elif segs and segs[0] == "apis":
        rest = segs[3:]
    else:
        return method.lower(), "other"
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    if not rest:
        return "get", "discovery"
    resource = rest[0].replace(".", "_").replace("-", "_")
    named = len(rest) >= 2
    if len(rest) >= 3:
        resource = f"{resource}_{rest[2]}"
    if method.upper() == "GET":
        q = parse_qs(parts.query)
        if q.get("watch", [""])[0] in ("1", "true", "True"):
            return "watch", resource
        return ("get" if named else "list"), resource
    return _VERBS.get(method.upper(), method.lower()), resource


def count_requests(api: k8s.ApiClient) -> None:
    """Count every request this ApiClient sends (idempotent)."""
    rest = api.rest_client
    if getattr(rest.request, "_sluice_counted", False):
        return
    original: Callable[..., Any] = rest.request

    def counted(method: str, url: str, *a: Any, **kw: Any) -> Any:
        verb, resource = classify(method, url)
        observability.api_request(verb, resource)
        return original(method, url, *a, **kw)

    counted._sluice_counted = True  # type: ignore[attr-defined]
    setattr(rest, "request", counted)  # noqa: B010 - replaces the method of this one client


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Kube:
    def __init__(self, api: k8s.ApiClient | None = None) -> None:
        self.api = api or load_config()
        count_requests(self.api)
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

    # ------------------------------------------------------------------- http

    def path(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        name: str | None = None,
        subresource: str | None = None,
    ) -> str:
        res = self.resource(api_version, kind)
        out = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        if namespace and res.namespaced:
            out += f"/namespaces/{namespace}"
        out += f"/{res.name}"
        if name:
            out += f"/{name}"
        if subresource:
            out += f"/{subresource}"
        return out

    def call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = None,
    ) -> Any:
        """One request; the answer's raw ``urllib3`` response (not read yet).

        Raises the ``kubernetes`` package's ApiException subclass (NotFoundError,
        ConflictError, UnprocessableEntityError, ...) for any status >= 300.
        """
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*req, _request_timeout=timeout)
        if not 200 <= resp.status <= 299:
            resp.read()
            try:
                self.api.response_deserialize(resp, {})
            except ApiException as e:
                raise api_exception(e) from None
            raise ApiException(status=resp.status, reason=resp.reason)
        return resp.response

    def call_json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self.call(method, path, **kw)
        data = resp.data
        out: dict[str, Any] = json.loads(data) if data else {}
        return out

    # ------------------------------------------------------------------ reads

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        return self.read(api_version, kind, namespace, name)

    def read(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """GET from the API (never a cache), or None when it does not exist."""
        try:
            return self.call_json("GET", self.path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        return self.list_with_version(api_version, kind, namespace, label_selector)[0]

    def list_with_version(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        page: int = 500,
        each: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> tuple[Objects, str]:
        """Every object (in pages of ``page``) and the list's resourceVersion.

        ``each`` maps every item as it arrives (a projection keeps memory
        bounded: one page of full objects at a time).
        """
        path = self.path(api_version, kind, namespace)
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            q = [("limit", str(page))]
            if label_selector:
                q.append(("labelSelector", label_selector))
            if cont:
                q.append(("continue", cont))
            data = self.call_json("GET", path, query=q)
            for i in data.get("items") or []:
                i.setdefault("apiVersion", api_version)
                i.setdefault("kind", kind)
                items.append(each(i) if each else i)
            md = data.get("metadata") or {}
            cont = md.get("continue") or ""
            if not cont:
                return items, str(md.get("resourceVersion") or "")

    def watch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> Iterator[dict[str, Any]]:
        """Watch events from ``resource_version``, bookmarks included, until the
        server ends the stream (after about ``timeout_seconds``)."""
        q = [
            ("watch", "1"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            q.append(("labelSelector", label_selector))
        resp = self.call(
            "GET",
            self.path(api_version, kind, namespace),
            query=q,
            timeout=(10.0, timeout_seconds + 30.0),
        )
        try:
            buf = b""
            for chunk in resp.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        finally:
            resp.release_conn()

    # ----------------------------------------------------------------- writes

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        return self.call_json(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=json.dumps(obj),
            content_type="application/apply-patch+yaml",
        )

    def dry_run_apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The server-side apply of ``obj`` with ``dryRun=All``: every admission
        and validation step runs, nothing is stored (and nothing is cached)."""
        md = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], md.get("namespace"), md["name"])
        return self.call_json(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true"), ("dryRun", "All")],
            body=json.dumps(obj),
            content_type="application/apply-patch+yaml",
        )

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        try:
            self.call_json(
                "DELETE",
                self.path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

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
        changes (then nothing is written). Conflicts are retried on a fresh read
        from the API, so writers of different status fields never lose each
        other's work.

        The first attempt starts from :meth:`status_base` (here a GET; a cached
        client answers from memory), and every object read or written goes to
        :meth:`seen` (a cached client keeps its cache current with it).
        """
        path = self.path(api_version, kind, namespace, name, "status")
        obj = self.status_base(api_version, kind, namespace, name)
        for _ in range(attempts):
            if obj is None:
                return None
            status = obj.get("status") or {}
            new = mutate(obj, status)
            if new is None or new == status:
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
            log.debug(
                "status of %s/%s: %s changed",
                namespace,
                name,
                ", ".join(sorted(k for k in {*new, *status} if new.get(k) != status.get(k))),
            )
            try:
                out = self.call_json("PUT", path, body=body)
            except ApiException as e:
                if e.status == 409:
                    obj = self.read(api_version, kind, namespace, name)
                    if obj is not None:
                        self.seen(obj)
                    continue
                if e.status == 404:
                    return None
                raise
            self.seen(out)
            return out
        raise RuntimeError(f"status of {namespace}/{name}: conflicts on {attempts} attempts")

    def status_base(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        """The object a status write starts from: a private copy, the caller's to change."""
        obj = self.read(api_version, kind, namespace, name)
        if obj is not None:
            self.seen(obj)
        return obj

    def seen(self, obj: Mapping[str, Any]) -> None:
        """An object the API just returned (a status write's read or answer)."""

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
            self.call_json("POST", self.path("v1", "Event", md["namespace"]), body=body)
        except ApiException as e:  # an Event is best effort, never a reason to fail
            log.warning("could not post event %s: %s", reason, e.reason)


def _plain(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if hasattr(obj, "to_dict"):
        return obj.to_dict()  # type: ignore[no-any-return]
    return dict(obj)
