#!/usr/bin/env python3
"""Triton inference load through the local gateway (``make load``).

    .venv/bin/python hack/load.py default/demo --rate 30 --duration 60 [--shape ramp]

Open loop: request start times follow a Poisson process whose rate follows the
shape (``steady``: RATE throughout; ``ramp``: from RATE/10 up to RATE; ``burst``:
RATE/4 with RATE in the middle third). Each request is a ``tritonclient.http`` infer
call to ``<gateway>/<namespace>/<name>`` (the gateway routes it by the
InferenceService's HTTPRoute, or its apex Service without a router). Latency is
measured from the scheduled start, so a client that falls behind shows as latency,
not as a lower rate. Every few seconds it prints the achieved rate, errors and
latency percentiles of the last interval, and a summary at the end; ``--json FILE``
writes the summary and the per-interval series.

The model's input and output are found from the server's metadata (the first input
gets ones; a model that answers with its version number, as the demo's do, has the
answers counted per version).
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.http as triton_http

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"FP32": np.float32, "FP16": np.float16, "INT32": np.int32, "INT64": np.int64}


def shape_fn(shape: str, rate: float, duration: float) -> Callable[[float], float]:
    if shape == "steady":
        return lambda t: rate
    if shape == "ramp":
        return lambda t: rate * (0.1 + 0.9 * min(1.0, t / duration))
    if shape == "burst":
        return lambda t: rate if duration / 3 <= t < 2 * duration / 3 else rate / 4
    raise ValueError(f"unknown shape {shape!r} (steady, ramp, burst)")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@dataclass
class Result:
    start: float  # scheduled, seconds since the load began
    latency_ms: float
    error: str = ""
    version: int | None = None


@dataclass
class Interval:
    t: float
    rate: float
    target_rate: float
    errors: int
    p50: float
    p95: float
    p99: float
    versions: dict[str, int] = field(default_factory=dict)


class Load:
    """An open-loop Triton load at ``rate(t)`` requests per second."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        rate: Callable[[float], float] = lambda t: 10.0,
        workers: int = 48,
        timeout: float = 30.0,
        seed: int = 1,
    ) -> None:
        self.url = url.removeprefix("http://")
        self.rate = rate
        self.workers = workers
        self.timeout = timeout
        self.rng = random.Random(seed)
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.todo: queue.Queue[float | None] = queue.Queue()
        self.stop_event = threading.Event()
        self.t0 = 0.0
        self.threads: list[threading.Thread] = []
        self.model = model or ""
        self.input: tuple[str, list[int], str] | None = None
        self.output = ""

    def describe(self) -> None:
        """The model's first input and output from the server's metadata."""
        c = triton_http.InferenceServerClient(url=self.url, network_timeout=self.timeout)
        try:
            if not self.model:
                self.model = str(c.get_model_repository_index()[0]["name"])
            md = c.get_model_metadata(self.model)
            cfg = c.get_model_config(self.model)
        finally:
            c.close()
        inp = md["inputs"][0]
        dims = [1 if int(d) < 0 else int(d) for d in inp["shape"]]
        if int(cfg.get("max_batch_size", 0)) > 0 and len(dims) == len(cfg["input"][0]["dims"]):
            dims = [1, *dims]
        self.input = (inp["name"], dims, inp["datatype"])
        self.output = md["outputs"][0]["name"]

    def wait_served(self, timeout: float = 90.0) -> None:
        """Wait until the gateway routes to a ready pod (its view lags readiness a little)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.describe()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)  # polling interval while waiting on the gateway

    def _worker(self) -> None:
        c = triton_http.InferenceServerClient(
            url=self.url, connection_timeout=self.timeout, network_timeout=self.timeout
        )
        assert self.input is not None
        name, dims, dtype = self.input
        data = np.ones(dims, dtype=DTYPES.get(dtype, np.float32))
        while True:
            at = self.todo.get()
            if at is None:
                break
            delay = self.t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # open loop: send at the scheduled time
            inp = triton_http.InferInput(name, dims, dtype)
            inp.set_data_from_numpy(data)
            error, version = "", None
            try:
                r = c.infer(self.model, [inp])
                out = r.as_numpy(self.output)
                if out is not None and out.dtype.kind in "iu":
                    version = int(out.flat[0])
            except Exception as e:  # every failure is counted, by its kind
                status = getattr(e, "status", lambda: None)()
                error = str(status or type(e).__name__)
                c.close()
                c = triton_http.InferenceServerClient(
                    url=self.url, connection_timeout=self.timeout, network_timeout=self.timeout
                )
            done = time.monotonic()
            with self.lock:
                self.results.append(Result(at, (done - self.t0 - at) * 1000, error, version))
        c.close()

    def _schedule(self, duration: float) -> None:
        t = 0.0
        while t < duration and not self.stop_event.is_set():
            r = max(0.01, self.rate(t))
            t += self.rng.expovariate(r)
            if t >= duration:
                break
            # stay a little ahead of time, not the whole run
            ahead = self.t0 + t - time.monotonic() - 0.5
            if ahead > 0 and self.stop_event.wait(ahead):  # pacing, not synchronisation
                break
            self.todo.put(t)
        for _ in self.threads:
            self.todo.put(None)

    def start(self, duration: float) -> Load:
        if self.input is None:
            self.describe()
        self.t0 = time.monotonic()
        self.threads = [
            threading.Thread(target=self._worker, daemon=True, name=f"load-{i}")
            for i in range(self.workers)
        ]
        for t in self.threads:
            t.start()
        self.scheduler = threading.Thread(
            target=self._schedule, args=(duration,), daemon=True, name="load-schedule"
        )
        self.scheduler.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.join()

    def join(self, timeout: float | None = None) -> None:
        self.scheduler.join(timeout)
        for t in self.threads:
            t.join(timeout)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def window(self, since: float, until: float) -> list[Result]:
        with self.lock:
            return [r for r in self.results if since <= r.start + r.latency_ms / 1000 < until]

    def interval(self, since: float, until: float) -> Interval:
        rs = self.window(since, until)
        ok = [r.latency_ms for r in rs if not r.error]
        span = max(1e-9, until - since)
        versions = Counter(str(r.version) for r in rs if r.version is not None)
        return Interval(
            t=until,
            rate=len(rs) / span,
            target_rate=self.rate((since + until) / 2),
            errors=sum(1 for r in rs if r.error),
            p50=percentile(ok, 0.5),
            p95=percentile(ok, 0.95),
            p99=percentile(ok, 0.99),
            versions=dict(sorted(versions.items())),
        )

    def summary(self) -> dict[str, Any]:
        with self.lock:
            rs = list(self.results)
        ok = [r.latency_ms for r in rs if not r.error]
        span = max((r.start + r.latency_ms / 1000 for r in rs), default=0.0)
        return {
            "requests": len(rs),
            "errors": sum(1 for r in rs if r.error),
            "error_kinds": dict(Counter(r.error for r in rs if r.error)),
            "rate": len(rs) / span if span else 0.0,
            "p50_ms": percentile(ok, 0.5),
            "p95_ms": percentile(ok, 0.95),
            "p99_ms": percentile(ok, 0.99),
            "versions": dict(sorted(Counter(str(r.version) for r in rs if r.version).items())),
        }


def fmt_interval(iv: Interval) -> str:
    share = ""
    total = sum(iv.versions.values())
    if total and len(iv.versions) > 1:
        share = "  versions " + " ".join(
            f"v{v}:{100 * n / total:.0f}%" for v, n in iv.versions.items()
        )
    return (
        f"t={iv.t:5.0f}s  rate {iv.rate:6.1f}/s (target {iv.target_rate:5.1f})  "
        f"errors {iv.errors:3d}  p50 {iv.p50:6.1f}  p95 {iv.p95:6.1f}  p99 {iv.p99:6.1f} ms"
        f"{share}"
    )


def gateway_url() -> str:
    st = json.loads((REPO / ".cluster" / "state.json").read_text())
    return f"127.0.0.1:{st['ports']['gateway']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("isvc", help="namespace/name of the InferenceService")
    ap.add_argument("--rate", type=float, default=20.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--shape", default="steady", choices=["steady", "ramp", "burst"])
    ap.add_argument("--model", default=None, help="model name (default: the served one)")
    ap.add_argument("--gateway", default=None, help="host:port (default: the local cluster's)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between reports")
    ap.add_argument("--workers", type=int, default=48)
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args(argv)
    ns, _, name = args.isvc.rpartition("/")
    ns = ns or "default"
    url = f"{args.gateway or gateway_url()}/{ns}/{name}"
    load = Load(url, args.model, shape_fn(args.shape, args.rate, args.duration), args.workers)
    try:
        load.describe()
    except Exception as e:
        print(f"cannot reach {ns}/{name} through the gateway ({url}): {e}", file=sys.stderr)
        return 1
    print(
        f"load on {ns}/{name} ({load.model}) via http://{url}: {args.shape} "
        f"{args.rate:g}/s for {args.duration:g}s",
        flush=True,
    )
    load.start(args.duration)
    series = []
    last = 0.0
    try:
        while load.scheduler.is_alive() or any(t.is_alive() for t in load.threads):
            time.sleep(min(args.every, 1.0))  # the report's clock
            now = load.elapsed()
            if now - last >= args.every:
                iv = load.interval(last, now)
                series.append(iv.__dict__)
                print(fmt_interval(iv), flush=True)
                last = now
    except KeyboardInterrupt:
        load.stop()
    s = load.summary()
    print(
        f"summary: {s['requests']} requests, {s['rate']:.1f}/s, errors {s['errors']} "
        f"{s['error_kinds'] or ''}, p50 {s['p50_ms']:.1f} ms, p95 {s['p95_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms, versions {s['versions']}"
    )
    if args.json:
        args.json.write_text(json.dumps({"summary": s, "series": series}, indent=1))
    return 0 if s["errors"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
