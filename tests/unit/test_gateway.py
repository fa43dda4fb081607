"""The local gateway's pure parts (hack/gateway.py): routing, no sockets, no cluster.

The world it reads (ready endpoints only, ports through their names), the HTTPRoute
rules it implements (matches and their precedence, weights, filters, timeouts), the
apex Service without a route, and the pool that must not carry a request to a pod
that reuses a gone pod's address.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sluice.api.v1alpha1 import parse_spec
from sluice.render import httproute, variant_service
from sluice.render.plan import Meta, Variant
from tests.support.hack import hack_module

gw = hack_module("gateway")
NS = "team"


def service(name: str, ports: dict[str, int] | None = None) -> dict[str, Any]:
    ports = ports or {"http": 8000, "grpc": 8001, "metrics": 8002}
    return {
        "metadata": {"namespace": NS, "name": name},
        "spec": {"ports": [{"name": k, "port": v} for k, v in ports.items()]},
    }


def endpoint_slice(svc: str, *endpoints: tuple[str, bool]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": NS, "labels": {"kubernetes.io/service-name": svc}},
        "ports": [{"name": "http", "port": 8000}, {"name": "metrics", "port": 8002}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ready, "terminating": not ready}}
            for ip, ready in endpoints
        ],
    }


def httproute_obj(name: str, rules: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": NS, "name": name}, "spec": {"rules": rules, **spec}}


def backends(**weights: int) -> list[dict[str, Any]]:
    return [{"name": n, "port": 8000, "weight": w} for n, w in weights.items()]


def world(*routes: dict[str, Any], svcs: tuple[str, ...] = ("a", "b")) -> Any:
    slices = [endpoint_slice(s, (f"10.150.0.{i + 2}", True)) for i, s in enumerate(svcs)]
    return gw.world_from(list(routes), [service(s) for s in svcs], slices)


def share(w: Any, n: int = 20000, path: str = "/r/x", **kw: Any) -> dict[str, float]:
    rng = random.Random(7)
    got = Counter(
        gw.route(w, "POST", f"/{NS}{path}", "", kw.get("headers", {}), rng).backend
        for _ in range(n)
    )
    return {k: v / n for k, v in got.items()}


# ------------------------------------------------------------------- world


def test_only_ready_endpoints_count_and_pod_ips_map_to_loopback() -> None:
    w = gw.world_from(
        [],
        [service("a")],
        [endpoint_slice("a", ("10.150.0.2", True), ("10.150.0.3", False))],
    )
    assert gw.ready_endpoints(w, NS, "a", 8000) == [("127.150.0.2", 8000)]
    assert gw.ready_endpoints(w, NS, "a", 8002) == [("127.150.0.2", 8002)]
    assert gw.ready_endpoints(w, NS, "a", 9999) == []  # not a port of the Service
    assert gw.ready_endpoints(w, NS, "nope", 8000) is None  # an unknown Service


def test_the_backend_port_is_mapped_through_the_services_port_name() -> None:
    # Service port 80 named http; the slice carries the pods' port 8000 under that name.
    w = gw.world_from([], [service("a", {"http": 80})], [endpoint_slice("a", ("10.150.0.2", True))])
    assert gw.ready_endpoints(w, NS, "a", 80) == [("127.150.0.2", 8000)]


def test_every_ready_endpoint_is_known_for_pruning_the_pool() -> None:
    w = world()
    assert gw.all_ready(w) == {
        ("127.150.0.2", 8000),
        ("127.150.0.2", 8002),
        ("127.150.0.3", 8000),
        ("127.150.0.3", 8002),
    }


# ----------------------------------------------------------------- routing


def test_weights_are_proportional_not_percentages() -> None:
    w = world(httproute_obj("r", [{"backendRefs": backends(a=700000, b=300000)}]))
    got = share(w)
    assert got["a"] == pytest.approx(0.7, abs=0.015)
    assert got["b"] == pytest.approx(0.3, abs=0.015)


def test_weight_zero_takes_nothing_and_all_zero_is_a_500() -> None:
    w = world(httproute_obj("r", [{"backendRefs": backends(a=1, b=0)}]))
    assert share(w, 2000) == {"a": 1.0}
    w = world(httproute_obj("r", [{"backendRefs": backends(a=0, b=0)}]))
    r = gw.route(w, "POST", f"/{NS}/r/x", "", {}, random.Random(1))
    assert r.error == (500, "no backend with weight")
    w = world(httproute_obj("r", [{"backendRefs": [{"name": "a"}, {"name": "b"}]}]))
    assert share(w)["a"] == pytest.approx(0.5, abs=0.015)  # weight defaults to 1


def test_the_route_sees_the_path_after_namespace_and_name() -> None:
    w = world(httproute_obj("r", [{"backendRefs": backends(a=1)}]))
    r = gw.route(w, "POST", f"/{NS}/r/v2/models/m/infer", "", {}, random.Random(1))
    assert (r.namespace, r.name, r.backend, r.port, r.path) == (
        NS,
        "r",
        "a",
        8000,
        "/v2/models/m/infer",
    )
    assert gw.route(w, "POST", "/other/r/v2", "", {}, random.Random(1)) is None


def test_without_a_route_the_service_is_reached_on_its_http_port() -> None:
    w = world()
    r = gw.route(w, "GET", f"/{NS}/a/v2/health/ready", "", {}, random.Random(1))
    assert (r.backend, r.port, r.path, r.error) == ("a", 8000, "/v2/health/ready", None)


def test_header_matches_select_their_rule_and_others_fall_through() -> None:
    rules = [
        {"backendRefs": backends(a=1)},
        {
            "matches": [{"headers": [{"name": "X-Variant", "value": "b"}]}],
            "backendRefs": backends(b=1),
        },
    ]
    w = world(httproute_obj("r", rules))
    assert share(w, 200, headers={"x-variant": "b"}) == {"b": 1.0}  # names: any case
    assert share(w, 200, headers={"X-Variant": "B"}) == {"a": 1.0}  # values: exact
    assert share(w, 200) == {"a": 1.0}


def test_regular_expression_headers_query_and_method() -> None:
    rules = [
        {
            "matches": [
                {"headers": [{"name": "user", "type": "RegularExpression", "value": "beta-.*"}]}
            ],
            "backendRefs": backends(b=1),
        },
        {"matches": [{"queryParams": [{"name": "v", "value": "2"}]}], "backendRefs": backends(b=1)},
        {"matches": [{"method": "GET"}], "backendRefs": backends(b=1)},
        {"backendRefs": backends(a=1)},
    ]
    w = world(httproute_obj("r", rules))
    rng = random.Random(1)

    def to(method: str, qs: str = "", **headers: str) -> str:
        return str(gw.route(w, method, f"/{NS}/r/x", qs, headers, rng).backend)

    assert to("POST", user="beta-7") == "b"
    assert to("POST", user="alpha") == "a"
    assert to("POST", "v=2") == "b" and to("POST", "v=3") == "a"
    assert to("GET") == "b"


def test_precedence_exact_path_then_longest_prefix_then_header_count() -> None:
    rules = [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
            "backendRefs": backends(a=1),
        },
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/v2/models"}}],
            "backendRefs": backends(b=1),
        },
        {
            "matches": [{"path": {"type": "Exact", "value": "/v2/models/m/infer"}}],
            "backendRefs": backends(c=1),
        },
        {
            "matches": [
                {
                    "path": {"type": "PathPrefix", "value": "/v2/models"},
                    "headers": [{"name": "x", "value": "1"}],
                }
            ],
            "backendRefs": backends(d=1),
        },
    ]
    w = world(httproute_obj("r", rules), svcs=("a", "b", "c", "d"))
    rng = random.Random(1)

    def to(path: str, **headers: str) -> str:
        return str(gw.route(w, "POST", f"/{NS}/r{path}", "", headers, rng).backend)

    assert to("/v2/models/m/infer", x="1") == "c"  # Exact beats any prefix
    assert to("/v2/models/m/ready", x="1") == "d"  # same prefix, more header matches
    assert to("/v2/models/m/ready") == "b"  # the longest prefix
    assert to("/v2/health") == "a"
    # A prefix matches whole path segments only.
    assert gw.path_matches({"path": {"type": "PathPrefix", "value": "/v2"}}, "/v2x") is None
    r = gw.route(w, "POST", f"/{NS}/r/other", "", {}, rng)
    assert r.error == (404, "no rule matches")


def test_equal_matches_go_to_the_first_rule() -> None:
    rules = [{"backendRefs": backends(a=1)}, {"backendRefs": backends(b=1)}]
    assert share(world(httproute_obj("r", rules)), 200) == {"a": 1.0}


def test_hostnames_route_with_the_path_unchanged() -> None:
    w = world(httproute_obj("r", [{"backendRefs": backends(b=1)}], hostnames=["*.example.com"]))
    r = gw.route(
        w, "POST", "/v2/models/m/infer", "", {"Host": "api.example.com:80"}, random.Random(1)
    )
    assert (r.name, r.backend, r.path) == ("r", "b", "/v2/models/m/infer")
    assert gw.route(w, "POST", "/v2", "", {"Host": "example.org"}, random.Random(1)) is None


def test_filters_headers_mirror_and_timeout() -> None:
    rule = {
        "filters": [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {
                    "set": [{"name": "X-Env", "value": "prod"}],
                    "add": [{"name": "X-Added", "value": "1"}],
                    "remove": ["x-secret"],
                },
            },
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "b", "port": 8000}, "percent": 100},
            },
        ],
        "timeouts": {"request": "1m30s"},
        "backendRefs": backends(a=1),
    }
    w = world(httproute_obj("r", [rule]))
    headers = {"x-env": "dev", "X-Secret": "s", "Connection": "keep-alive", "Host": "gw", "A": "1"}
    r = gw.route(w, "POST", f"/{NS}/r/x", "", headers, random.Random(1))
    assert r.headers == {"X-Env": "prod", "X-Added": "1", "A": "1"}  # hop-by-hop dropped
    assert r.mirrors == [("b", 8000)]
    assert r.timeout == 90.0
    assert headers["x-env"] == "dev"  # the request's own headers are not changed


def test_mirror_fraction_copies_its_share() -> None:
    m = {"backendRef": {"name": "b"}, "fraction": {"numerator": 1, "denominator": 4}}
    assert gw.mirror_share(m) == 0.25
    assert gw.mirror_share({"backendRef": {"name": "b"}, "percent": 10}) == 0.1
    assert gw.mirror_share({"backendRef": {"name": "b"}}) == 1.0
    rule = {
        "filters": [{"type": "RequestMirror", "requestMirror": m}],
        "backendRefs": backends(a=1),
    }
    w = world(httproute_obj("r", [rule]))
    rng = random.Random(3)
    n = sum(bool(gw.route(w, "POST", f"/{NS}/r/x", "", {}, rng).mirrors) for _ in range(8000))
    assert n / 8000 == pytest.approx(0.25, abs=0.02)


def test_durations() -> None:
    assert gw.parse_duration("250ms") == 0.25
    assert gw.parse_duration("1h2m3s") == 3723.0
    assert gw.parse_duration("") == 300.0  # none given: the gateway's default


def test_the_route_sluice_renders_is_routed_by_its_weights() -> None:
    spec = parse_spec(
        {
            "model": {"name": "m", "repository": "s3://b/r", "version": 1},
            "variants": [{"name": "b", "weight": 20, "model": {"version": 2}}],
            "router": {"gateway": {"name": "local"}},
        }
    )
    meta = Meta(name="m", namespace=NS)
    variants = [
        Variant(name="main", version=1, image="i", repository="s3://b/r", replicas=1, weight=80),
        Variant(name="b", version=2, image="i", repository="s3://b/r", replicas=1, weight=20),
    ]
    route = httproute(meta, spec, variants)
    svcs = [variant_service(meta, v) for v in variants]
    slices = [
        endpoint_slice(s["metadata"]["name"], (f"10.150.0.{i + 2}", True))
        for i, s in enumerate(svcs)
    ]
    w = gw.world_from([route], svcs, slices)
    got = share(w, path="/m/v2/models/m/infer")
    assert got == pytest.approx({"m-main": 0.8, "m-b": 0.2}, abs=0.015)


# -------------------------------------------------------------------- pool


class FakeConn:
    closed = 0

    def __init__(self) -> None:
        self.sock = None
        self.timeout: float | None = None

    def close(self) -> None:
        FakeConn.closed += 1


def test_the_pool_prefers_the_endpoint_with_fewest_requests_in_flight() -> None:
    pool = gw.Pool()
    a, b = ("127.0.0.2", 8000), ("127.0.0.3", 8000)
    _c, reused = pool.get(a, 1)
    assert reused is False
    assert {pool.least([a, b], random.Random(i)) for i in range(20)} == {b}
    pool.put(a, None)
    assert {pool.least([a, b], random.Random(i)) for i in range(40)} == {a, b}


def test_idle_connections_to_endpoints_no_longer_ready_are_closed() -> None:
    pool = gw.Pool()
    a, b = ("127.0.0.2", 8000), ("127.0.0.3", 8000)
    for ep in (a, a, b):
        pool.inflight[ep] += 1
        pool.put(ep, FakeConn())
    FakeConn.closed = 0
    assert pool.prune({b}) == 2
    assert FakeConn.closed == 2
    c, reused = pool.get(a, 1)  # a pod that takes a's address gets a new connection
    assert reused is False and isinstance(c, http.client.HTTPConnection)
    _c, reused = pool.get(b, 1)
    assert reused is True


@contextmanager
def backend(served: list[tuple[str, dict[str, str]]], close: bool) -> Iterator[int]:
    """An HTTP/1.1 server on 127.0.0.1 answering ``ok``; ``close``: it closes each
    connection after answering without saying so (the pool keeps it)."""

    class Backend(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            served.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("X-Backend", "yes")
            self.end_headers()
            self.wfile.write(b"ok")
            self.close_connection = close

    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_a_kept_connection_the_backend_closed_is_retried_once_on_a_new_one() -> None:
    """A backend that closes idle kept connections (a pod replaced at the same address
    does): the request on the dead connection never reached it and must not fail."""
    served: list[tuple[str, dict[str, str]]] = []
    with backend(served, close=True) as port:
        g = gw.Gateway(None)
        g.world = gw.World(
            services={(NS, "a"): service("a", {"http": port})},
            ready={(NS, "a"): {"http": [("127.0.0.1", port)]}},
        )
        out = gw.Outbound(NS, "a", port, "POST", "/v2/x", {}, b"{}")
        for _ in range(3):
            assert g.send(out, 5)[::2] == (200, b"ok")
        assert [p for p, _h in served] == ["/v2/x"] * 3  # each once: retries found it closed
        assert g.pool.inflight[("127.0.0.1", port)] == 0


def test_a_request_through_the_gateway_reaches_the_routed_backend() -> None:
    """The whole path on loopback: the gateway's server, routing, filters, forwarding, stats."""
    served: list[tuple[str, dict[str, str]]] = []
    with backend(served, close=False) as port:
        rule = {
            "filters": [
                {
                    "type": "RequestHeaderModifier",
                    "requestHeaderModifier": {"add": [{"name": "X-Via", "value": "gw"}]},
                }
            ],
            "backendRefs": [{"name": "a", "port": port, "weight": 1}],
        }
        g = gw.Gateway(None)
        g.world = gw.World(
            routes={(NS, "r"): httproute_obj("r", [rule])},
            services={(NS, "a"): service("a", {"http": port})},
            ready={(NS, "a"): {"http": [("127.0.0.1", port)]}},
        )
        g.loaded.set()
        server = gw.serve(g, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
            for _ in range(2):  # the second on the kept connections
                conn.request("POST", f"/{NS}/r/v2/models/m/infer?x=1", body=b"{}")
                r = conn.getresponse()
                assert (r.status, r.read(), r.getheader("X-Backend")) == (200, b"ok", "yes")
            conn.request("POST", "/nowhere/x/y", body=b"")
            r = conn.getresponse()
            assert (r.status, r.read()) == (404, b"no route\n")
            conn.request("GET", "/_gateway/stats")
            stats = json.loads(conn.getresponse().read())
            conn.close()
        finally:
            server.shutdown()
            server.server_close()
    assert [p for p, _h in served] == ["/v2/models/m/infer?x=1"] * 2
    assert served[0][1]["x-via"] == "gw"
    assert stats == [{"namespace": NS, "route": "r", "backend": "a", "code": 200, "count": 2}]


def test_a_service_without_ready_endpoints_is_a_503_and_an_unknown_one_a_500() -> None:
    g = gw.Gateway(None)
    g.world = gw.world_from([], [service("a")], [endpoint_slice("a", ("10.150.0.2", False))])
    with pytest.raises(gw.Upstream) as e:
        g.send(gw.Outbound(NS, "a", 8000, "POST", "/", {}, b""), 1)
    assert e.value.code == 503 and "no ready endpoints" in str(e.value)
    with pytest.raises(gw.Upstream) as e:
        g.send(gw.Outbound(NS, "zz", 8000, "POST", "/", {}, b""), 1)
    assert e.value.code == 500


def test_the_route_view_shows_the_weights_the_gateway_routes_by() -> None:
    rules = [
        {"matches": [{"headers": [{"name": "x", "value": "b"}]}], "backendRefs": backends(b=1)},
        {"backendRefs": [*backends(a=80, b=20), {"name": "c"}]},
    ]
    assert gw.route_view(world(httproute_obj("r", rules))) == {
        f"{NS}/r": [
            {"matches": rules[0]["matches"], "weights": {"b": 1}},
            {"matches": [], "weights": {"a": 80, "b": 20, "c": 1}},
        ]
    }
