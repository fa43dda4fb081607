"""Sluice at N = 100, 300, 1,000 InferenceServices against a plain client, in one run.

For each N, on a local cluster of its own (``.cluster-bench``; extra kwok nodes
with room for 1,000 pods each, tainted so that only the benchmark's pods land
there):

- **Baseline**: a plain client applies what ``sluice render`` prints for the N
  services (server-side apply, 8 threads), then the change storm (every
  Deployment 1 -> 2 replicas), then deletes the Deployments and Services.
- **Sluice**: the real operator (``sluice run``, control interval 15 s)
  watches a namespace; the same client applies N InferenceServices, lets the
  fleet idle, applies the storm (spec.replicas 1 -> 2 on every service), and
  deletes the InferenceServices (the garbage collector removes the children).

Measured: create and storm times (until every Deployment is rolled out and,
for Sluice, every InferenceService reports Ready for its generation), delete
times (until no InferenceService, Deployment or Service is left, and until no
pod is left either), their ratio to the baseline, the operator's CPU
(utime+stime of the process) and peak RSS (VmHWM), its API requests by verb
and resource during the idle window, and the control cycle's real
start-to-start interval (``sluice_control_cycle_interval_seconds``) at idle
and in the storm.

Idle requests are counted twice: by the apiserver's audit log (the bench
cluster's kube-apiserver writes one; requests told apart by user agent,
``sluice/*`` and kopf's ``kopf/*`` being the operator's) and inside the operator
(``sluice_api_requests_total``); the apiserver's ``apiserver_request_total``
delta over the same window, all clients together, is reported beside them.

Environment: ``SLUICE_BENCH_SCALE_N`` (default ``100,300,1000``),
``SLUICE_BENCH_IDLE_SECONDS`` (default 60; 300 for N >= 1000),
``SLUICE_BENCH_IDLE_HOLD_SECONDS`` (default 0): after the idle window at the
largest N, keep the fleet idle this much longer and sample the operator's RSS
every minute (``idle_hold`` in the results), e.g. 3600 for an hour.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from sluice.reconcile import cache as c
from sluice.reconcile.kube import USER_AGENT, Kube, load_config
from tests.support.kube import Kubectl, localcluster_module
from tests.support.operator import install_crds
from tests.support.sluice_run import start, stop
from tests.support.triton import free_port

REPO = Path(__file__).resolve().parents[2]
INTERVAL = 15.0
THREADS = 8
NODES = 4
BENCH_LABEL = "sluice.dev/bench"
TICK = os.sysconf("SC_CLK_TCK")
BENCH_AGENT = "sluice-bench"
OPERATOR_AGENTS = (USER_AGENT.split("/")[0] + "/", "kopf/")
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""


def bench_cluster() -> Any:
    """The local cluster of hack/localcluster.py, in a root of its own, with an
    audit log (one line per request, at its end: who, verb, resource)."""
    lc = localcluster_module()

    class BenchCluster(lc.Cluster):  # type: ignore[misc,name-defined]
        def _spawn(
            self, state: dict, name: str, args: list[str], binary: str | None = None
        ) -> None:
            if name == "kube-apiserver":
                policy = self.root / "audit-policy.yaml"
                policy.write_text(AUDIT_POLICY)
                args = [
                    *args,
                    f"--audit-policy-file={policy}",
                    f"--audit-log-path={self.audit_log}",
                    "--audit-log-maxsize=0",
                ]
            super()._spawn(state, name, args, binary)

        @property
        def audit_log(self) -> Path:
            return Path(self.logs) / "audit.log"

    return BenchCluster(root=REPO / ".cluster-bench")


class Audit:
    """Requests in the audit log between two points, by user agent, verb and resource."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def mark(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def between(self, start: int, end: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read(max(0, end - start))
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            agent = str(ev.get("userAgent") or "")
            who = (
                "operator"
                if agent.startswith(OPERATOR_AGENTS)
                else "bench"
                if agent.startswith(BENCH_AGENT)
                else agent.split("/")[0] or "?"
            )
            ref = ev.get("objectRef") or {}
            res = ref.get("resource") or "nonresource"
            if ref.get("subresource"):
                res += "/" + ref["subresource"]
            key = f"{ev.get('verb')} {res}"
            out.setdefault(who, {})
            out[who][key] = out[who].get(key, 0) + 1
        return out


def isvc(ns: str, i: int, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": f"s{i:04d}", "namespace": ns},
        "spec": {
            "model": {"name": "m", "repository": "s3://bench/models", "version": 1},
            "triton": {"resources": {"cpu": "100m", "memory": "128Mi"}},
            "gpu": {"count": 0},
            "replicas": replicas,
            "podTemplate": {
                "nodeSelector": {BENCH_LABEL: "scale"},
                "tolerations": [
                    {
                        "key": BENCH_LABEL,
                        "operator": "Equal",
                        "value": "scale",
                        "effect": "NoSchedule",
                    }
                ],
            },
        },
    }


def rendered(ns: str, n: int, replicas: int) -> list[dict[str, Any]]:
    """What ``sluice render`` prints for the N services (the CLI, as a user would run it)."""
    stream = yaml.safe_dump_all([isvc(ns, i, replicas) for i in range(n)])
    out = subprocess.run(
        [sys.executable, "-m", "sluice.cli", "render", "-f", "-", "-n", ns],
        input=stream,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        d for d in yaml.load_all(out, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d
    ]


class Client:
    """The plain client: server-side apply and delete, 8 threads, as field manager bench."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def apply_all(self, objs: Iterable[dict[str, Any]]) -> None:
        def one(o: dict[str, Any]) -> None:
            md = o["metadata"]
            path = self.kube.path(o["apiVersion"], o["kind"], md["namespace"], md["name"])
            for attempt in range(5):
                try:
                    self.kube.call_json(
                        "PATCH",
                        path,
                        query=[("fieldManager", "bench"), ("force", "true")],
                        body=json.dumps(o),
                        content_type="application/apply-patch+yaml",
                    )
                    return
                except Exception:
                    if attempt == 4:
                        raise
                    time.sleep(1 + attempt)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(one, objs))

    def delete_all(self, objs: Iterable[tuple[str, str, str, str]]) -> None:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda k: self.kube.delete(*k), objs))


class Watch:
    """The benchmark's own view of one namespace, from watches (cheap to poll)."""

    def __init__(self, kube: Kube, ns: str) -> None:
        kinds = [c.KINDS[0], c.KINDS[1], c.KINDS[2], c.KINDS[-1]]
        self.cache = c.Cache(kube, [ns], lambda *_: None, kinds=kinds)
        self.cache.start()
        assert self.cache.wait_synced(60)
        self.ns = ns

    def items(self, kind: c.Kind) -> list[dict[str, Any]]:
        return self.cache.list(kind.api_version, kind.kind, self.ns, {})

    def deployments_done(self, replicas: int) -> int:
        n = 0
        for d in self.items(c.KINDS[1]):
            st, md = d.get("status") or {}, d["metadata"]
            if (
                d["spec"].get("replicas") == replicas
                and st.get("readyReplicas") == replicas
                and st.get("updatedReplicas") == replicas
                and st.get("replicas") == replicas
                and int(st.get("observedGeneration") or 0) >= int(md.get("generation") or 0)
            ):
                n += 1
        return n

    def services_ready(self, replicas: int) -> int:
        n = 0
        for o in self.items(c.KINDS[0]):
            st = o.get("status") or {}
            ready = any(
                x.get("type") == "Ready" and x.get("status") == "True"
                for x in st.get("conditions") or []
            )
            if (
                ready
                and st.get("observedGeneration") == o["metadata"].get("generation")
                and st.get("replicas") == replicas
            ):
                n += 1
        return n

    def owned_left(self) -> int:
        """InferenceServices, Deployments and Services not yet deleted."""
        return sum(len(self.items(k)) for k in (c.KINDS[0], c.KINDS[1], c.KINDS[2]))

    def left(self) -> int:
        """All of the above and the pods."""
        return self.owned_left() + len(self.items(c.KINDS[-1]))

    def close(self) -> None:
        self.cache.stop()


def wait(cond: Callable[[], bool], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - t0


class Proc:
    """CPU and memory of the operator process, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def mem(self) -> dict[str, float]:
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024
        return out


def metrics(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return _parse(r.read().decode())


def _parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = out.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return out


def apiserver_requests(kubectl: Kubectl) -> dict[str, float]:
    text = kubectl.run("get", "--raw", "/metrics").stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            verb = re.search(r'verb="([A-Z]+)"', line)
            if verb:
                out[verb.group(1)] = out.get(verb.group(1), 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def requests_by(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """sluice_api_requests_total deltas keyed 'verb resource'."""
    out: dict[str, float] = {}
    for k, v in after.items():
        if not k.startswith("sluice_api_requests_total{"):
            continue
        d = v - before.get(k, 0.0)
        if d:
            verb = re.search(r'verb="([^"]+)"', k)
            res = re.search(r'resource="([^"]+)"', k)
            out[f"{verb.group(1) if verb else '?'} {res.group(1) if res else '?'}"] = d
    return out


def cycles(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Control cycle start-to-start intervals between two scrapes: count, mean, share
    within 1.2x the configured interval, and the largest bucket bound reached."""
    name = "sluice_control_cycle_interval_seconds"
    count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
    total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
    buckets = {}
    for k, v in after.items():
        m = re.match(rf'{name}_bucket\{{le="([^"]+)"\}}', k)
        if m:
            buckets[float(m.group(1))] = v - before.get(k, 0.0)
    within = buckets.get(INTERVAL * 1.2, 0.0)
    upper = min((le for le, v in buckets.items() if v >= count), default=float("inf"))
    return {
        "count": count,
        "mean_s": total / count if count else None,
        "within_1_2x": within / count if count else None,
        "max_bucket_s": upper if count else None,
    }


@contextmanager
def bench_nodes(kubectl: Kubectl) -> Iterator[None]:
    lc = localcluster_module()
    names = [f"bench-scale-{i}" for i in range(NODES)]
    for name in names:
        node = lc.node(name, 0, None)
        node["metadata"]["labels"][BENCH_LABEL] = "scale"
        cap = {"cpu": "1000", "memory": "4Ti", "pods": "1000"}
        node["status"] = {"capacity": cap, "allocatable": cap}
        node["spec"]["taints"] = [{"key": BENCH_LABEL, "value": "scale", "effect": "NoSchedule"}]
        kubectl.apply(node)
    try:
        wait(
            lambda: all(
                any(
                    x["type"] == "Ready" and x["status"] == "True"
                    for x in (kubectl.get("node", n) or {}).get("status", {}).get("conditions", [])
                )
                for n in names
            ),
            120,
            "bench nodes Ready",
        )
        yield
    finally:
        kubectl.run("delete", "node", *names, "--wait=false", check=False)


def new_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = f"{prefix}-{int(time.time() * 1000) % 10**8}"
    kubectl.run("create", "namespace", name)
    wait(lambda: bool(kubectl.get("serviceaccount", "default", "-n", name)), 60, "default SA")
    return name


def baseline(kubectl: Kubectl, kube: Kube, n: int, timeout: float) -> dict[str, Any]:
    ns = new_namespace(kubectl, "base")
    client, watch = Client(kube), Watch(kube, ns)
    try:
        objs = rendered(ns, n, 1)
        t0 = time.monotonic()
        client.apply_all(objs)
        applied = time.monotonic() - t0
        create = applied + wait(lambda: watch.deployments_done(1) >= n, timeout, "baseline create")
        storm_objs = [o for o in rendered(ns, n, 2) if o["kind"] == "Deployment"]
        t0 = time.monotonic()
        client.apply_all(storm_objs)
        storm = time.monotonic() - t0
        storm += wait(lambda: watch.deployments_done(2) >= n, timeout, "baseline storm")
        out = {"objects": len(objs), "create_s": create, "storm_s": storm}
        keys = [(o["apiVersion"], o["kind"], ns, o["metadata"]["name"]) for o in objs]
        out |= delete(lambda: client.delete_all(keys), watch, timeout)
        return out
    finally:
        watch.close()
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def delete(send: Callable[[], None], watch: Watch, timeout: float) -> dict[str, Any]:
    """Delete, timed until the owned objects are gone and until the pods are too
    (the garbage collector's pace: ReplicaSets and pods after their owners)."""
    t0 = time.monotonic()
    send()
    wait(lambda: watch.owned_left() == 0, timeout, "delete")
    owned = time.monotonic() - t0
    wait(lambda: watch.left() == 0, 2 * timeout, "delete: pods")
    return {"delete_owned_s": owned, "delete_s": time.monotonic() - t0}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def with_sluice(
    kubectl: Kubectl,
    kube: Kube,
    kubeconfig: Path,
    n: int,
    idle: float,
    timeout: float,
    audit: Audit,
    hold: float = 0.0,
    save: Callable[[dict[str, Any]], None] = lambda _: None,
) -> dict[str, Any]:
    """The Sluice phases; ``save`` sees the results so far after each phase."""
    ns = new_namespace(kubectl, "sluice")
    port = free_port()
    log = REPO / ".cluster-bench" / "logs" / f"bench-scale-{n}.log"
    args = ["--standalone", "--health-port", "0", "--metrics-port", str(port)]
    args += ["--control-interval", str(INTERVAL), "--log-level", "WARNING", "-n", ns]
    proc = start(kubeconfig, args, log)
    client, watch = Client(kube), Watch(kube, ns)
    p = Proc(proc.pid)
    rss: list[float] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(1.0):
            try:
                rss.append(p.mem()["VmRSS"])
            except (OSError, KeyError):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        wait(lambda: _up(port), 60, "operator metrics")
        sampler.start()
        out: dict[str, Any] = {"rss_start_mb": p.mem()["VmRSS"]}

        cpu0 = p.cpu()
        t0 = time.monotonic()
        client.apply_all(isvc(ns, i, 1) for i in range(n))
        create = (
            time.monotonic()
            - t0
            + wait(
                lambda: watch.services_ready(1) >= n and watch.deployments_done(1) >= n,
                timeout,
                "sluice create",
            )
        )
        out |= {
            "create_s": create,
            "create_cpu_cores": (p.cpu() - cpu0) / create,
            "rss_after_create_mb": p.mem()["VmRSS"],
            "load_after_create": load(),
        }
        save(out)

        time.sleep(2 * INTERVAL)  # settle: rollouts' last status writes
        m0, a0, cpu0, mark0 = metrics(port), apiserver_requests(kubectl), p.cpu(), audit.mark()
        t0 = time.monotonic()
        time.sleep(idle)
        m1, a1, cpu1, mark1 = metrics(port), apiserver_requests(kubectl), p.cpu(), audit.mark()
        minutes = (time.monotonic() - t0) / 60
        by = requests_by(m0, m1)
        audited = audit.between(mark0, mark1)
        op = audited.get("operator", {})
        out["idle"] = {
            "seconds": idle,
            # The apiserver's audit log: the operator's requests (user agents sluice/*, kopf/*).
            "audit_requests_per_min_beyond_watches": _beyond_watches(op) / minutes,
            "audit_writes": _writes(op),
            "audit_by_verb_resource": op,
            "audit_other_clients_per_min": {
                who: sum(v.values()) / minutes for who, v in audited.items() if who != "operator"
            },
            # The operator's own count (sluice_api_requests_total).
            "requests_per_min": sum(by.values()) / minutes,
            "requests_per_min_beyond_watches": _beyond_watches(by) / minutes,
            "writes": _writes(by),
            "by_verb_resource": by,
            "apiserver_all_clients_per_min": {k: (a1[k] - a0.get(k, 0)) / minutes for k in a1},
            "cpu_cores": (cpu1 - cpu0) / (minutes * 60),
            "rss_mb": p.mem()["VmRSS"],
            "control_cycles": cycles(m0, m1),
            "load": load(),
        }
        save(out)
        if hold > 0:
            out["idle_hold"] = idle_hold(p, port, audit, hold, save, out)

        cpu0, m0 = p.cpu(), metrics(port)
        t0 = time.monotonic()
        client.apply_all(isvc(ns, i, 2) for i in range(n))
        storm = (
            time.monotonic()
            - t0
            + wait(
                lambda: watch.services_ready(2) >= n and watch.deployments_done(2) >= n,
                timeout,
                "sluice storm",
            )
        )
        m1 = metrics(port)
        out |= {
            "storm_s": storm,
            "storm_cpu_cores": (p.cpu() - cpu0) / storm,
            "storm_control_cycles": cycles(m0, m1),
            "storm_requests": requests_by(m0, m1),
            "rss_after_storm_mb": p.mem()["VmRSS"],
            "peak_rss_before_delete_mb": p.mem()["VmHWM"],
            "load_after_storm": load(),
        }
        save(out)

        out |= delete(
            lambda: kubectl.run(
                "delete", "inferenceservices.sluice.dev", "--all", "-n", ns, "--wait=false"
            ),
            watch,
            timeout,
        )
        m2 = metrics(port)
        out["run_control_cycles"] = cycles({}, m2)
        time.sleep(INTERVAL)
        mem = p.mem()
        out |= {
            "rss_after_delete_mb": mem["VmRSS"],
            "peak_rss_mb": mem["VmHWM"],
            "rss_samples_max_mb": max(rss) if rss else None,
            "cpu_total_s": p.cpu(),
        }
        return out
    finally:
        stop_sampling.set()
        watch.close()
        stop(proc)
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def _beyond_watches(by: dict[str, Any]) -> float:
    return float(sum(v for k, v in by.items() if not k.startswith("watch ")))


def _writes(by: dict[str, Any]) -> float:
    reads = ("get", "list", "watch")
    return float(sum(v for k, v in by.items() if k.split()[0] not in reads))


def idle_hold(
    p: Proc,
    port: int,
    audit: Audit,
    seconds: float,
    save: Callable[[dict[str, Any]], None],
    out: dict[str, Any],
) -> dict[str, Any]:
    """The fleet left idle ``seconds`` more: RSS, CPU and requests every minute."""
    hold: dict[str, Any] = {"seconds": seconds, "samples": []}
    out["idle_hold"] = hold
    t0, m0, mark0, cpu0 = time.monotonic(), metrics(port), audit.mark(), p.cpu()
    while (elapsed := time.monotonic() - t0) < seconds:
        time.sleep(min(60.0, seconds - elapsed))
        mem = p.mem()
        hold["samples"].append(
            {"t_s": round(time.monotonic() - t0), "rss_mb": mem["VmRSS"], "hwm_mb": mem["VmHWM"]}
        )
        save(out)
    m1, mark1 = metrics(port), audit.mark()
    minutes = (time.monotonic() - t0) / 60
    op = audit.between(mark0, mark1).get("operator", {})
    rss = [x["rss_mb"] for x in hold["samples"]]
    hold |= {
        "rss_first_mb": rss[0] if rss else None,
        "rss_last_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "growth_mb": rss[-1] - rss[0] if rss else None,
        "audit_requests_per_min_beyond_watches": _beyond_watches(op) / minutes,
        "audit_writes": _writes(op),
        "audit_by_verb_resource": op,
        "requests_by_verb_resource": requests_by(m0, m1),
        "cpu_cores": (p.cpu() - cpu0) / (minutes * 60),
        "control_cycles": cycles(m0, m1),
        "load": load(),
    }
    return hold


def _up(port: int) -> bool:
    try:
        metrics(port)
        return True
    except OSError:
        return False


def run(out: Path) -> dict[str, Any]:
    ns_ = [int(x) for x in os.environ.get("SLUICE_BENCH_SCALE_N", "100,300,1000").split(",")]
    idle_env = os.environ.get("SLUICE_BENCH_IDLE_SECONDS")
    hold = float(os.environ.get("SLUICE_BENCH_IDLE_HOLD_SECONDS") or 0)
    results: dict[str, Any] = {
        "interval_s": INTERVAL,
        "threads": THREADS,
        "request_counting": "the apiserver's audit log (the operator's user agents sluice/*, "
        "kopf/*), and in the operator (sluice_api_requests_total, every request of its "
        "Kubernetes client, by verb and resource); apiserver_request_total delta of all "
        "clients beside them",
        "machine": {"cpus": os.cpu_count(), "load_at_start": load()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [],
    }

    def write() -> None:
        (out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")

    cluster = bench_cluster()
    started = not cluster.healthy()
    kubeconfig = cluster.up()
    try:
        kubectl = Kubectl(kubeconfig)
        for attempt in range(3):  # kubectl wait can race a CRD that has no conditions yet
            try:
                install_crds(kubectl)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(2)
        api = load_config(str(kubeconfig))
        api.user_agent = BENCH_AGENT
        kube = Kube(api)
        audit = Audit(cluster.audit_log)
        with bench_nodes(kubectl):
            for n in ns_:
                idle = float(idle_env) if idle_env else (300.0 if n >= 1000 else 60.0)
                timeout = 120 + 2.0 * n
                t0 = time.monotonic()
                row: dict[str, Any] = {"n": n, "load_at_start": load()}
                results["runs"].append(row)
                try:
                    row["baseline"] = baseline(kubectl, kube, n, timeout)
                    write()

                    def save(sl: dict[str, Any], row: dict[str, Any] = row) -> None:
                        row["sluice"] = sl
                        write()

                    sl = with_sluice(
                        kubectl,
                        kube,
                        kubeconfig,
                        n,
                        idle,
                        timeout,
                        audit,
                        hold=hold if n == max(ns_) else 0.0,
                        save=save,
                    )
                    base = row["baseline"]
                    row |= {
                        "sluice": sl,
                        "create_ratio": sl["create_s"] / base["create_s"],
                        "storm_ratio": sl["storm_s"] / base["storm_s"],
                        "delete_owned_ratio": sl["delete_owned_s"] / base["delete_owned_s"],
                        "delete_ratio": sl["delete_s"] / base["delete_s"],
                    }
                    print(json.dumps(_summary(row)), flush=True)
                except Exception as e:  # keep what was measured, say what was not
                    row["error"] = f"{type(e).__name__}: {e}"
                    print(f"N={n}: {row['error']}", file=sys.stderr, flush=True)
                row["wall_s"] = time.monotonic() - t0
                row["load_at_end"] = load()
                write()
    finally:
        if started:
            cluster.down()
    results["machine"]["load_at_end"] = load()
    write()
    _plot(out, [r for r in results["runs"] if "create_ratio" in r])
    return results


def _summary(row: dict[str, Any]) -> dict[str, Any]:
    sl = row["sluice"]
    return {
        "n": row["n"],
        "create_ratio": round(row["create_ratio"], 2),
        "storm_ratio": round(row["storm_ratio"], 2),
        "delete_ratio": round(row["delete_ratio"], 2),
        "idle_req_per_min": round(sl["idle"]["audit_requests_per_min_beyond_watches"], 1),
        "idle_writes": sl["idle"]["audit_writes"],
        "peak_rss_mb": round(sl["peak_rss_mb"], 1),
        "cycle_mean_idle_s": sl["idle"]["control_cycles"]["mean_s"],
        "cycle_mean_storm_s": sl["storm_control_cycles"]["mean_s"],
    }


def _plot(out: Path, runs: list[dict[str, Any]]) -> None:
    if not runs:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in runs]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (
        ("create_ratio", "create"),
        ("storm_ratio", "storm"),
        ("delete_ratio", "delete"),
    ):
        a.plot(ns, [r[key] for r in runs], marker="o", label=label)
    a.axhline(1.3, color="grey", ls="--", lw=1, label="target 1.3x")
    a.set_xscale("log")
    a.set_xticks(ns, [str(n) for n in ns])
    a.set_xlabel("InferenceServices")
    a.set_ylabel("Sluice / plain client, time")
    a.set_title("Time to converge, ratio to baseline")
    a.grid(alpha=0.3)
    a.legend()
    b.plot(ns, [r["sluice"]["peak_rss_mb"] for r in runs], marker="o", label="peak RSS, MB")
    b.plot(
        ns,
        [r["sluice"]["idle"]["audit_requests_per_min_beyond_watches"] for r in runs],
        marker="s",
        label="idle API requests/min",
    )
    b.axhline(250, color="grey", ls="--", lw=1, label="RSS target 250 MB")
    b.axhline(60, color="grey", ls=":", lw=1, label="idle target 60/min")
    b.set_xscale("log")
    b.set_xticks(ns, [str(n) for n in ns])
    b.set_xlabel("InferenceServices")
    b.set_title("Operator memory and idle requests")
    b.grid(alpha=0.3)
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)
    plt.close(fig)


def main() -> int:
    out = REPO / "docs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    results = run(out)
    print(json.dumps([_summary(r) for r in results["runs"]], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
