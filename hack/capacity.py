#!/usr/bin/env python3
"""How many data-plane pods this machine holds (the README's numbers).

    .venv/bin/python hack/capacity.py --steps 4,8,16,24,32 [--per-pod-rate 2]

Against the running local cluster with its data plane and an operator (``make demo``
or ``make cluster-up`` + ``make run``): one InferenceService ``capacity`` of the
demo model (version 1, 40 ms a request) with ``spec.replicas`` raised step by
step. At each step it measures how long the new pods take to be Ready, their
memory (RSS and PSS of each pod's processes: tritonserver and its Python stub),
the machine's load, and the latency of a load of ``--per-pod-rate`` requests per
second per pod through the gateway. It stops at the first step whose pods are not
all Ready within ``--ready-timeout`` or whose load fails requests, then deletes the
InferenceService. Results: printed, and as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo
import load as load_mod
import localcluster

NS, NAME = demo.NS, "capacity"  # demo.isvc() places it in the demo namespace


def pod_memory(pods_dir: Path) -> dict[str, dict[str, float]]:
    """Per pod directory: RSS and PSS (MB) summed over the processes running in it."""
    out: dict[str, dict[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(d / "cwd"))
        except OSError:
            continue
        if pods_dir not in cwd.parents:
            continue
        pod = cwd.relative_to(pods_dir).parts[0]
        try:
            fields = dict(
                line.split(":", 1) for line in (d / "smaps_rollup").read_text().splitlines()[1:]
            )
        except (OSError, ValueError):
            continue
        m = out.setdefault(pod, {"rss": 0.0, "pss": 0.0, "procs": 0})
        m["rss"] += int(fields["Rss"].split()[0]) / 1024
        m["pss"] += int(fields["Pss"].split()[0]) / 1024
        m["procs"] += 1
    return out


def cpu_seconds(pods_dir: Path) -> float:
    """CPU time (user + system) of every process in the pods' directories."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if pods_dir not in Path(os.readlink(d / "cwd")).parents:
                continue
            f = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) + int(f[12])) / tick
    return total


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ready_pods(c: localcluster.Cluster) -> int:
    d = json.loads(c.kubectl("get", "deployment", f"{NAME}-main", "-n", NS, "-o", "json"))
    return int(d["status"].get("readyReplicas") or 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="4,8,16,24,32")
    ap.add_argument("--per-pod-rate", type=float, default=2.0)
    ap.add_argument("--load-seconds", type=float, default=30.0)
    ap.add_argument("--ready-timeout", type=float, default=300.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    c = localcluster.Cluster(dataplane=True)
    if not c.healthy():
        print("no local cluster: make demo (or make cluster-up and make run) first")
        return 1
    gw = c.urls()["gateway"].removeprefix("http://")
    pods_dir = c.root / "dataplane" / "pods"
    # The demo's InferenceService, with the smallest requests that schedule.
    manifest = demo.isvc(NAME, triton={"resources": {"cpu": "10m", "memory": "64Mi"}}, replicas=1)
    rows: list[dict[str, Any]] = []
    others = len(pod_memory(pods_dir))
    try:
        for n in (int(x) for x in args.steps.split(",")):
            manifest["spec"]["replicas"] = n
            before = ready_pods(c) if rows else 0
            cpu0 = cpu_seconds(pods_dir)
            t0 = time.monotonic()
            c.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
            ok = True
            while (r := _try_ready(c)) < n:
                if time.monotonic() - t0 > args.ready_timeout:
                    ok = False
                    break
                time.sleep(1.0)  # polling period of a wait on readiness
            took = time.monotonic() - t0
            startup_cpu = cpu_seconds(pods_dir) - cpu0
            mem = pod_memory(pods_dir)
            ours = list(mem.values())
            load1 = os.getloadavg()[0]
            row: dict[str, Any] = {
                "pods": n,
                "pods_on_machine": len(mem),
                "ready": r,
                "seconds_to_ready": round(took, 1),
                "new_pods": n - before,
                "startup_cpu_s_per_pod": round(startup_cpu / max(1, n - before), 2),
                "rss_mb_per_pod": round(sum(m["rss"] for m in ours) / max(1, len(ours)), 1),
                "pss_mb_per_pod": round(sum(m["pss"] for m in ours) / max(1, len(ours)), 1),
                "mem_available_mb": round(mem_available_mb()),
                "loadavg_1m": round(load1, 2),
            }
            if ok:
                rate = args.per_pod_rate * n
                ld = load_mod.Load(f"{gw}/{NS}/{NAME}", "demo", lambda t, r=rate: r, workers=32)
                ld.wait_served()
                cpu1 = cpu_seconds(pods_dir)
                ld.start(args.load_seconds)
                ld.join()
                s = ld.summary()
                row.update(
                    rate=round(s["rate"], 1),
                    target_rate=rate,
                    errors=s["errors"],
                    error_kinds=s["error_kinds"],
                    p50_ms=round(s["p50_ms"], 1),
                    p99_ms=round(s["p99_ms"], 1),
                    pods_cpu_per_s=round((cpu_seconds(pods_dir) - cpu1) / args.load_seconds, 2),
                )
            rows.append(row)
            print(json.dumps(row), flush=True)
            if not ok or row.get("errors"):
                break
    finally:
        c.kubectl("delete", "inferenceservice", NAME, "-n", NS, "--wait=false")
    if args.json:
        args.json.write_text(json.dumps({"other_pods": others, "steps": rows}, indent=1))
    return 0


def _try_ready(c: localcluster.Cluster) -> int:
    try:
        return ready_pods(c)
    except RuntimeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
