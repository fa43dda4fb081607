"""A load generator that follows the traffic split the operator writes.

It reads the InferenceService's HTTPRoute from the cluster (its weighted rule's
``backendRefs``) a few times per second and sends each request to the variant
a weighted draw picks, at that variant's stand-in tritonserver: the split a
Gateway would make. With no route (or all weights 0) everything goes to main.

Two shapes: ``concurrency`` workers sending back to back (closed loop: pushes
tail latency up on a saturated server), or a total ``rate`` in requests per
second spread over the workers (open loop, paced).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.support.fleet import MODEL

BODY = json.dumps(
    {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
).encode()


class RouteWeights:
    """The weights of an HTTPRoute's weighted rule, polled in a thread."""

    def __init__(self, kubeconfig: Path, namespace: str, name: str, period: float = 0.3) -> None:
        api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        self.api = k8s.CustomObjectsApi(api)
        self.namespace, self.name, self.period = namespace, name, period
        self.weights: dict[str, int] = {}
        self.history: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="route-weights")

    def read(self) -> dict[str, int]:
        """{backend Service name: weight} of the rule without header matches."""
        try:
            route: Any = self.api.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", self.name
            )
        except k8s.exceptions.ApiException as e:
            if e.status == 404:
                return {}
            raise
        for rule in route["spec"].get("rules") or []:
            if any("headers" in m for m in rule.get("matches") or []):
                continue
            return {b["name"]: int(b.get("weight", 1)) for b in rule.get("backendRefs") or []}
        return {}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                w = self.read()
            except Exception:  # a transient API error: keep the last weights
                w = self.weights
            if w != self.weights:
                self.history.append(dict(w))
            self.weights = w
            self._stop.wait(self.period)  # polling period, not synchronisation

    def __enter__(self) -> RouteWeights:
        self.weights = self.read()
        self.history.append(dict(self.weights))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Load:
    """Inference requests split by the route's weights over the stand-in servers."""

    def __init__(
        self,
        isvc: str,
        servers: Mapping[str, str],  # variant -> base URL of its stand-in tritonserver
        weights: RouteWeights | None = None,
        *,
        concurrency: int = 2,
        rate: float | None = None,
    ) -> None:
        self.isvc = isvc
        self.servers = dict(servers)
        self.weights = weights
        self.concurrency = concurrency
        self.rate = rate
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._rng = random.Random(7)

    def pick(self) -> str:
        w = self.weights.weights if self.weights is not None else {}
        prefix = f"{self.isvc}-"
        choices = [
            (name[len(prefix) :], weight)
            for name, weight in w.items()
            if name.startswith(prefix) and weight > 0
        ]
        if not choices:
            return "main"
        with self._lock:
            x = self._rng.uniform(0, sum(wt for _, wt in choices))
        for variant, weight in choices:
            if x < weight:
                return variant
            x -= weight
        return choices[-1][0]

    def _worker(self, index: int) -> None:
        conns: dict[str, http.client.HTTPConnection] = {}
        period = self.concurrency / self.rate if self.rate else 0.0
        next_at = time.monotonic() + period * index / max(1, self.concurrency)
        while not self._stop.is_set():
            if period:
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):  # pacing the open-loop rate
                    break
                next_at = max(next_at + period, time.monotonic() - period)
            variant = self.pick()
            ok = self._send(conns, variant)
            with self._lock:
                self.sent[variant] += 1
                if not ok:
                    self.failed[variant] += 1
        for c in conns.values():
            c.close()

    def _send(self, conns: dict[str, http.client.HTTPConnection], variant: str) -> bool:
        base = self.servers.get(variant)
        if base is None:
            return False  # the route names a variant with no server: counted as failed
        conn = conns.get(variant)
        if conn is None:
            host, port = base.removeprefix("http://").split(":")
            conn = conns[variant] = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(
                "POST",
                f"/v2/models/{MODEL}/infer",
                body=BODY,
                headers={"Content-Type": "application/json"},
            )
            r = conn.getresponse()
            r.read()
            return r.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conns.pop(variant, None)
            return False

    def __enter__(self) -> Load:
        for i in range(self.concurrency):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        self._threads.clear()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.sent)
