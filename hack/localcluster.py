#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, without Docker.

    python3 hack/localcluster.py up      # start (or reuse) the cluster, print export KUBECONFIG=...
    python3 hack/localcluster.py down    # stop every process it started, by PID
    python3 hack/localcluster.py status
    python3 hack/localcluster.py up --dataplane --models DIR   # what `make cluster-up` runs

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local
processes built from Go modules (hack/build-bins.sh, cached under
~/.cache/sluice/bin); kwok plays the kubelet: it makes three fake nodes Ready
(two 8-GPU nodes, H100 and A100, and one CPU node) and scheduled pods Running.

With ``--dataplane`` (``make cluster-up``) the cluster also runs a local data
plane: Debian's Prometheus, ``hack/dataplane.py`` (a kubelet that runs every
Sluice pod's Triton container for real as a local process, each pod on its own
loopback address, probes driving readiness) and ``hack/gateway.py`` (the
HTTPRoutes and ready EndpointSlices, on 127.0.0.1). kwok's Stages then leave
pods labelled ``sluice.dev/inferenceservice`` to the data plane. Model
repositories resolve under the models directory (``s3://bucket/path`` ->
``DIR/bucket/path``); by default ``.models/`` with the demo's models
(hack/models.py). These three run on the project's venv (kubernetes, sluice,
nvidia-pytriton).

Everything lives in .cluster/ of the repository (git-ignored): PKI, etcd data,
logs, the kubeconfig and state.json with the PIDs and ports. The pytest
fixture in tests/conftest.py uses this same module.

Standard library only, so it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
CACHE = Path(os.environ.get("SLUICE_CACHE", Path.home() / ".cache" / "sluice"))

SERVICE_CIDR = "10.96.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
DATAPLANE_COMPONENTS = ("prometheus", "dataplane", "gateway")
DEFAULT_MODELS = REPO / ".models"
# Pods kwok leaves alone when the data plane runs: Sluice's, run by hack/dataplane.py.
DATAPLANE_POD_LABEL = "sluice.dev/inferenceservice"
SCRAPE_INTERVAL = "1s"

GPU_NODES = (
    ("gpu-h100", "NVIDIA-H100-80GB-HBM3"),
    ("gpu-a100", "NVIDIA-A100-SXM4-80GB"),
)
CPU_NODE = "cpu-0"


def versions() -> dict[str, str]:
    out = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


def venv_python() -> str:
    """A Python with the project installed (the data plane imports sluice and kubernetes)."""
    import importlib.util

    if importlib.util.find_spec("kubernetes") and importlib.util.find_spec("sluice"):
        return sys.executable
    return str(REPO / ".venv" / "bin" / "python")


class Cluster:
    def __init__(
        self, root: Path | None = None, dataplane: bool = False, models: Path | None = None
    ) -> None:
        self.root = root or Path(os.environ.get("SLUICE_CLUSTER_DIR", REPO / ".cluster"))
        self.dataplane = dataplane
        self.models = (models or DEFAULT_MODELS).resolve()
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.state_file = self.root / "state.json"
        self.kubeconfig = self.root / "kubeconfig"
        v = versions()
        self.kube_version = v["KUBE_VERSION"]
        bin_ = CACHE / "bin"
        self.bins = {
            "etcd": bin_ / f"etcd-{v['ETCD_VERSION']}" / "etcd",
            "kwok": bin_ / f"kwok-{v['KWOK_VERSION']}" / "kwok",
            **{
                c: bin_ / f"{c}-{self.kube_version}" / c
                for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
            },
        }
        self.stages = bin_ / f"kwok-{v['KWOK_VERSION']}" / "stages" / "stages.yaml"

    # ------------------------------------------------------------------ state

    def state(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def save_state(self, state: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    @staticmethod
    def alive(pid: int, binary: str | None = None) -> bool:
        """True if ``pid`` runs and (when given) is the binary we started."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if stat.split(") ", 1)[-1].startswith("Z"):
            return False
        return binary is None or cmdline.split(b"\0", 1)[0] == binary.encode()

    def components(self, st: dict | None = None) -> tuple[str, ...]:
        st = self.state() if st is None else st
        return COMPONENTS + (DATAPLANE_COMPONENTS if st.get("dataplane") else ())

    def healthy(self) -> bool:
        st = self.state()
        procs = st.get("processes", {})
        if set(procs) != set(self.components(st)):
            return False
        if not all(self.alive(p["pid"], p["binary"]) for p in procs.values()):
            return False
        return self.apiserver_ready(st.get("apiserver_port", 0))

    def apiserver_ready(self, port: int) -> bool:
        if not port or not (self.pki / "admin.crt").exists():
            return False
        try:
            with self._get(port, "/readyz") as r:
                return r.status == 200
        except OSError:
            return False

    def _get(self, port: int, path: str):
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=ctx, timeout=5)

    # ---------------------------------------------------------------------- up

    def up(self) -> Path:
        st = self.state()
        same = bool(st.get("dataplane")) == self.dataplane and (
            not self.dataplane or st.get("models") == str(self.models)
        )
        if same and self.healthy():
            log("reusing the running cluster")
            return self.kubeconfig
        if st and not same:
            log(
                "the running cluster has another data plane or models directory "
                f"({st.get('models')}); restarting it"
            )
        if self.state():
            log("found a stale cluster; stopping what is left of it")
            self.down()
        self.ensure_binaries()
        self.root.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        t0 = time.monotonic()
        self.make_pki()
        ports = {k: free_port() for k in ("etcd", "etcd_peer", "apiserver", "kcm", "sched", "kwok")}
        state: dict = {
            "processes": {},
            "apiserver_port": ports["apiserver"],
            "ports": ports,
            "dataplane": self.dataplane,
        }
        self.save_state(state)
        try:
            self._start_all(state, ports)
            self.write_kubeconfig(ports["apiserver"])
            self.create_nodes()
            self.wait_nodes_ready()
            self.wait_default_serviceaccount()
            if self.dataplane:
                self._start_dataplane(state)
        except BaseException:
            log(f"start failed; logs are in {self.logs}")
            self.down(keep_logs=True)
            raise
        log(f"cluster up in {time.monotonic() - t0:.1f}s")
        return self.kubeconfig

    def ensure_binaries(self) -> None:
        missing = [c for c, b in self.bins.items() if not b.exists()] + (
            [] if self.stages.exists() else ["kwok"]
        )
        if not missing:
            return
        log(f"building {', '.join(sorted(set(missing)))} (cached under {CACHE}/bin)")
        targets = {"kube" if c.startswith("kube") else c for c in missing}
        subprocess.run([str(HACK / "build-bins.sh"), *sorted(targets)], check=True)

    def _spawn(self, state: dict, name: str, args: list[str], binary: str | None = None) -> None:
        binary = binary or str(self.bins[name])
        out = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [binary, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives `make cluster-up`; stopped by PID
            cwd=self.root,
        )
        out.close()
        state["processes"][name] = {"pid": proc.pid, "binary": binary}
        self.save_state(state)

    def _start_all(self, state: dict, ports: dict[str, int]) -> None:
        pki = self.pki
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer']}"
        self._spawn(
            state,
            "etcd",
            [
                "--name=sluice",
                f"--data-dir={self.root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=sluice={peer_url}",
                "--unsafe-no-fsync=true",
                "--quota-backend-bytes=4294967296",
                "--log-level=warn",
            ],
        )
        wait_for(lambda: http_ok(f"{etcd_url}/health"), 60, "etcd health")

        self._spawn(
            state,
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
                "--v=1",
            ],
        )
        wait_for(lambda: self.apiserver_ready(ports["apiserver"]), 180, "kube-apiserver /readyz")
        self.write_kubeconfig(ports["apiserver"])
        kc = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--profiling=false",
            "--v=1",
        ]
        self._spawn(
            state,
            "kube-controller-manager",
            [
                *common,
                f"--secure-port={ports['kcm']}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--use-service-account-credentials=false",
                "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
                "--node-monitor-grace-period=60s",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
            ],
        )
        self._spawn(state, "kube-scheduler", [*common, f"--secure-port={ports['sched']}"])
        self._spawn(
            state,
            "kwok",
            [
                f"--kubeconfig={kc}",
                f"--config={self.kwok_stages()}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--disregard-status-with-annotation-selector=kwok.x-k8s.io/status=custom",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.0.0.1",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--enable-crds=",
            ],
        )

    def kwok_stages(self) -> Path:
        """kwok's Stages; with the data plane, Sluice's pods are excluded from pod stages."""
        if not self.dataplane:
            return self.stages
        exclude = (
            "    matchExpressions:\n"
            f"    - key: '.metadata.labels.[\"{DATAPLANE_POD_LABEL}\"]'\n"
            "      operator: 'DoesNotExist'\n"
        )
        docs = self.stages.read_text().split("\n---\n")
        out = []
        for d in docs:
            if "kind: Pod\n" in d and "    matchExpressions:\n" in d:
                d = d.replace("    matchExpressions:\n", exclude, 1)
            out.append(d)
        path = self.root / "kwok-stages.yaml"
        path.write_text("\n---\n".join(out))
        return path

    # -------------------------------------------------------------- data plane

    def _start_dataplane(self, state: dict) -> None:
        """Prometheus, the data plane (a kubelet for Sluice pods) and the gateway."""
        import random

        if not self.models.exists():
            sys.path.insert(0, str(HACK))
            import models

            models.write_demo_models(self.models)
            log(f"wrote the demo models under {self.models}")
        dp = self.root / "dataplane"
        dp.mkdir(parents=True, exist_ok=True)
        targets = dp / "targets.json"
        if not targets.exists():
            targets.write_text("[]")
        ports = state["ports"]
        ports["prometheus"] = free_port()
        ports["gateway"] = free_port()
        # 127.A.B: pods publish 10.A.B.C; A avoids the Service range 10.96/16 and kwok's 10.244/16.
        subnet = f"127.{random.randint(100, 200)}.{random.randint(0, 255)}"
        state.update(models=str(self.models), subnet=subnet)
        self.save_state(state)
        prom_cfg = dp / "prometheus.yml"
        prom_cfg.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": SCRAPE_INTERVAL,
                        "scrape_timeout": SCRAPE_INTERVAL,
                        "evaluation_interval": SCRAPE_INTERVAL,
                    },
                    "scrape_configs": [
                        {
                            "job_name": "triton",
                            "file_sd_configs": [
                                {"files": [str(targets)], "refresh_interval": "1s"}
                            ],
                        },
                        {
                            "job_name": "gateway",
                            "metrics_path": "/_gateway/metrics",
                            "static_configs": [{"targets": [f"127.0.0.1:{ports['gateway']}"]}],
                        },
                    ],
                },
                indent=1,
            )
        )
        prometheus = shutil_which("prometheus")
        self._spawn(
            state,
            "prometheus",
            [
                f"--config.file={prom_cfg}",
                f"--storage.tsdb.path={dp / 'prometheus'}",
                f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
                "--storage.tsdb.retention.time=6h",
                "--log.level=warn",
            ],
            binary=prometheus,
        )
        py = venv_python()
        self._spawn(
            state,
            "dataplane",
            [
                str(HACK / "dataplane.py"),
                f"--kubeconfig={self.kubeconfig}",
                f"--models={self.models}",
                f"--state-dir={dp}",
                f"--targets={targets}",
                f"--subnet={subnet}",
            ],
            binary=py,
        )
        self._spawn(
            state,
            "gateway",
            [
                str(HACK / "gateway.py"),
                f"--kubeconfig={self.kubeconfig}",
                f"--port={ports['gateway']}",
            ],
            binary=py,
        )
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{ports['prometheus']}/-/ready"), 60, "Prometheus"
        )
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{ports['gateway']}/_gateway/healthz"),
            60,
            "the gateway",
        )

    def urls(self) -> dict[str, str]:
        ports = self.state().get("ports", {})
        out = {}
        if "prometheus" in ports:
            out["prometheus"] = f"http://127.0.0.1:{ports['prometheus']}"
        if "gateway" in ports:
            out["gateway"] = f"http://127.0.0.1:{ports['gateway']}"
        return out

    # --------------------------------------------------------------------- pki

    def make_pki(self) -> None:
        pki = self.pki
        if (pki / "admin.crt").exists() and (pki / "sa.pub").exists():
            return
        pki.mkdir(parents=True, exist_ok=True)

        def ossl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

        ossl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "3650",
            "-subj",
            "/CN=sluice-local-ca",
        )
        (pki / "apiserver.ext").write_text(
            "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,"
            "DNS:kubernetes.default,DNS:kubernetes.default.svc,"
            "DNS:kubernetes.default.svc.cluster.local\n"
            "extendedKeyUsage=serverAuth\n"
        )
        (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
        for name, subj, ext in (
            ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
            ("admin", "/O=system:masters/CN=sluice-admin", "client.ext"),
        ):
            ossl(
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.csr",
                "-subj",
                subj,
            )
            ossl(
                "x509",
                "-req",
                "-in",
                f"{name}.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                f"{name}.crt",
                "-days",
                "3650",
                "-extfile",
                ext,
            )
        ossl("genrsa", "-out", "sa.key", "2048")
        ossl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def write_kubeconfig(self, port: int) -> None:
        import base64

        def b64(name: str) -> str:
            return base64.b64encode((self.pki / name).read_bytes()).decode()

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "sluice-local",
                    "cluster": {
                        "server": f"https://127.0.0.1:{port}",
                        "certificate-authority-data": b64("ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "sluice-admin",
                    "user": {
                        "client-certificate-data": b64("admin.crt"),
                        "client-key-data": b64("admin.key"),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "sluice-local",
                    "context": {"cluster": "sluice-local", "user": "sluice-admin"},
                }
            ],
            "current-context": "sluice-local",
        }
        tmp = self.kubeconfig.with_suffix(".tmp")
        tmp.write_text(json.dumps(cfg, indent=2))  # JSON is valid kubeconfig YAML
        tmp.chmod(0o600)
        tmp.replace(self.kubeconfig)

    # ------------------------------------------------------------------- nodes

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        r = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def create_nodes(self) -> None:
        nodes = [node(name, gpus=8, product=product) for name, product in GPU_NODES]
        nodes.append(node(CPU_NODE, gpus=0, product=None))
        doc = {"apiVersion": "v1", "kind": "List", "items": nodes}
        wait_for(
            lambda: _try(lambda: self.kubectl("apply", "-f", "-", stdin=json.dumps(doc))),
            60,
            "create nodes",
        )

    def wait_nodes_ready(self) -> None:
        def ready() -> bool:
            out = self.kubectl(
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}="
                "{.status.conditions[?(@.type=='Ready')].status} {end}",
            )
            states = dict(p.split("=", 1) for p in out.split())
            return len(states) == 3 and all(s == "True" for s in states.values())

        wait_for(ready, 120, "3 Ready nodes")

    def wait_default_serviceaccount(self) -> None:
        wait_for(
            lambda: _try(lambda: self.kubectl("get", "serviceaccount", "default", "-n", "default")),
            120,
            "the default ServiceAccount",
        )

    def install_crds(self) -> None:
        """Sluice's CRD (crds/) and the Gateway API CRDs from the Go module cache."""
        gw = CACHE / f"gateway-api-{versions()['GATEWAY_API_VERSION']}" / "standard.yaml"
        if not gw.exists():
            subprocess.run([str(HACK / "build-bins.sh"), "gateway"], check=True)
        for path, crd in (
            (REPO / "crds", "crd/inferenceservices.sluice.dev"),
            (gw, "crd/httproutes.gateway.networking.k8s.io"),
        ):
            self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
            self._wait_established(crd)

    def _wait_established(self, crd: str, timeout: float = 60.0) -> None:
        """kubectl wait fails at once (instead of waiting) while a new CRD has no
        status.conditions yet, which a loaded apiserver leaves for a moment."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.kubectl("wait", "--for=condition=Established", "--timeout=60s", crd)
                return
            except RuntimeError as e:
                if "accessor error" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # poll interval of a wait on a condition

    # -------------------------------------------------------------------- down

    def down(self, keep_logs: bool = False) -> None:
        st = self.state()
        procs = st.get("processes", {})
        for name in reversed(COMPONENTS + DATAPLANE_COMPONENTS):
            p = procs.get(name)
            if p and self.alive(p["pid"], p["binary"]):
                stop_pid(p["pid"], name, grace=60.0 if name == "dataplane" else 15.0)
        # Pod processes the data plane left (it stops them itself on SIGTERM).
        with contextlib.suppress(OSError, ValueError):
            pods = json.loads((self.root / "dataplane" / "pids.json").read_text())
            for pids in pods.values():
                for pid in pids:
                    if self.alive(pid) and self._cwd_under_root(pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
        # Anything left that we started (e.g. a state file lost mid-start) is
        # found by its binary path under our cache and its working directory.
        for pid in self.strays():
            stop_pid(pid, "stray")
        if keep_logs:
            for sub in ("etcd", "state.json"):
                _rm(self.root / sub)
        else:
            _rm(self.root)
        log("cluster down")

    def _cwd_under_root(self, pid: int) -> bool:
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            return False
        return cwd == self.root or self.root in cwd.parents

    def strays(self) -> list[int]:
        """Processes we started: our binaries in the root, or anything in a pod's directory."""
        ours = {str(b) for b in self.bins.values()}
        pods = self.root / "dataplane" / "pods"
        found = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                exe = (d / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
                cwd = Path(os.readlink(d / "cwd"))
            except OSError:
                continue
            if (exe in ours and cwd == self.root) or pods in cwd.parents:
                found.append(int(d.name))
        return found


def node(name: str, gpus: int, product: str | None) -> dict:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        "node.kubernetes.io/instance-type": "gpu" if gpus else "cpu",
    }
    capacity = {"cpu": "64", "memory": "512Gi", "pods": "110"}
    taints = []
    if gpus:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": product,
            }
        )
        capacity["nvidia.com/gpu"] = str(gpus)
        taints.append({"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"taints": taints},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


# ------------------------------------------------------------------- helpers


def shutil_which(name: str) -> str:
    import shutil

    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found (make deps installs Debian's package)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _try(fn: Callable[[], object]) -> bool:
    try:
        fn()
        return True
    except (RuntimeError, OSError):
        return False


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(delay)  # polling interval while waiting on a condition
        delay = min(delay * 1.5, 2.0)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_pid(pid: int, name: str, grace: float = 15.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and Cluster.alive(pid):
        _reap(pid)
        time.sleep(0.1)
    if Cluster.alive(pid):
        log(f"{name} ({pid}) ignored SIGTERM; killing")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: (_reap(pid), not Cluster.alive(pid))[1], 10, f"{name} to exit")
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _rm(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("command", choices=["up", "down", "status", "url"])
    ap.add_argument("name", nargs="?", help="url: prometheus or gateway")
    ap.add_argument("--dataplane", action="store_true", help="run Sluice pods for real")
    ap.add_argument("--models", type=Path, default=None, help=f"default {DEFAULT_MODELS}")
    args = ap.parse_args(argv)
    c = Cluster(dataplane=args.dataplane, models=args.models)
    if args.command == "up":
        kc = c.up()
        if args.dataplane:
            c.install_crds()
            for name, url in c.urls().items():
                print(f"# {name}: {url}")
            print(f"# models: {c.models}")
        print(f"export KUBECONFIG={kc}")
    elif args.command == "down":
        c.down()
    elif args.command == "url":
        url = c.urls().get(args.name or "")
        if not url:
            print(f"no {args.name} running (make cluster-up starts it)", file=sys.stderr)
            return 1
        print(url)
    else:
        ok = c.healthy()
        print("running" if ok else "not running")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
