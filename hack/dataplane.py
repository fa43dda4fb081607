#!/usr/bin/env python3
"""The local data plane: a kubelet for the local cluster's Sluice pods.

    .venv/bin/python hack/dataplane.py --kubeconfig K --models DIR --state-dir D \\
        --subnet 127.A.B --targets FILE

Started by ``hack/localcluster.py up`` (``make cluster-up``), stopped by PID with
``make cluster-down``. kwok plays the kubelet for every other pod; the kwok Stages
that localcluster writes leave pods labelled ``sluice.dev/inferenceservice`` to this
process, which runs their ``triton`` container for real:

* **Process.** The container's command, args and env exactly as rendered (the
  embedded launcher, ``python3 -c <launcher> tritonserver ...``), with only what a
  node supplies substituted: ``tritonserver`` becomes a wrapper for the
  nvidia-pytriton binary (its libraries and Python backend), the model repository
  resolves under ``--models`` (``s3://bucket/path`` -> ``MODELS/bucket/path``, the
  same for ``gs://`` and ``as://``; a ``pvc://claim/path`` mount -> ``MODELS/claim/path``),
  and the server listens on the pod's own IP: ``--http-address``, ``--grpc-address``
  and ``--metrics-address`` are appended. Ports stay as rendered.
* **Network.** Each pod's processes listen on an address of their own,
  ``127.A.B.C`` (``<subnet>.2`` .. ``<subnet>.254``), so the rendered ports stay as they
  are. The apiserver refuses loopback addresses in EndpointSlices ("may not be in the
  loopback range"), so the pod IP published in its status is the same address with the
  first octet 10 (``10.A.B.C``, outside the Service range 10.96/16 and kwok's
  10.244/16); :func:`host_address` maps it back, and the gateway, the only consumer of
  EndpointSlices here, connects to ``127.A.B.C``. Nothing is ever sent to 10/8.
* **Lifecycle.** Startup, readiness and liveness probes run as rendered (period,
  timeout, thresholds, initial delay) against the process and drive the pod's
  ``Ready`` and ``ContainersReady`` conditions and container statuses. A failed
  liveness (or startup) probe restarts the container; an exited container restarts
  with back-off (restartPolicy Always). Deletion runs the ``preStop`` hook, then
  SIGTERM, then SIGKILL when ``terminationGracePeriodSeconds`` (the pod's deletion
  grace) runs out, and then removes the pod object, as a kubelet does; deletions are
  watched, so the termination starts at once while the gateway still has to learn of
  it from the EndpointSlice (the gap the preStop drain covers).
* **Metrics.** The targets file (Prometheus ``file_sd``) lists every running pod's
  metrics port with the labels the rendered PodMonitor's relabelings give
  (``sluice.render.podmonitor``): namespace, pod, inferenceservice, variant,
  model_version.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubernetes import client as k8s  # noqa: E402
from kubernetes import config as k8s_config  # noqa: E402
from tests.support.triton import find_install, prepare_backends, triton_env  # noqa: E402

from sluice.render import podmonitor  # noqa: E402
from sluice.render.plan import Meta  # noqa: E402

LABEL_ISVC = "sluice.dev/inferenceservice"
CONTAINER = "triton"
POLL_SECONDS = 0.5
LOG = logging.getLogger("dataplane")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ----------------------------------------------------------------- substitution


def resolve_repository(value: str, mounts: dict[str, str], models: Path) -> str:
    """The local directory standing in for a rendered ``--model-repository`` value."""
    for scheme in ("s3://", "gs://", "as://"):
        if value.startswith(scheme):
            rest = value[len(scheme) :]
            m = re.match(r"https?://[^/]+/(.*)", rest)  # s3://http://host:port/bucket/path
            if m:
                rest = m.group(1)
            return str(models / rest.strip("/"))
    for mount, claim in mounts.items():
        if value == mount or value.startswith(mount + "/"):
            return str(models / claim / value[len(mount) :].strip("/")).rstrip("/")
    return value


def local_argv(
    container: dict[str, Any], pod_spec: dict[str, Any], ip: str, wrapper: Path, models: Path
) -> list[str]:
    """command + args as rendered, with the node's substitutions."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts: dict[str, str] = {}
    for m in container.get("volumeMounts") or []:
        pvc = (volumes.get(m["name"]) or {}).get("persistentVolumeClaim")
        if pvc:
            mounts[m["mountPath"].rstrip("/")] = pvc["claimName"]
    args: list[str] = []
    for a in container.get("args") or []:
        if a == "tritonserver":
            a = str(wrapper)
        elif a.startswith(("--model-repository=", "--model-store=")):
            flag, _, value = a.partition("=")
            a = f"{flag}={resolve_repository(value, mounts, models)}"
        args.append(a)
    args += [f"--http-address={ip}", f"--grpc-address={ip}", f"--metrics-address={ip}"]
    return [*(container.get("command") or []), *args]


def write_wrapper(path: Path, backends: Path, binary: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        "# tritonserver as this node provides it: nvidia-pytriton's, CPU only.\n"
        f'exec "{binary}" --backend-directory="{backends}" '
        '--allow-gpu-metrics=false "$@"\n'
    )
    path.chmod(0o755)


# -------------------------------------------------------------------- addresses


def pod_ip(host: str) -> str:
    """The pod IP published for a pod listening on the loopback address ``host``."""
    assert host.startswith("127."), host
    return "10." + host[len("127.") :]


def host_address(ip: str) -> str:
    """The loopback address behind a published pod IP (the inverse of :func:`pod_ip`)."""
    return "127." + ip[len("10.") :] if ip.startswith("10.") else ip


class Addresses:
    """Loopback pod IPs ``<subnet>.2`` .. ``<subnet>.254``, handed out in turn.

    As host-local IPAM does, the next address after the last one given, not the lowest
    free one: a pod's address is not reused by the next pod at once, so whatever still
    holds a connection to the old pod (a gateway's idle pool) cannot reach the new one
    by mistake.
    """

    def __init__(
        self,
        subnet: str,
        ports: tuple[int, ...] = (8000, 8001, 8002),
        free: Callable[[str], bool] | None = None,
    ) -> None:
        self.subnet, self.ports = subnet, ports
        self.used: set[str] = set()
        self.last = 1
        self.lock = threading.Lock()
        self.free = free or self.bindable

    def bindable(self, ip: str) -> bool:
        for port in self.ports:
            with socket.socket() as s:
                try:
                    s.bind((ip, port))
                except OSError:
                    return False
        return True

    def take(self, wanted: str | None = None) -> str:
        """``wanted`` (a restarted plane keeps a pod's published IP) or the next free one."""
        with self.lock:
            if wanted and wanted.startswith(self.subnet + ".") and wanted not in self.used:
                self.used.add(wanted)
                return wanted
            for i in range(253):
                last = 2 + (self.last - 1 + i) % 253
                ip = f"{self.subnet}.{last}"
                if ip not in self.used and self.free(ip):
                    self.used.add(ip)
                    self.last = last
                    return ip
        raise RuntimeError(f"no free address in {self.subnet}.0/24")

    def release(self, ip: str) -> None:
        with self.lock:
            self.used.discard(ip)


# ----------------------------------------------------------------------- probes


def port_number(container: dict[str, Any], port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def http_status(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0


@dataclass
class Probe:
    kind: str
    spec: dict[str, Any]
    successes: int = 0
    failures: int = 0
    next_at: float = 0.0

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold", 1))

    def reset(self, started: float) -> None:
        self.successes = self.failures = 0
        self.next_at = started + float(self.spec.get("initialDelaySeconds", 0))


def probe_step(
    probes: dict[str, Probe],
    t: float,
    started: bool,
    ready: bool,
    check: Callable[[Probe], bool],
) -> tuple[bool, bool, str | None]:
    """Run the probes due at ``t``: (started, ready, why the container must restart or None).

    A kubelet's rules: the startup probe runs until it succeeds once, and until then
    neither liveness nor readiness runs; ``failureThreshold`` consecutive startup or
    liveness failures restart the container; readiness turns true after
    ``successThreshold`` consecutive successes and false after ``failureThreshold``
    consecutive failures; without a readiness probe a started container is ready.
    ``check`` is the probe itself (the only impure part).
    """
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = probes.get(kind)
        if probe is None or t < probe.next_at:
            continue
        if (kind == "startupProbe") == started:  # startup before, the others after
            continue
        probe.next_at = t + probe.period
        ok = check(probe)
        if ok:
            probe.successes += 1
            probe.failures = 0
        else:
            probe.failures += 1
            probe.successes = 0
        if kind == "startupProbe":
            if ok:
                started = True
                for k in ("readinessProbe", "livenessProbe"):
                    if k in probes:
                        probes[k].next_at = t  # start probing right away
            elif probe.failures >= probe.failure_threshold:
                return False, False, "startup probe failed"
        elif kind == "livenessProbe":
            if not ok and probe.failures >= probe.failure_threshold:
                return started, False, "liveness probe failed"
        elif ok and probe.successes >= probe.success_threshold:
            ready = True
        elif not ok and probe.failures >= probe.failure_threshold:
            ready = False
    if started and "readinessProbe" not in probes:
        ready = True
    return started, ready, None


# ------------------------------------------------------------------------ pods


@dataclass
class PodWorker:
    """One pod: its container process, probes and status."""

    plane: DataPlane
    pod: dict[str, Any]
    ip: str = ""
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: bool = False
    ready: bool = False
    started_at: str = ""
    last_exit: dict[str, Any] | None = None
    restart_at: float = 0.0
    waiting_reason: str = "ContainerCreating"
    probes: dict[str, Probe] = field(default_factory=dict)
    last_status: str = ""
    gone: bool = False
    thread: threading.Thread | None = None
    pids: set[int] = field(default_factory=set)

    @property
    def key(self) -> str:
        m = self.pod["metadata"]
        return f"{m['namespace']}/{m['name']}"

    @property
    def dir(self) -> Path:
        m = self.pod["metadata"]
        return self.plane.state_dir / "pods" / f"{m['namespace']}.{m['name']}"

    def container(self) -> dict[str, Any] | None:
        for c in self.pod["spec"].get("containers") or []:
            if c["name"] == CONTAINER:
                return dict(c)
        return None

    # -- thread

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=self.key, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            published = (self.pod.get("status") or {}).get("podIP")
            self.ip = self.plane.addresses.take(host_address(published) if published else None)
            self.dir.mkdir(parents=True, exist_ok=True)
            while not self.plane.stopping.is_set():
                if self.gone:
                    self.kill(grace=5.0, prestop=False)
                    break
                if self.pod["metadata"].get("deletionTimestamp"):
                    self.terminate()
                    break
                self.tick()
                self.plane.stopping.wait(0.2)  # the worker's tick, not synchronisation
            else:
                self.kill(grace=10.0, prestop=False)
        except Exception:
            LOG.exception("%s: worker failed", self.key)
            self.kill(grace=5.0, prestop=False)
        finally:
            if self.ip:
                self.plane.addresses.release(self.ip)
            self.plane.forget(self)

    def tick(self) -> None:
        c = self.container()
        if c is None:  # not Sluice's container: nothing to run, ready as kwok would say
            self.started = self.ready = True
            self.publish(None)
            return
        t = time.monotonic()
        if self.proc is not None and self.proc.poll() is not None:
            rc = self.proc.returncode
            LOG.info("%s: container exited with %s", self.key, rc)
            self.exited(rc, "Error" if rc else "Completed")
        if self.proc is None and t >= self.restart_at:
            self.launch(c)
        if self.proc is not None:
            self.run_probes(c, t)
        self.publish(c)

    def exited(self, rc: int, reason: str) -> None:
        self.last_exit = {
            "terminated": {
                "exitCode": rc if rc >= 0 else 128 - rc,
                "reason": reason,
                "startedAt": self.started_at,
                "finishedAt": now_iso(),
            }
        }
        self.proc = None
        self.started = self.ready = False
        self.restarts += 1
        backoff = min(300.0, 10.0 * 2 ** max(0, self.restarts - 1))
        self.restart_at = time.monotonic() + backoff
        self.waiting_reason = "CrashLoopBackOff"

    def launch(self, c: dict[str, Any]) -> None:
        argv = local_argv(c, self.pod["spec"], self.ip, self.plane.wrapper, self.plane.models)
        env = dict(self.plane.node_env)
        env["TMPDIR"] = str(self.dir)
        env["HOME"] = str(self.dir)
        for ref in c.get("envFrom") or []:
            env.update(self.plane.secret(self.pod["metadata"]["namespace"], ref))
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = str(e["value"])
            else:
                LOG.warning("%s: env %s needs valueFrom; not supported", self.key, e["name"])
        log = open(self.dir / "container.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pids.add(self.proc.pid)
        self.started_at = now_iso()
        self.started = self.ready = False
        t = time.monotonic()
        self.probes = {
            kind: Probe(kind, c[kind])
            for kind in ("startupProbe", "readinessProbe", "livenessProbe")
            if c.get(kind)
        }
        for p in self.probes.values():
            p.reset(t)
        if "startupProbe" not in self.probes:
            self.started = True
        LOG.info("%s: started pid %d on %s", self.key, self.proc.pid, self.ip)
        self.plane.save_pids()

    # -- probes

    def check(self, c: dict[str, Any], probe: Probe) -> bool:
        s = probe.spec
        if "httpGet" in s:
            g = s["httpGet"]
            host = g.get("host") or self.ip
            scheme = str(g.get("scheme", "HTTP")).lower()
            url = f"{scheme}://{host}:{port_number(c, g['port'])}{g.get('path', '/')}"
            return 200 <= http_status(url, probe.timeout) < 400
        if "tcpSocket" in s:
            try:
                port = port_number(c, s["tcpSocket"]["port"])
                with socket.create_connection((self.ip, port), timeout=probe.timeout):
                    return True
            except OSError:
                return False
        if "exec" in s:
            try:
                r = subprocess.run(
                    s["exec"]["command"],
                    cwd=self.dir,
                    env=self.plane.node_env,
                    capture_output=True,
                    timeout=probe.timeout,
                )
                return r.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                return False
        LOG.warning("%s: %s kind not supported: %s", self.key, probe.kind, s)
        return True

    def run_probes(self, c: dict[str, Any], t: float) -> None:
        self.started, self.ready, why = probe_step(
            self.probes, t, self.started, self.ready, lambda p: self.check(c, p)
        )
        if why:
            self.restart(c, why)

    def restart(self, c: dict[str, Any], why: str) -> None:
        LOG.info("%s: %s; restarting the container", self.key, why)
        self.plane.event(self.pod, "Killing", f"Container {CONTAINER} {why}, will be restarted")
        self.ready = False
        self.publish(c)
        rc = self.kill(grace=self.grace(), prestop=True)
        self.exited(rc if rc is not None else 137, "Error")
        self.restart_at = time.monotonic()  # a kubelet restarts a killed container at once

    # -- stopping

    def grace(self) -> float:
        m = self.pod["metadata"]
        g = m.get("deletionGracePeriodSeconds")
        if g is None:
            g = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(g)

    def prestop(self, deadline: float) -> None:
        c = self.container() or {}
        hook = ((c.get("lifecycle") or {}).get("preStop")) or {}
        left = max(0.0, deadline - time.monotonic())
        if "sleep" in hook:
            LOG.info("%s: preStop sleep %ss", self.key, hook["sleep"]["seconds"])
            time.sleep(min(float(hook["sleep"]["seconds"]), left))  # the hook itself sleeps
        elif "exec" in hook:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    hook["exec"]["command"],
                    cwd=self.dir,
                    env=self.plane.node_env,
                    capture_output=True,
                    timeout=left,
                )
        elif "httpGet" in hook:
            g = hook["httpGet"]
            url = (
                f"http://{g.get('host') or self.ip}:{port_number(c, g['port'])}{g.get('path', '/')}"
            )
            http_status(url, left)

    def kill(self, grace: float, prestop: bool) -> int | None:
        """preStop, SIGTERM, SIGKILL after ``grace`` seconds in all; the exit code."""
        proc = self.proc
        if proc is None:
            return None
        deadline = time.monotonic() + grace
        if prestop and proc.poll() is None:
            self.prestop(deadline)
        tree = {proc.pid, *descendants(proc.pid)}
        self.pids |= tree
        if proc.poll() is None:
            LOG.info("%s: SIGTERM to %d", self.key, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        if proc.poll() is None:
            LOG.info("%s: grace period over; SIGKILL", self.key)
        self.pids |= set(descendants(proc.pid))
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait(timeout=30)
        self.proc = None
        self.pids.clear()
        self.plane.save_pids()
        return rc

    def terminate(self) -> None:
        LOG.info("%s: deleted; grace %.0fs", self.key, self.grace())
        self.ready = False
        c = self.container()
        with contextlib.suppress(Exception):
            self.publish(c)
        self.kill(grace=self.grace(), prestop=True)
        m = self.pod["metadata"]
        with contextlib.suppress(k8s.exceptions.ApiException):
            self.plane.core.delete_namespaced_pod(
                m["name"],
                m["namespace"],
                body=k8s.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=m["uid"])
                ),
            )
        LOG.info("%s: removed", self.key)

    # -- status

    def container_status(self, c: dict[str, Any]) -> dict[str, Any]:
        st: dict[str, Any] = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restarts,
        }
        if self.proc is not None:
            st["state"] = {"running": {"startedAt": self.started_at}}
            st["containerID"] = f"local://{self.proc.pid}"
        else:
            st["state"] = {"waiting": {"reason": self.waiting_reason}}
        if self.last_exit:
            st["lastState"] = self.last_exit
        return st

    def publish(self, c: dict[str, Any] | None) -> None:
        spec = self.pod["spec"]
        statuses = []
        for other in spec.get("containers") or []:
            if c is not None and other["name"] == c["name"]:
                statuses.append(self.container_status(c))
            else:  # containers other than Triton's run nothing: running and ready
                statuses.append(
                    {
                        "name": other["name"],
                        "image": other.get("image", ""),
                        "imageID": "",
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": self.started_at or now_iso()}},
                    }
                )
        ready = all(s["ready"] for s in statuses)
        key = json.dumps([ready, statuses, self.ip], sort_keys=True)
        if key == self.last_status:
            return
        old = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}

        def cond(type_: str, ok: bool) -> dict[str, Any]:
            prev = old.get(type_)
            status = "True" if ok else "False"
            t = prev["lastTransitionTime"] if prev and prev.get("status") == status else now_iso()
            return {"type": type_, "status": status, "lastTransitionTime": t}

        body = {
            "status": {
                "phase": "Running",
                "podIP": pod_ip(self.ip),
                "podIPs": [{"ip": pod_ip(self.ip)}],
                "hostIP": "127.0.0.1",
                "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": (self.pod.get("status") or {}).get("startTime") or now_iso(),
                "conditions": [
                    cond("PodReadyToStartContainers", True),
                    cond("Initialized", True),
                    cond("ContainersReady", ready),
                    cond("Ready", ready),
                    cond("PodScheduled", True),
                ],
                "containerStatuses": statuses,
            }
        }
        m = self.pod["metadata"]
        try:
            self.plane.core.patch_namespaced_pod_status(m["name"], m["namespace"], body)
        except k8s.exceptions.ApiException as e:
            if e.status == 404:
                self.gone = True
                return
            raise
        self.last_status = key
        if ready != (old.get("Ready", {}).get("status") == "True"):
            LOG.info("%s: Ready=%s", self.key, ready)


def target_labels(pod: dict[str, Any], relabelings: list[dict[str, Any]]) -> dict[str, str]:
    """The series labels a PodMonitor's ``relabelings`` give this pod's metrics target.

    Prometheus' Kubernetes discovery meta labels (``__meta_kubernetes_namespace``,
    ``..._pod_name``, ``..._pod_label_<name>`` with non-alphanumerics as ``_``), then
    each relabeling's ``sourceLabels`` joined by ``;`` into its ``targetLabel``; an empty
    value sets nothing, as Prometheus drops empty labels.
    """
    m = pod["metadata"]
    meta = {
        "__meta_kubernetes_namespace": m["namespace"],
        "__meta_kubernetes_pod_name": m["name"],
    }
    for k, v in (m.get("labels") or {}).items():
        meta["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k)] = v
    out: dict[str, str] = {}
    for r in relabelings:
        value = ";".join(meta.get(s, "") for s in r.get("sourceLabels") or [])
        if value:
            out[r["targetLabel"]] = value
    out["container"] = CONTAINER
    out["endpoint"] = "metrics"
    return out


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


# ------------------------------------------------------------------ the plane


class DataPlane:
    def __init__(self, args: argparse.Namespace) -> None:
        api = k8s_config.new_client_from_config(config_file=str(args.kubeconfig))
        self.core = k8s.CoreV1Api(api)
        self.models = Path(args.models).resolve()
        self.state_dir = Path(args.state_dir).resolve()
        self.targets = Path(args.targets)
        self.addresses = Addresses(args.subnet)
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        install = find_install()
        backends = prepare_backends(install, self.state_dir / "triton")
        self.wrapper = self.state_dir / "bin" / "tritonserver"
        write_wrapper(self.wrapper, backends, install.binary)
        self.node_env = {**triton_env(install), "LANG": "C.UTF-8"}
        relabel = podmonitor(Meta(name="x", namespace="x"))["spec"]["podMetricsEndpoints"][0]
        self.relabelings: list[dict[str, Any]] = relabel["relabelings"]
        self.last_targets = ""

    def secret(self, namespace: str, ref: dict[str, Any]) -> dict[str, str]:
        import base64

        name = (ref.get("secretRef") or {}).get("name")
        if not name:
            return {}
        try:
            s = self.core.read_namespaced_secret(name, namespace)
        except k8s.exceptions.ApiException:
            return {}
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def event(self, pod: dict[str, Any], reason: str, message: str) -> None:
        m = pod["metadata"]
        with contextlib.suppress(Exception):
            self.core.create_namespaced_event(
                m["namespace"],
                {
                    "metadata": {"generateName": f"{m['name']}."},
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": m["namespace"],
                        "name": m["name"],
                        "uid": m["uid"],
                    },
                    "reason": reason,
                    "message": message,
                    "type": "Normal" if reason != "Unhealthy" else "Warning",
                    "source": {"component": "sluice-dataplane"},
                    "firstTimestamp": now_iso(),
                    "lastTimestamp": now_iso(),
                    "count": 1,
                },
            )

    def forget(self, w: PodWorker) -> None:
        with self.lock:
            if self.workers.get(w.pod["metadata"]["uid"]) is w:
                del self.workers[w.pod["metadata"]["uid"]]
        self.save_pids()

    def save_pids(self) -> None:
        with self.lock:
            doc = {
                w.key: sorted(w.pids | ({w.proc.pid} if w.proc else set()))
                for w in self.workers.values()
            }
        tmp = self.state_dir / "pids.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.state_dir / "pids.json")

    def list_pods(self) -> list[dict[str, Any]]:
        r = self.core.list_pod_for_all_namespaces(label_selector=LABEL_ISVC, _preload_content=False)
        items: list[dict[str, Any]] = json.loads(r.data)["items"]
        return [p for p in items if p["spec"].get("nodeName")]

    def sync(self) -> None:
        pods = {p["metadata"]["uid"]: p for p in self.list_pods()}
        with self.lock:
            for uid, pod in pods.items():
                w = self.workers.get(uid)
                if w is None:
                    w = self.workers[uid] = PodWorker(self, pod)
                    w.start()
                elif pod["metadata"].get("deletionTimestamp") or not w.pod["metadata"].get(
                    "deletionTimestamp"
                ):  # a list older than the watched deletion does not undo it
                    w.pod = pod
            for uid, w in self.workers.items():
                if uid not in pods:
                    w.gone = True
        self.write_targets()

    def labels(self, pod: dict[str, Any]) -> dict[str, str]:
        return target_labels(pod, self.relabelings)

    def write_targets(self) -> None:
        with self.lock:
            workers = [w for w in self.workers.values() if w.proc is not None and w.ip]
        doc = []
        for w in sorted(workers, key=lambda w: w.key):
            c = w.container()
            if c is None:
                continue
            port = port_number(c, "metrics")
            doc.append({"targets": [f"{w.ip}:{port}"], "labels": self.labels(w.pod)})
        text = json.dumps(doc, indent=1)
        if text != self.last_targets:
            tmp = self.targets.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.targets)
            self.last_targets = text

    def watch_deletions(self) -> None:
        """Hand a pod's deletion to its worker as soon as the apiserver says so.

        A kubelet watches its pods and starts the termination (preStop, SIGTERM) within
        moments, while gateways and proxies learn of it later through EndpointSlices:
        that gap is what the preStop drain covers. The poll in :meth:`run` alone would
        delay every termination by up to its period and hide the gap.
        """
        from kubernetes import watch

        while not self.stopping.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(
                    self.core.list_pod_for_all_namespaces,
                    label_selector=LABEL_ISVC,
                    timeout_seconds=30,
                    _request_timeout=60,
                ):
                    pod = ev["raw_object"]
                    if pod["metadata"].get("deletionTimestamp") and pod["spec"].get("nodeName"):
                        with self.lock:
                            worker = self.workers.get(pod["metadata"]["uid"])
                        if worker is not None:
                            worker.pod = pod
                    if self.stopping.is_set():
                        w.stop()
            except Exception as e:  # the apiserver may be restarting; the poll goes on
                LOG.warning("watch failed: %s", e)
                self.stopping.wait(1.0)  # back-off before watching again

    def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.write_targets()
        LOG.info("data plane up: models %s, subnet %s.0/24", self.models, self.addresses.subnet)
        threading.Thread(target=self.watch_deletions, daemon=True, name="watch").start()
        while not self.stopping.is_set():
            try:
                self.sync()
            except Exception as e:  # the apiserver may be restarting: try again
                LOG.warning("sync failed: %s", e)
            self.stopping.wait(POLL_SECONDS)  # polling period of the pod list
        self.shutdown()

    def shutdown(self) -> None:
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            if w.thread is not None:
                w.thread.join(timeout=30)
        self.write_targets()
        LOG.info("data plane down")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--targets", required=True, help="Prometheus file_sd file to write")
    ap.add_argument("--subnet", required=True, help="127.A.B: pod IPs are 127.A.B.2-254")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    plane = DataPlane(args)

    def stop(signum: int, _frame: object) -> None:
        plane.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    plane.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
