#!/usr/bin/env python3
"""The main job, narrated: Sluice closing the loop on real tritonservers.

    python hack/demo.py up     # data-plane cluster, Prometheus, operator; the scenario
    python hack/demo.py down   # stop the operator and the cluster, by PID

1. The local cluster with its data plane (hack/localcluster.py --dataplane):
   Prometheus, a kubelet that runs each Sluice pod's tritonserver, the gateway.
2. The operator in the background (PID in .cluster/operator.pid, log in
   .cluster/logs/operator-demo.log) with the cluster's Prometheus.
3. A latency-SLO InferenceService (model ``demo``, 40 ms per request, one at a time)
   under rising load: Sluice scales it up and its p99 comes back under the target.
4. A fixed A/B split (80/20 between versions 1 and 2) measured at the gateway.
5. A timeline PNG (rate, p99 against the target, replicas over time).

The cluster stays up afterwards; the commands to explore it are printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import localcluster

REPO = localcluster.REPO
NS = "default"
TARGET_MS = 250.0


def pid_file(c: localcluster.Cluster) -> Path:
    return c.root / "operator.pid"


def operator_running(c: localcluster.Cluster) -> int | None:
    try:
        pid = int(pid_file(c).read_text())
    except (OSError, ValueError):
        return None
    return pid if localcluster.Cluster.alive(pid) else None


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def kget(c: localcluster.Cluster, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json"))


def isvc(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "model": {"name": "demo", "repository": "s3://models/triton", "version": 1},
            "gpu": {"count": 0},
            "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
            **spec,
        },
    }


def events(c: localcluster.Cluster, name: str, seen: set[str]) -> list[str]:
    out = []
    for e in kget(c, "events", "-n", NS, "--field-selector", f"involvedObject.name={name}")[
        "items"
    ]:
        uid = e["metadata"]["uid"] + str(e.get("count"))
        if uid not in seen and e.get("source", {}).get("component") != "sluice-dataplane":
            seen.add(uid)
            out.append(f"   event {e['reason']}: {e['message']}")
    return out


def replicas(c: localcluster.Cluster, name: str) -> int:
    d = kget(c, "deployment", f"{name}-main", "-n", NS)
    return int(d["status"].get("readyReplicas") or 0)


def up() -> int:
    t_start = time.monotonic()
    c = localcluster.Cluster(dataplane=True)
    say("Starting the local cluster, its data plane (Prometheus, kubelet, gateway)")
    kubeconfig = c.up()
    c.install_crds()
    urls = c.urls()
    if not operator_running(c):
        log = open(c.logs / "operator-demo.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sluice.cli",
                "run",
                "--standalone",
                "--health-port",
                "0",
                "--metrics-port",
                "0",
                "--control-interval",
                "2",
                "--prometheus-url",
                urls["prometheus"],
                "--rate-window",
                "10s",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        pid_file(c).write_text(str(proc.pid))
    print(
        f"   operator pid {operator_running(c)}, Prometheus {urls['prometheus']}, "
        f"gateway {urls['gateway']}"
    )

    sys.path.insert(0, str(REPO / "hack"))
    import load as load_mod

    say(f"1. Latency SLO: p99 under {TARGET_MS:.0f} ms, 1..3 replicas, 40 ms per request")
    c.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            isvc(
                "slo",
                replicas=1,
                scaling={
                    "mode": "Auto",
                    "minReplicas": 1,
                    "maxReplicas": 3,
                    "target": {"metric": "p99LatencyMs", "value": TARGET_MS},
                    "warmupSeconds": 30,
                },
            )
        ),
    )
    c.kubectl("wait", "--for=condition=Ready", "--timeout=180s", "inferenceservices.sluice.dev/slo")
    print("   Ready: one pod runs a real tritonserver; its probes made it Ready")
    url = urls["gateway"].removeprefix("http://") + f"/{NS}/slo"
    duration = 150.0
    load = load_mod.Load(url, "demo", load_mod.shape_fn("ramp", 36.0, 60.0), workers=32)
    load.wait_served()
    load.start(duration)
    timeline: list[dict[str, float]] = []
    seen: set[str] = set()
    last = 0.0
    scaled_at = None
    while load.elapsed() < duration:
        time.sleep(5)  # the narration's clock
        now = load.elapsed()
        iv = load.interval(max(0.0, now - 10), now)
        r = replicas(c, "slo")
        timeline.append({"t": now, "rate": iv.rate, "p99": iv.p99, "replicas": r})
        print(
            f"   t={now:4.0f}s  load {iv.rate:5.1f}/s  p99 {iv.p99:7.1f} ms  "
            f"ready replicas {r}  errors {iv.errors}"
        )
        for line in events(c, "slo", seen):
            print(line)
        if r > 1 and scaled_at is None:
            scaled_at = now
        last = now
        if scaled_at and now - scaled_at > 60 and iv.p99 < TARGET_MS:
            break
    load.stop()
    s1 = load.summary()
    st = kget(c, "inferenceservices.sluice.dev", "slo", "-n", NS)["status"]
    print(f"   operator's decision: {json.dumps(st.get('scaling'))[:600]}")
    final = load.interval(max(0.0, last - 10), last)
    peak = max((p["p99"] for p in timeline if p["p99"] == p["p99"]), default=0)
    print(
        f"   summary: {s1['requests']} requests, {s1['errors']} errors; peak p99 "
        f"{peak:.0f} ms -> {final.p99:.0f} ms with {replicas(c, 'slo')} replicas"
    )

    say("2. A/B split: 80% to version 1, 20% to version 2, through the HTTPRoute")
    c.kubectl(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            isvc(
                "ab",
                replicas=1,
                variants=[{"name": "b", "weight": 20, "model": {"version": 2}}],
                router={"gateway": {"name": "local"}},
            )
        ),
    )
    c.kubectl("wait", "--for=condition=Ready", "--timeout=180s", "inferenceservices.sluice.dev/ab")
    ab = load_mod.Load(
        urls["gateway"].removeprefix("http://") + f"/{NS}/ab", "demo", lambda t: 15.0, workers=16
    )
    ab.wait_served()
    ab.start(30)
    ab.join()
    s2 = ab.summary()
    total = sum(s2["versions"].values()) or 1
    with urllib.request.urlopen(urls["gateway"] + "/_gateway/stats", timeout=5) as r:
        stats = [x for x in json.loads(r.read()) if x["route"] == "ab"]
    print(
        "   measured: "
        + ", ".join(f"version {v}: {100 * n / total:.1f}%" for v, n in s2["versions"].items())
    )
    print(f"   gateway counters: {stats}")

    png = c.root / "demo-timeline.png"
    plot(timeline, png)
    say(f"Timeline: {png}")
    print(
        f"\nDone in {time.monotonic() - t_start:.0f}s. The cluster keeps running:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  kubectl get inferenceservices; kubectl get pods -o wide\n"
        f"  make load ISVC=default/slo RATE=30 DURATION=60\n"
        f"  Prometheus: {urls['prometheus']}\n"
        f"  make demo-down   # stops everything"
    )
    return 0


def plot(timeline: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p["t"] for p in timeline]
    fig, (a, b, d) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    a.plot(t, [p["rate"] for p in timeline])
    a.set_ylabel("requests/s")
    b.plot(t, [p["p99"] for p in timeline], label="p99 (client)")
    b.axhline(TARGET_MS, color="r", linestyle="--", label="target")
    b.set_yscale("log")
    b.set_ylabel("ms")
    b.legend()
    d.step(t, [p["replicas"] for p in timeline], where="post")
    d.set_ylabel("ready replicas")
    d.set_xlabel("seconds")
    fig.suptitle("Sluice on the local data plane: latency-SLO scale-up")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def down() -> int:
    c = localcluster.Cluster()
    pid = operator_running(c)
    if pid:
        localcluster.stop_pid(pid, "operator")
    c.down()
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    sys.exit({"up": up, "down": down}[cmd]())
