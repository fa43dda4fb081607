#!/usr/bin/env python3
"""A local Gateway API gateway for the local cluster: HTTPRoutes over ready EndpointSlices.

    .venv/bin/python hack/gateway.py --kubeconfig K --port P

Started by ``hack/localcluster.py up`` with the data plane, on 127.0.0.1. It reads
every HTTPRoute, Service and EndpointSlice twice a second and forwards each request
to a pod process the objects select.

Addressing (a local convention standing in for a Gateway's listeners):
  ``http://127.0.0.1:P/<namespace>/<name>/<path>`` is routed by the HTTPRoute
  ``<namespace>/<name>`` with ``<path>`` as the request path; without such a route,
  straight to the ready endpoints of the Service ``<namespace>/<name>`` (an
  InferenceService without a router: its apex Service). A request whose Host header
  matches a route's ``hostnames`` is routed by that route with its path unchanged.

Implemented of HTTPRoute (gateway.networking.k8s.io/v1):
  * rules[].matches: path (PathPrefix, Exact, RegularExpression), headers (Exact,
    RegularExpression), queryParams (Exact), method; matches within a rule are ORed,
    and the rule chosen among several matches follows the spec's precedence (Exact
    path, then longest prefix, then method, then most header matches, then most query
    matches, then rule order).
  * rules[].backendRefs to Services: weighted random choice in proportion to
    ``weight`` (default 1; weight 0 takes nothing); all weights 0 or no backendRefs:
    500, as the spec says. A chosen Service with no ready endpoint answers 503 (no
    retry to another backend, as Envoy-based gateways do).
  * Endpoints: pod IPs ``10.A.B.C`` of the data plane are reached at ``127.A.B.C``
    (see hack/dataplane.py; nothing is sent outside 127.0.0.0/8). Only
    ``conditions.ready`` endpoints of the Service's EndpointSlices (terminating pods
    are not ready); the backendRef port is mapped through the
    Service's port name to the slice's port. Among ready endpoints the one with the
    fewest requests in flight (least-request, Envoy Gateway's default), ties at random.
    Keep-alive connections per endpoint; those to endpoints that left the ready set are
    closed at each refresh (a new pod may get a gone pod's address), and a request whose
    kept connection turns out closed by the backend before any answer is sent once more
    on a new connection (it never reached the backend), as proxies' pools do.
  * filters: RequestMirror (``percent`` or ``fraction``; fire and forget, answers
    dropped), RequestHeaderModifier (set, add, remove).
  * rules[].timeouts.request.
Not implemented: Gateway and GatewayClass objects and parentRefs (every route is
attached; no route status is written), listeners, TLS, hostnames' wildcard
precedence beyond exact and ``*.`` suffix, URLRewrite, RequestRedirect,
ResponseHeaderModifier and ExtensionRef filters (ignored, with a log line), backend
filters, sessionPersistence, retries, timeouts.backendRequest, GRPCRoute, cross-
namespace backendRefs (ReferenceGrant), backends other than Services.

It counts what it forwards: ``GET /_gateway/stats`` (JSON: requests per route,
backend and status code) and ``GET /_gateway/metrics`` (Prometheus text, with a
latency histogram per route and backend); ``GET /_gateway/routes`` shows the routes'
rules and weights as the gateway holds them now (its view lags the cluster by up to a
refresh).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import random
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from kubernetes import client as k8s
from kubernetes import config as k8s_config

LOG = logging.getLogger("gateway")
POLL_SECONDS = 0.5
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
}
BUCKETS_MS = (1, 2, 5, 10, 20, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000, 2000, 5000)


# ----------------------------------------------------------------- the world


@dataclass
class World:
    routes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (namespace, service) -> {port name: [(ip, port), ...]} of ready endpoints
    ready: dict[tuple[str, str], dict[str, list[tuple[str, int]]]] = field(default_factory=dict)


def load_world(api: k8s.ApiClient) -> World:
    """Read the routes, Services and EndpointSlices of every namespace."""
    custom = k8s.CustomObjectsApi(api)
    core = k8s.CoreV1Api(api)
    disc = k8s.DiscoveryV1Api(api)
    try:
        routes = custom.list_cluster_custom_object("gateway.networking.k8s.io", "v1", "httproutes")[
            "items"
        ]
    except k8s.exceptions.ApiException as e:
        if e.status != 404:  # no Gateway API CRDs yet: no routes
            raise
        routes = []
    svcs = json.loads(core.list_service_for_all_namespaces(_preload_content=False).data)
    slices = json.loads(disc.list_endpoint_slice_for_all_namespaces(_preload_content=False).data)
    return world_from(routes, svcs["items"], slices["items"])


def world_from(
    routes: list[dict[str, Any]], services: list[dict[str, Any]], slices: list[dict[str, Any]]
) -> World:
    """The gateway's view of the objects: only ``conditions.ready`` endpoints count."""
    w = World()
    for r in routes:
        w.routes[(r["metadata"]["namespace"], r["metadata"]["name"])] = r
    for s in services:
        w.services[(s["metadata"]["namespace"], s["metadata"]["name"])] = s
    for sl in slices:
        svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if not svc:
            continue
        by_port = w.ready.setdefault((sl["metadata"]["namespace"], svc), {})
        for p in sl.get("ports") or []:
            eps = by_port.setdefault(p.get("name") or "", [])
            for ep in sl.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is True:
                    eps.extend((host_address(a), int(p["port"])) for a in ep.get("addresses") or [])
    return w


def ready_endpoints(w: World, ns: str, svc: str, port: int) -> list[tuple[str, int]] | None:
    """Ready (ip, port) behind the Service's ``port``; None when the Service is unknown.

    The backendRef's port is the Service's; EndpointSlices name their ports after the
    Service's port names, so the number is mapped through the name.
    """
    s = w.services.get((ns, svc))
    if s is None:
        return None
    name = ""
    for p in s["spec"].get("ports") or []:
        if int(p["port"]) == port:
            name = p.get("name") or ""
    return list((w.ready.get((ns, svc)) or {}).get(name) or [])


def apex_port(service: dict[str, Any]) -> int:
    """The port a request without a route goes to: the Service's ``http`` port (or 8000)."""
    for p in service["spec"].get("ports") or []:
        if p.get("name") == "http":
            return int(p["port"])
    return 8000


def route_view(w: World) -> dict[str, list[dict[str, Any]]]:
    """The routes as the gateway routes them now: per rule, its matches and weights."""
    return {
        f"{ns}/{name}": [
            {
                "matches": rule.get("matches") or [],
                "weights": {
                    b["name"]: int(b.get("weight", 1)) for b in rule.get("backendRefs") or []
                },
            }
            for rule in r["spec"].get("rules") or []
        ]
        for (ns, name), r in sorted(w.routes.items())
    }


def all_ready(w: World) -> set[tuple[str, int]]:
    return {ep for by_port in w.ready.values() for eps in by_port.values() for ep in eps}


def host_address(ip: str) -> str:
    """Where a data-plane pod IP ``10.A.B.C`` listens: ``127.A.B.C`` (hack/dataplane.py)."""
    return "127." + ip[len("10.") :] if ip.startswith("10.") else ip


# ------------------------------------------------------------------ matching


def path_matches(m: dict[str, Any], path: str) -> tuple[int, int] | None:
    """(kind rank, length) for precedence when ``path`` matches, else None."""
    p = m.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = p.get("type", "PathPrefix"), p.get("value", "/")
    if kind == "Exact":
        return (2, len(value)) if path == value else None
    if kind == "RegularExpression":
        return (0, len(value)) if re.fullmatch(value, path) else None
    v = value.rstrip("/")
    if v == "" or path == v or path.startswith(v + "/"):
        return (1, len(v))
    return None


def match_score(
    m: dict[str, Any], method: str, path: str, headers: dict[str, str], query: dict[str, str]
) -> tuple[int, ...] | None:
    pm = path_matches(m, path)
    if pm is None:
        return None
    if m.get("method") and m["method"] != method:
        return None
    for h in m.get("headers") or []:
        got = headers.get(h["name"].lower())
        if got is None:
            return None
        if h.get("type", "Exact") == "RegularExpression":
            if not re.fullmatch(h["value"], got):
                return None
        elif got != h["value"]:
            return None
    for q in m.get("queryParams") or []:
        if query.get(q["name"]) != q["value"]:
            return None
    return (
        *pm,
        1 if m.get("method") else 0,
        len(m.get("headers") or []),
        len(m.get("queryParams") or []),
    )


def pick_rule(
    route: dict[str, Any], method: str, path: str, headers: dict[str, str], query: dict[str, str]
) -> dict[str, Any] | None:
    best: tuple[tuple[int, ...], int] | None = None
    chosen = None
    for i, rule in enumerate(route["spec"].get("rules") or []):
        for m in rule.get("matches") or [{}]:
            s = match_score(m, method, path, headers, query)
            if s is not None and (best is None or (s, -i) > best):
                best, chosen = (s, -i), rule
    return chosen


def weighted(backends: list[dict[str, Any]], rng: random.Random) -> dict[str, Any] | None:
    live = [(b, int(b.get("weight", 1))) for b in backends]
    total = sum(w for _, w in live if w > 0)
    if total <= 0:
        return None
    x = rng.uniform(0, total)
    for b, w in live:
        if w <= 0:
            continue
        if x < w:
            return b
        x -= w
    return [b for b, w in live if w > 0][-1]


def host_matches(patterns: list[str], host: str) -> bool:
    host = host.split(":")[0].lower()
    for p in patterns:
        p = p.lower()
        if p == host or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


# ------------------------------------------------------------------- routing


@dataclass
class Routed:
    """Where one request goes: the answer of :func:`route` (pure)."""

    namespace: str
    name: str  # the HTTPRoute, or the Service reached without one
    backend: str = ""  # the Service chosen
    port: int = 0
    path: str = "/"  # the path the backend sees
    timeout: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # after the rule's filters
    mirrors: list[tuple[str, int]] = field(default_factory=list)  # (Service, port)
    error: tuple[int, str] | None = None  # answered by the gateway itself


def resolve(
    w: World, path: str, headers: dict[str, str]
) -> tuple[str, str, dict[str, Any] | None, str] | None:
    """(namespace, route or Service name, route or None, the backend's path), or None.

    ``/<namespace>/<name>/<rest>``: the route ``<namespace>/<name>`` (or, without one,
    the Service of that name) with ``/<rest>`` as the path; otherwise a route whose
    ``hostnames`` match the Host header, with the path unchanged.
    """
    parts = path.split("/", 3)
    if len(parts) >= 3 and parts[1] and parts[2]:
        ns, name = parts[1], parts[2]
        rest = "/" + (parts[3] if len(parts) > 3 else "")
        r = w.routes.get((ns, name))
        if r is not None:
            return ns, name, r, rest
        if (ns, name) in w.services:
            return ns, name, None, rest
    host = headers.get("host", "")
    for (ns, name), r in w.routes.items():
        if host_matches(r["spec"].get("hostnames") or [], host):
            return ns, name, r, path
    return None


def modify_headers(m: dict[str, Any], headers: dict[str, str]) -> None:
    """RequestHeaderModifier: set (replacing any case), add, remove, in that order."""
    for hdr in m.get("set") or []:
        for k in [k for k in headers if k.lower() == hdr["name"].lower()]:
            del headers[k]
        headers[hdr["name"]] = hdr["value"]
    for hdr in m.get("add") or []:
        headers[hdr["name"]] = hdr["value"]
    for name in m.get("remove") or []:
        for k in [k for k in headers if k.lower() == name.lower()]:
            del headers[k]


def mirror_share(m: dict[str, Any]) -> float:
    """The share of requests a RequestMirror copies: ``fraction``, ``percent``, else all."""
    if "fraction" in m:
        f = m["fraction"]
        return float(f["numerator"]) / float(f.get("denominator", 100))
    return float(m.get("percent", 100)) / 100


def route(
    w: World,
    method: str,
    path: str,
    qs: str,
    headers: dict[str, str],
    rng: random.Random,
) -> Routed | None:
    """Which backend a request goes to, with what path, headers and timeout; None: no route.

    ``headers`` are the request's, names as sent; matching compares names in lower case.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    found = resolve(w, path, lower)
    if found is None:
        return None
    ns, name, r, rest = found
    out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}
    if r is None:
        svc = w.services[(ns, name)]
        return Routed(ns, name, backend=name, port=apex_port(svc), path=rest, headers=out)
    rule = pick_rule(r, method, rest, lower, dict(parse_qsl(qs)))
    if rule is None:
        return Routed(ns, name, path=rest, error=(404, "no rule matches"))
    t = (rule.get("timeouts") or {}).get("request") or ""
    routed = Routed(ns, name, path=rest, timeout=parse_duration(t) if t else None, headers=out)
    for f in rule.get("filters") or []:
        kind = f.get("type")
        if kind == "RequestMirror":
            m = f["requestMirror"]
            if rng.random() < mirror_share(m):
                ref = m["backendRef"]
                routed.mirrors.append((ref["name"], int(ref.get("port", 8000))))
        elif kind == "RequestHeaderModifier":
            modify_headers(f["requestHeaderModifier"], out)
        else:
            LOG.warning("filter %s not implemented; ignored", kind)
    ref = weighted(rule.get("backendRefs") or [], rng)
    if ref is None:
        routed.error = (500, "no backend with weight")
        return routed
    routed.backend, routed.port = ref["name"], int(ref.get("port", 8000))
    return routed


# ----------------------------------------------------------------- forwarding

Endpoint = tuple[str, int]
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Pool:
    """Keep-alive connections per endpoint, and requests in flight per endpoint."""

    def __init__(self) -> None:
        self.idle: dict[Endpoint, list[http.client.HTTPConnection]] = defaultdict(list)
        self.inflight: dict[Endpoint, int] = defaultdict(int)
        self.lock = threading.Lock()

    def least(self, eps: list[Endpoint], rng: random.Random) -> Endpoint:
        """The endpoint with the fewest requests in flight (least-request), ties at random."""
        with self.lock:
            low = min(self.inflight[e] for e in eps)
            return rng.choice([e for e in eps if self.inflight[e] == low])

    def get(self, ep: Endpoint, timeout: float | None) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``ep`` and whether it is a reused idle one."""
        with self.lock:
            self.inflight[ep] += 1
            if self.idle[ep]:
                c = self.idle[ep].pop()
                c.timeout = timeout
                if c.sock is not None:
                    c.sock.settimeout(timeout)
                return c, True
        return http.client.HTTPConnection(ep[0], ep[1], timeout=timeout), False

    def put(self, ep: Endpoint, c: http.client.HTTPConnection | None) -> None:
        with self.lock:
            self.inflight[ep] -= 1
            if c is not None and len(self.idle[ep]) < 64:
                self.idle[ep].append(c)

    def prune(self, live: set[Endpoint]) -> int:
        """Close the idle connections to endpoints no longer ready; how many.

        A pod that left keeps its address free for the next one: a connection kept
        from the old process must not carry a request to the new one.
        """
        with self.lock:
            gone = [ep for ep in self.idle if ep not in live]
            conns = [c for ep in gone for c in self.idle.pop(ep)]
        for c in conns:
            c.close()
        return len(conns)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str, str, int], int] = defaultdict(int)
        self.hist: dict[tuple[str, str, str], list[int]] = {}
        self.sums: dict[tuple[str, str, str], float] = defaultdict(float)

    def add(self, ns: str, route: str, backend: str, code: int, ms: float) -> None:
        with self.lock:
            self.counts[(ns, route, backend, code)] += 1
            key = (ns, route, backend)
            h = self.hist.setdefault(key, [0] * (len(BUCKETS_MS) + 1))
            for i, b in enumerate(BUCKETS_MS):
                if ms <= b:
                    h[i] += 1
                    break
            else:
                h[-1] += 1
            self.sums[key] += ms / 1000.0

    def json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [
                {"namespace": ns, "route": r, "backend": b, "code": c, "count": n}
                for (ns, r, b, c), n in sorted(self.counts.items())
            ]

    def prometheus(self) -> str:
        lines = ["# TYPE sluice_gateway_requests_total counter"]
        hist = "sluice_gateway_request_duration_seconds"
        with self.lock:
            for (ns, r, b, c), n in sorted(self.counts.items()):
                lines.append(
                    f'sluice_gateway_requests_total{{namespace="{ns}",route="{r}",'
                    f'backend="{b}",code="{c}"}} {n}'
                )
            lines.append("# TYPE sluice_gateway_request_duration_seconds histogram")
            for (ns, r, b), h in sorted(self.hist.items()):
                lab = f'namespace="{ns}",route="{r}",backend="{b}"'
                acc = 0
                for i, bound in enumerate(BUCKETS_MS):
                    acc += h[i]
                    lines.append(f'{hist}_bucket{{{lab},le="{bound / 1000}"}} {acc}')
                acc += h[-1]
                lines.append(
                    f'sluice_gateway_request_duration_seconds_bucket{{{lab},le="+Inf"}} {acc}'
                )
                lines.append(f"sluice_gateway_request_duration_seconds_count{{{lab}}} {acc}")
                lines.append(f"{hist}_sum{{{lab}}} {self.sums[(ns, r, b)]:.6f}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outbound:
    """A request on its way to a backend Service (forwarded, or a mirror's copy)."""

    namespace: str
    service: str
    port: int
    method: str
    target: str  # path and query
    headers: dict[str, str]
    body: bytes


class Upstream(Exception):
    """The backend could not be reached or gave no answer: the gateway answers ``code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Gateway:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.world = World()
        self.pool = Pool()
        self.stats = Stats()
        self.stop = threading.Event()
        self.loaded = threading.Event()
        self.local = threading.local()

    def rng(self) -> random.Random:
        r = getattr(self.local, "rng", None)
        if r is None:
            r = self.local.rng = random.Random()
        return r

    def refresh(self) -> None:
        while not self.stop.is_set():
            try:
                self.world = load_world(self.api)
                self.pool.prune(all_ready(self.world))
                self.loaded.set()
            except Exception as e:  # the apiserver may be restarting: keep the last view
                LOG.warning("refresh failed: %s", e)
            self.stop.wait(POLL_SECONDS)  # polling period of the cluster's objects

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        t0 = time.monotonic()
        path, _, qs = h.path.partition("?")
        if path.startswith("/_gateway/"):
            self.admin(h, path)
            return
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        r = route(self.world, h.command, path, qs, dict(h.headers.items()), self.rng())
        if r is None:
            self.reply(h, 404, b"no route\n")
            return
        if r.error is not None:
            self.reply(h, r.error[0], r.error[1].encode() + b"\n")
            if r.error[0] == 500:
                self.stats.add(r.namespace, r.name, "", 500, 0)
            return
        target = r.path + ("?" + qs if qs else "")
        for svc, port in r.mirrors:  # fire and forget: the answer is dropped
            copy = Outbound(r.namespace, svc, port, h.command, target, dict(r.headers), body)
            threading.Thread(target=self.mirror, args=(copy,), daemon=True).start()
        out = Outbound(r.namespace, r.backend, r.port, h.command, target, r.headers, body)
        try:
            status, headers, data = self.send(out, r.timeout or 300)
        except Upstream as e:
            status, headers, data = e.code, [("Content-Type", "text/plain")], f"{e}\n".encode()
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        self.stats.add(r.namespace, r.name, r.backend, status, (time.monotonic() - t0) * 1000)

    def mirror(self, out: Outbound) -> None:
        with contextlib.suppress(Upstream):
            self.send(out, 30)
        self.stats.add(out.namespace, "mirror", out.service, 0, 0)

    def send(self, out: Outbound, timeout: float) -> tuple[int, list[tuple[str, str]], bytes]:
        """The one forwarding path: a ready endpoint of ``svc``, its status, headers, body.

        A kept connection the backend closed while idle fails before any answer; the
        request never reached the backend, so it is sent once more on a new connection.
        """
        ns, svc = out.namespace, out.service
        eps = ready_endpoints(self.world, ns, svc, out.port)
        if eps is None:
            raise Upstream(500, f"backend Service {ns}/{svc} not found")
        if not eps:
            raise Upstream(503, f"no ready endpoints for {ns}/{svc}")
        ep = self.pool.least(eps, self.rng())
        for _attempt in range(2):
            conn, reused = self.pool.get(ep, timeout)
            try:
                conn.request(out.method, out.target, body=out.body, headers=out.headers)
                r = conn.getresponse()
                data = r.read()
            except STALE as e:
                conn.close()
                self.pool.put(ep, None)
                if reused:
                    continue
                raise Upstream(503, f"upstream {ep[0]}:{ep[1]} failed: {e}") from e
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self.pool.put(ep, None)
                raise Upstream(503, f"upstream {ep[0]}:{ep[1]} failed: {e}") from e
            self.pool.put(ep, None if r.will_close else conn)
            kept = [
                (k, v)
                for k, v in r.getheaders()
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"
            ]
            return int(r.status), kept, data
        raise Upstream(503, f"upstream {ep[0]}:{ep[1]} closed the connection")

    def admin(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path == "/_gateway/stats":
            self.reply(h, 200, json.dumps(self.stats.json()).encode(), "application/json")
        elif path == "/_gateway/metrics":
            self.reply(h, 200, self.stats.prometheus().encode(), "text/plain; version=0.0.4")
        elif path == "/_gateway/routes":
            self.reply(h, 200, json.dumps(route_view(self.world)).encode(), "application/json")
        elif path == "/_gateway/healthz":
            self.reply(h, 200 if self.loaded.is_set() else 503, b"ok\n")
        else:
            self.reply(h, 404, b"unknown\n")

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, code: int, body: bytes, ctype: str = "text/plain") -> None:
        h.send_response(code)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


def parse_duration(s: str) -> float:
    total = 0.0
    for n, unit in re.findall(r"([0-9.]+)(ms|h|m|s)", s):
        total += float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total or 300.0


def serve(gw: Gateway, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            gw.handle(self)

        do_POST = do_GET
        do_PUT = do_GET
        do_DELETE = do_GET
        do_HEAD = do_GET

    ThreadingHTTPServer.request_queue_size = 256
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
    gw = Gateway(api)
    server = serve(gw, args.port)
    threading.Thread(target=gw.refresh, daemon=True, name="refresh").start()

    def stop(signum: int, _frame: object) -> None:
        gw.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    LOG.info("gateway on 127.0.0.1:%d", args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
