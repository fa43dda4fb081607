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
latency histogram per route and backend).
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
    custom = k8s.CustomObjectsApi(api)
    core = k8s.CoreV1Api(api)
    disc = k8s.DiscoveryV1Api(api)
    w = World()
    try:
        routes = custom.list_cluster_custom_object("gateway.networking.k8s.io", "v1", "httproutes")[
            "items"
        ]
    except k8s.exceptions.ApiException as e:
        if e.status != 404:  # no Gateway API CRDs yet: no routes
            raise
        routes = []
    for r in routes:
        w.routes[(r["metadata"]["namespace"], r["metadata"]["name"])] = r
    svcs = json.loads(core.list_service_for_all_namespaces(_preload_content=False).data)
    for s in svcs["items"]:
        w.services[(s["metadata"]["namespace"], s["metadata"]["name"])] = s
    slices = json.loads(disc.list_endpoint_slice_for_all_namespaces(_preload_content=False).data)
    for sl in slices["items"]:
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


# ----------------------------------------------------------------- forwarding


class Pool:
    """Keep-alive connections per endpoint, and requests in flight per endpoint."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = defaultdict(list)
        self.inflight: dict[tuple[str, int], int] = defaultdict(int)
        self.lock = threading.Lock()

    def least(self, eps: list[tuple[str, int]], rng: random.Random) -> tuple[str, int]:
        with self.lock:
            low = min(self.inflight[e] for e in eps)
            return rng.choice([e for e in eps if self.inflight[e] == low])

    def get(self, ep: tuple[str, int], timeout: float | None) -> http.client.HTTPConnection:
        with self.lock:
            self.inflight[ep] += 1
            if self.idle[ep]:
                c = self.idle[ep].pop()
                c.timeout = timeout
                if c.sock is not None:
                    c.sock.settimeout(timeout)
                return c
        return http.client.HTTPConnection(ep[0], ep[1], timeout=timeout)

    def put(self, ep: tuple[str, int], c: http.client.HTTPConnection | None) -> None:
        with self.lock:
            self.inflight[ep] -= 1
            if c is not None and len(self.idle[ep]) < 64:
                self.idle[ep].append(c)


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
                self.loaded.set()
            except Exception as e:  # the apiserver may be restarting: keep the last view
                LOG.warning("refresh failed: %s", e)
            self.stop.wait(POLL_SECONDS)  # polling period of the cluster's objects

    def endpoints(self, ns: str, svc: str, port: int) -> list[tuple[str, int]] | None:
        """Ready (ip, port) of the Service's ``port``; None when the Service is unknown."""
        w = self.world
        s = w.services.get((ns, svc))
        if s is None:
            return None
        name = ""
        for p in s["spec"].get("ports") or []:
            if int(p["port"]) == port:
                name = p.get("name") or ""
        return list((w.ready.get((ns, svc)) or {}).get(name) or [])

    def resolve(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[str, str, dict[str, Any] | None, str]:
        """(namespace, route or service name, rule or None, path for the backend)."""
        parts = path.split("/", 3)
        if len(parts) >= 3 and parts[1] and parts[2]:
            ns, name = parts[1], parts[2]
            rest = "/" + (parts[3] if len(parts) > 3 else "")
            route = self.world.routes.get((ns, name))
            if route is not None:
                return ns, name, route, rest
            if (ns, name) in self.world.services:
                return ns, name, None, rest
        host = headers.get("host", "")
        for (ns, name), route in self.world.routes.items():
            if host_matches(route["spec"].get("hostnames") or [], host):
                return ns, name, route, path
        raise LookupError(path)

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        t0 = time.monotonic()
        path, _, qs = h.path.partition("?")
        if path.startswith("/_gateway/"):
            self.admin(h, path)
            return
        headers = {k.lower(): v for k, v in h.headers.items()}
        length = int(headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else b""
        try:
            ns, name, route, rest = self.resolve(h.command, path, headers)
        except LookupError:
            self.reply(h, 404, b"no route\n")
            return
        timeout: float | None = None
        out_headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        if route is None:
            backend, port = name, 8000
            for p in self.world.services[(ns, name)]["spec"].get("ports") or []:
                if p.get("name") == "http":
                    port = int(p["port"])
        else:
            query = dict(parse_qsl(qs))
            rule = pick_rule(route, h.command, rest, headers, query)
            if rule is None:
                self.reply(h, 404, b"no rule matches\n")
                return
            t = ((rule.get("timeouts") or {}).get("request")) or ""
            if t:
                timeout = parse_duration(t)
            for f in rule.get("filters") or []:
                self.filter(f, ns, rest, qs, out_headers, body, h.command)
            ref = weighted(rule.get("backendRefs") or [], self.rng())
            if ref is None:
                self.reply(h, 500, b"no backend with weight\n")
                self.stats.add(ns, name, "", 500, 0)
                return
            backend, port = ref["name"], int(ref.get("port", 8000))
        code = self.forward(h, ns, backend, port, rest, qs, out_headers, body, timeout)
        self.stats.add(ns, name, backend, code, (time.monotonic() - t0) * 1000)

    def filter(
        self,
        f: dict[str, Any],
        ns: str,
        path: str,
        qs: str,
        headers: dict[str, str],
        body: bytes,
        method: str,
    ) -> None:
        kind = f.get("type")
        if kind == "RequestMirror":
            m = f["requestMirror"]
            if "fraction" in m:
                share = m["fraction"]["numerator"] / m["fraction"].get("denominator", 100)
            else:
                share = m.get("percent", 100) / 100
            if self.rng().random() < share:
                ref = m["backendRef"]
                threading.Thread(
                    target=self.mirror,
                    args=(
                        ns,
                        ref["name"],
                        int(ref.get("port", 8000)),
                        path,
                        qs,
                        dict(headers),
                        body,
                        method,
                    ),
                    daemon=True,
                ).start()
        elif kind == "RequestHeaderModifier":
            m = f["requestHeaderModifier"]
            for hdr in m.get("set") or []:
                for k in [k for k in headers if k.lower() == hdr["name"].lower()]:
                    del headers[k]
                headers[hdr["name"]] = hdr["value"]
            for hdr in m.get("add") or []:
                headers[hdr["name"]] = hdr["value"]
            for name in m.get("remove") or []:
                for k in [k for k in headers if k.lower() == name.lower()]:
                    del headers[k]
        else:
            LOG.warning("filter %s not implemented; ignored", kind)

    def mirror(
        self,
        ns: str,
        svc: str,
        port: int,
        path: str,
        qs: str,
        headers: dict[str, str],
        body: bytes,
        method: str,
    ) -> None:
        eps = self.endpoints(ns, svc, port)
        if not eps:
            return
        ep = self.pool.least(eps, self.rng())
        conn = self.pool.get(ep, 30)
        try:
            conn.request(method, path + ("?" + qs if qs else ""), body=body, headers=headers)
            conn.getresponse().read()
            self.pool.put(ep, conn)
        except (OSError, http.client.HTTPException):
            conn.close()
            self.pool.put(ep, None)
        self.stats.add(ns, "mirror", svc, 0, 0)

    def forward(
        self,
        h: BaseHTTPRequestHandler,
        ns: str,
        svc: str,
        port: int,
        path: str,
        qs: str,
        headers: dict[str, str],
        body: bytes,
        timeout: float | None,
    ) -> int:
        eps = self.endpoints(ns, svc, port)
        if eps is None:
            self.reply(h, 500, f"backend Service {ns}/{svc} not found\n".encode())
            return 500
        if not eps:
            self.reply(h, 503, f"no ready endpoints for {ns}/{svc}\n".encode())
            return 503
        ep = self.pool.least(eps, self.rng())
        conn = self.pool.get(ep, timeout or 300)
        try:
            conn.request(h.command, path + ("?" + qs if qs else ""), body=body, headers=headers)
            r = conn.getresponse()
            data = r.read()
            resp_headers = [(k, v) for k, v in r.getheaders() if k.lower() not in HOP_BY_HOP]
            keep = not r.will_close
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.pool.put(ep, None)
            self.reply(h, 503, f"upstream {ep[0]}:{ep[1]} failed: {e}\n".encode())
            return 503
        self.pool.put(ep, conn if keep else None)
        h.send_response(r.status)
        for k, v in resp_headers:
            if k.lower() != "content-length":
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
        return int(r.status)

    def admin(self, h: BaseHTTPRequestHandler, path: str) -> None:
        if path == "/_gateway/stats":
            self.reply(h, 200, json.dumps(self.stats.json()).encode(), "application/json")
        elif path == "/_gateway/metrics":
            self.reply(h, 200, self.stats.prometheus().encode(), "text/plain; version=0.0.4")
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
