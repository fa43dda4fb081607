"""The Triton container exactly as Sluice renders it, run against a real tritonserver.

The Deployment comes from :func:`sluice.render.render_all`. Its container's command,
args, env and probes are used as rendered; only what a kubelet and a node would
supply differs: the PersistentVolumeClaim's mount path becomes a local directory, the
container ports become free loopback ports, and an ``envFrom`` Secret is read from a
dict. Everything the local tritonserver needs (its backend directory, its libraries,
loopback-only listeners) is passed the way a user would: ``spec.triton.args`` and
``spec.triton.env``, so it goes through the renderer too.

The repository holds versions 1, 2 and 3 of a Python-backend model that answers with
its version; version 2 is pinned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from sluice.api.v1alpha1 import InferenceServiceSpec, parse_spec
from sluice.render import render_all
from sluice.render.plan import Meta, Variant
from tests.support.triton import (
    MODEL_INPUT,
    MODEL_OUTPUT,
    Proc,
    S3Store,
    TritonInstall,
    find_install,
    free_port,
    http_get,
    http_post,
    make_model_repository,
    prepare_backends,
    repository_index,
    triton_env,
    until,
)

pytestmark = pytest.mark.integration

MODEL = "m"
PINNED = 2
START_TIMEOUT = 180.0  # tritonserver up and live, on a busy 2-core machine
LOAD_TIMEOUT = 300.0


# ------------------------------------------------------------------ fixtures


@dataclass(frozen=True)
class LocalTriton:
    install: TritonInstall
    backends: Path


@pytest.fixture(scope="session")
def local_triton(tmp_path_factory: pytest.TempPathFactory) -> LocalTriton:
    try:
        install = find_install()
    except AssertionError as e:  # a missing server is a failure, never a skip
        pytest.fail(str(e), pytrace=False)
    return LocalTriton(install, prepare_backends(install, tmp_path_factory.mktemp("triton")))


def make_spec(
    local: LocalTriton,
    repository: str,
    version: int = PINNED,
    env: Mapping[str, str] | None = None,
    **model: Any,
) -> InferenceServiceSpec:
    return parse_spec(
        {
            "model": {"name": MODEL, "repository": repository, "version": version, **model},
            "gpu": {"count": 0},
            "triton": {
                "startupTimeoutSeconds": 600,
                "args": [
                    f"--backend-directory={local.backends}",
                    "--http-address=127.0.0.1",
                    "--grpc-address=127.0.0.1",
                    "--metrics-address=127.0.0.1",
                ],
                "env": [
                    {"name": k, "value": v}
                    for k, v in {**triton_env(local.install), **(env or {})}.items()
                ],
            },
        }
    )


def rendered_pod(spec: InferenceServiceSpec, variant: Variant) -> dict[str, Any]:
    """The pod template of the variant's Deployment, from the real renderer."""
    objs = render_all(Meta(name="demo", namespace="default"), spec, [variant])
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == 1, [o["kind"] for o in objs]
    pod: dict[str, Any] = deployments[0]["spec"]["template"]["spec"]
    return pod


@dataclass
class Running:
    """A rendered Triton container running as local processes."""

    proc: Proc
    container: dict[str, Any]
    ports: dict[str, int]  # container port name -> local port
    observed: dict[str, Any] = field(default_factory=dict)

    def url(self, port_name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[port_name]}{path}"

    @property
    def base(self) -> str:
        return self.url("http")

    def probe(self, kind: str) -> str:
        """The URL a kubelet would GET for the rendered probe ``kind``."""
        get = self.container[kind]["httpGet"]
        return self.url(get["port"], get["path"])

    def status(self, path: str) -> int:
        return http_get(self.base + path)[0]

    def alive_or_fail(self) -> bool:
        if not self.proc.running():
            raise AssertionError(f"launcher exited early:\n{self.proc.log()[-4000:]}")
        return True


def run_rendered(
    pod: dict[str, Any],
    claims: Mapping[str, Path],
    log_path: Path,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
) -> Running:
    """Start the pod's Triton container the way a kubelet would, on loopback ports."""
    (container,) = [c for c in pod["containers"] if c["name"] == "triton"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # Volume mounts: a claim's mountPath becomes the claim's local directory.
    mounts: dict[str, str] = {}
    for m in container.get("volumeMounts", []):
        vol = volumes[m["name"]]
        if "persistentVolumeClaim" in vol:
            assert m.get("readOnly") and vol["persistentVolumeClaim"].get("readOnly")
            mounts[m["mountPath"]] = str(claims[vol["persistentVolumeClaim"]["claimName"]])
    # Ports: each containerPort becomes a free loopback port.
    ports = {p["name"]: free_port() for p in container["ports"]}
    by_number = {str(p["containerPort"]): ports[p["name"]] for p in container["ports"]}

    def local_arg(a: str) -> str:
        m = re.fullmatch(r"(--(?:http|grpc|metrics)-port)=(\d+)", a)
        if m and m.group(2) in by_number:
            return f"{m.group(1)}={by_number[m.group(2)]}"
        if a.startswith("--model-repository="):
            path = a.split("=", 1)[1]
            for mount, local in mounts.items():
                if path == mount or path.startswith(mount + "/"):
                    return "--model-repository=" + local + path[len(mount) :]
        return a

    args = [local_arg(a) for a in container["args"]]
    env: dict[str, str] = {}
    for ref in container.get("envFrom", []):
        env.update((secrets or {})[ref["secretRef"]["name"]])
    for e in container["env"]:
        assert "value" in e, f"env {e['name']} needs a kubelet: {e}"
        env[e["name"]] = e["value"]
    proc = Proc(argv=[*container["command"], *args], env=env, log_path=log_path).start()
    return Running(proc=proc, container=container, ports=ports)


def infer(running: Running, version: str = "", batch: int = 4) -> np.ndarray:
    client = triton_http.InferenceServerClient(url=f"127.0.0.1:{running.ports['http']}")
    try:
        inp = triton_http.InferInput(MODEL_INPUT, [batch, 1], "FP32")
        inp.set_data_from_numpy(np.ones((batch, 1), dtype=np.float32))
        result = client.infer(MODEL, [inp], model_version=version)
        out = result.as_numpy(MODEL_OUTPUT)
        assert out is not None
        return out
    finally:
        client.close()


def version_states(running: Running) -> dict[int, str]:
    return {
        int(e["version"]): e.get("state", "")
        for e in repository_index(running.base)
        if e["name"] == MODEL and e.get("version")
    }


Sample = tuple[str, dict[str, str], float]


def metric_samples(text: str) -> list[Sample]:
    out: list[Sample] = []
    for line in text.splitlines():
        m = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)", line.strip())
        if not m or line.startswith("#"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


# ------------------------------------------------ the pinned fleet member


@pytest.fixture(scope="module")
def pinned(
    local_triton: LocalTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """Version 2 of a 1,2,3 repository on a pvc, with its load held until observed."""
    tmp = tmp_path_factory.mktemp("pinned")
    gate = tmp / "gate-open"
    make_model_repository(
        tmp / "claim" / "repo",
        versions=(1, 2, 3),
        max_batch_size=8,
        sleep_ms=2,
        gate_file=gate,
        parameters={"sluice_marker": "from-config-pbtxt"},
    )
    spec = make_spec(local_triton, "pvc://models/repo")
    variant = Variant(
        name="main", version=PINNED, image="x", repository="pvc://models/repo", replicas=1
    )
    running = run_rendered(rendered_pod(spec, variant), {"models": tmp / "claim"}, tmp / "pod.log")
    obs = running.observed
    try:
        until(
            lambda: running.alive_or_fail() and http_get(running.probe("livenessProbe"))[0] == 200,
            START_TIMEOUT,
            "tritonserver live",
        )
        # The launcher has asked for the model; its load is held by the gate.
        until(
            lambda: running.alive_or_fail() and version_states(running).get(PINNED) == "LOADING",
            START_TIMEOUT,
            f"version {PINNED} loading",
        )
        obs["ready_while_loading"] = http_get(running.probe("readinessProbe"))[0]
        obs["startup_while_loading"] = http_get(running.probe("startupProbe"))[0]
        obs["live_while_loading"] = http_get(running.probe("livenessProbe"))[0]
        obs["states_while_loading"] = version_states(running)
        gate.touch()
        until(
            lambda: running.alive_or_fail() and http_get(running.probe("readinessProbe"))[0] == 200,
            LOAD_TIMEOUT,
            "the readiness probe to pass",
        )
        obs["tree"] = running.proc.tree()
        yield running
    finally:
        running.proc.stop()
        assert not running.proc.leftovers()


def test_readiness_probe_fails_until_the_pinned_version_is_loaded(pinned: Running) -> None:
    c = pinned.container
    ready_path = f"/v2/models/{MODEL}/versions/{PINNED}/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == ready_path
    assert c["startupProbe"]["httpGet"]["path"] == ready_path
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    obs = pinned.observed
    # While version 2 was loading the server was live (liveness must not kill a
    # long load) but neither the startup nor the readiness probe passed.
    assert obs["live_while_loading"] == 200
    assert obs["ready_while_loading"] != 200
    assert obs["startup_while_loading"] != 200
    assert obs["states_while_loading"] == {PINNED: "LOADING"}
    assert http_get(pinned.probe("readinessProbe"))[0] == 200
    assert http_get(pinned.probe("startupProbe"))[0] == 200


def test_only_the_pinned_version_is_ready(pinned: Running) -> None:
    assert pinned.status(f"/v2/models/{MODEL}/versions/2/ready") == 200
    assert pinned.status(f"/v2/models/{MODEL}/versions/1/ready") != 200
    assert pinned.status(f"/v2/models/{MODEL}/versions/3/ready") != 200
    assert {v: s for v, s in version_states(pinned).items() if s == "READY"} == {2: "READY"}


def test_inference_is_answered_by_version_2(pinned: Running) -> None:
    assert infer(pinned).ravel().tolist() == [2, 2, 2, 2]
    assert infer(pinned, version="2", batch=1).ravel().tolist() == [2]
    with pytest.raises(InferenceServerException):
        infer(pinned, version="3", batch=1)


def test_a_pvc_repository_is_served_in_one_load(pinned: Running) -> None:
    log = pinned.proc.log()
    assert "through the overlay" in log
    assert f"loading: {MODEL}:{PINNED}" in log
    # Versions 1 and 3 were never loaded, and version 2 only once.
    assert f"loading: {MODEL}:1" not in log and f"loading: {MODEL}:3" not in log
    assert log.count(f"loading: {MODEL}:{PINNED}") == 1
    assert "reloading with only version" not in log


def test_config_pbtxt_settings_survive(pinned: Running) -> None:
    status, text = http_get(pinned.base + f"/v2/models/{MODEL}/config")
    assert status == 200, text
    config = json.loads(text)
    assert config["max_batch_size"] == 8
    assert config["parameters"]["sluice_marker"] == {"string_value": "from-config-pbtxt"}
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] in (500, "500")
    assert [i["name"] for i in config["input"]] == [MODEL_INPUT]
    assert [o["name"] for o in config["output"]] == [MODEL_OUTPUT]
    assert config["instance_group"][0]["kind"] == "KIND_CPU"


def test_metrics_show_version_2_with_quantiles(pinned: Running) -> None:
    args = pinned.container["args"]
    assert "--allow-metrics=true" in args and "--metrics-config=summary_latencies=true" in args
    for _ in range(20):
        infer(pinned, batch=1)

    def samples() -> list[Sample] | None:
        s = metric_samples(http_get(pinned.url("metrics", "/metrics"))[1])
        done = [
            v
            for n, lab, v in s
            if n == "nv_inference_request_success" and lab.get("version") == "2"
        ]
        return s if done and done[0] >= 20 else None

    s = until(samples, 60, "20 successful requests of version 2 in the metrics")
    series = {
        (n, lab.get("model"), lab.get("version"))
        for n, lab, _ in s
        if n.startswith("nv_inference_")
    }
    assert ("nv_inference_count", MODEL, "2") in series
    assert ("nv_inference_request_duration_us", MODEL, "2") in series
    assert not {v for _, m, v in series if m == MODEL} - {"2"}, "series of other versions"
    quantiles = {
        lab["quantile"]: v
        for n, lab, v in s
        if n == "nv_inference_request_summary_us"
        and lab.get("model") == MODEL
        and lab.get("version") == "2"
        and "quantile" in lab
    }
    assert {"0.5", "0.9", "0.95", "0.99"} <= set(quantiles), quantiles
    # Each request slept 2 ms in the model: the p99 of the request time is at least that.
    assert quantiles["0.99"] >= 2000


def test_sigterm_is_forwarded_and_nothing_is_left(pinned: Running) -> None:
    """Last in this module: it stops the shared server."""
    proc = pinned.proc
    tree = proc.tree()
    names = {
        Path(f"/proc/{p}/comm").read_text().strip() for p in tree if Path(f"/proc/{p}").exists()
    }
    assert "tritonserver" in names, names
    proc.signal(15)  # to the launcher alone; tritonserver hears of it only by forwarding
    rc = proc.wait(timeout=90)
    assert rc == 0, proc.log()[-3000:]
    log = proc.log()
    assert "tritonserver exited with 0" in log
    assert f"successfully unloaded '{MODEL}' version {PINNED}" in log  # a graceful stop
    until(lambda: not proc.leftovers(), 30, "every process of the pod to end")


# --------------------------------------------------------- load failures


def start_without_repository(
    local: LocalTriton, tmp: Path, retry_seconds: str
) -> tuple[Running, Path]:
    claim = tmp / "claim"
    claim.mkdir()
    spec = make_spec(local, "pvc://models/repo", env={"SLUICE_LOAD_RETRY_SECONDS": retry_seconds})
    variant = Variant(
        name="main", version=PINNED, image="x", repository="pvc://models/repo", replicas=1
    )
    running = run_rendered(rendered_pod(spec, variant), {"models": claim}, tmp / "pod.log")
    return running, claim


def failed_attempts(running: Running) -> int:
    return running.proc.log().count(f"to load {MODEL} version {PINNED} failed")


def test_a_missing_repository_is_retried_until_it_appears(
    local_triton: LocalTriton, tmp_path: Path
) -> None:
    running, claim = start_without_repository(local_triton, tmp_path, "1")
    try:
        until(
            lambda: running.alive_or_fail() and failed_attempts(running) >= 2,
            START_TIMEOUT,
            "two failed load attempts",
        )
        assert running.proc.running()
        assert http_get(running.probe("livenessProbe"))[0] == 200
        assert http_get(running.probe("readinessProbe"))[0] != 200
        make_model_repository(claim / "repo", versions=(1, 2, 3))
        until(
            lambda: running.alive_or_fail() and http_get(running.probe("readinessProbe"))[0] == 200,
            LOAD_TIMEOUT,
            "the pinned version to load once the repository exists",
        )
        assert infer(running, batch=1).ravel().tolist() == [PINNED]
        assert running.status(f"/v2/models/{MODEL}/versions/3/ready") != 200
    finally:
        rc = running.proc.stop()
    assert rc == 0
    assert not running.proc.leftovers()


def test_sigterm_interrupts_the_pause_between_attempts(
    local_triton: LocalTriton, tmp_path: Path
) -> None:
    running, _ = start_without_repository(local_triton, tmp_path, "3600")
    try:
        until(
            lambda: running.alive_or_fail() and failed_attempts(running) >= 1,
            START_TIMEOUT,
            "a failed load attempt",
        )
        running.proc.signal(15)
        rc = running.proc.wait(timeout=90)  # far less than the hour-long pause
        assert rc == 0, running.proc.log()[-3000:]
        assert failed_attempts(running) == 1
    finally:
        running.proc.stop()
    assert not running.proc.leftovers()


# -------------------------------------------------------- an S3 repository


@pytest.mark.parametrize(
    ("version", "reloads"),
    [(2, True), (3, False)],
    ids=["older-version-reloads", "latest-version-loads-once"],
)
def test_s3_compatible_repository(
    local_triton: LocalTriton, tmp_path: Path, version: int, reloads: bool
) -> None:
    make_model_repository(
        tmp_path / "store" / "models" / "prod" / "repo",
        versions=(1, 2, 3),
        parameters={"sluice_marker": "from-s3"},
    )
    secret = {"AWS_ACCESS_KEY_ID": "AKIASLUICETEST", "AWS_SECRET_ACCESS_KEY": "s3cr3t/key+x"}
    with S3Store(
        tmp_path / "store", secret["AWS_ACCESS_KEY_ID"], secret["AWS_SECRET_ACCESS_KEY"]
    ) as store:
        spec = make_spec(
            local_triton,
            "s3://models/prod/repo",
            version=version,
            credentialsSecret="model-store",
            s3={"endpoint": store.endpoint, "region": "eu-west-1"},
        )
        variant = Variant(
            name="main", version=version, image="x", repository="s3://models/prod/repo", replicas=1
        )
        pod = rendered_pod(spec, variant)
        running = run_rendered(pod, {}, tmp_path / "pod.log", secrets={"model-store": secret})
        try:
            assert f"--model-repository=s3://{store.endpoint}/models/prod/repo" in running.proc.argv
            until(
                lambda: (
                    running.alive_or_fail() and http_get(running.probe("readinessProbe"))[0] == 200
                ),
                LOAD_TIMEOUT,
                f"version {version} from the S3 store",
            )
            ready = {v for v, s in version_states(running).items() if s == "READY"}
            assert ready == {version}
            assert infer(running, batch=2).ravel().tolist() == [version, version]
            status, text = http_get(running.base + f"/v2/models/{MODEL}/config")
            assert status == 200, text
            config = json.loads(text)
            assert config["max_batch_size"] == 8
            assert config["parameters"]["sluice_marker"] == {"string_value": "from-s3"}
            assert config["version_policy"] == (
                {"specific": {"versions": [version]}}
                if reloads
                else {"latest": {"num_versions": 1}}
            )
            log = running.proc.log()
            assert ("reloading with only version" in log) is reloads, log[-3000:]
        finally:
            running.proc.stop()
        assert not running.proc.leftovers()
        # Triton read the store, every request signed with the Secret's key pair.
        assert any(p.endswith("config.pbtxt") for _, p, _ in store.requests)
        assert {k for _, _, k in store.requests} == {"AKIASLUICETEST"}
        assert not store.rejected, store.rejected[:3]
        assert http_get(f"{store.endpoint}/models/prod/repo/m/config.pbtxt")[0] == 403  # unsigned


# ------------------------------------------- why the launcher works as it does


def test_triton_replaces_config_pbtxt_with_a_load_override(
    local_triton: LocalTriton, tmp_path: Path
) -> None:
    """The fact the launcher is built on: an override is not merged into config.pbtxt.

    Should a Triton release start merging, this fails and the launcher can drop its
    overlay and reload steps.
    """
    repo = make_model_repository(tmp_path / "repo", parameters={"sluice_marker": "kept?"})
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    proc = Proc(
        argv=[
            str(local_triton.install.binary),
            f"--model-repository={repo}",
            "--model-control-mode=explicit",
            f"--backend-directory={local_triton.backends}",
            "--http-address=127.0.0.1",
            f"--http-port={http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={metrics_port}",
        ],
        env=triton_env(local_triton.install),
        log_path=tmp_path / "tritonserver.log",
    ).start()
    base = f"http://127.0.0.1:{http_port}"
    try:
        until(lambda: http_get(base + "/v2/health/live")[0] == 200, START_TIMEOUT, "live")
        # Nothing loaded: Triton cannot say what config.pbtxt holds.
        assert http_get(f"{base}/v2/models/{MODEL}/config")[0] == 404
        override = {"version_policy": {"specific": {"versions": [2]}}}
        status, text = http_post(
            f"{base}/v2/repository/models/{MODEL}/load",
            {"parameters": {"config": json.dumps(override)}},
            timeout=LOAD_TIMEOUT,
        )
        assert status == 200, text
        assert http_get(f"{base}/v2/models/{MODEL}/versions/2/ready")[0] == 200
        assert http_get(f"{base}/v2/models/{MODEL}/versions/3/ready")[0] != 200
        config = json.loads(http_get(f"{base}/v2/models/{MODEL}/config")[1])
        # config.pbtxt said max_batch_size 8, one input, one output, dynamic batching
        # and a parameter: none of it survived.
        assert config["max_batch_size"] == 0
        assert config["input"] == [] and config["output"] == []
        assert "dynamic_batching" not in config
        assert config["parameters"] == {}
    finally:
        proc.stop()
    assert not proc.leftovers()
