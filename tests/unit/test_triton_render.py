"""The rendered Triton container and the launcher's pure parts: no processes, no network."""

from __future__ import annotations

import ast
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from sluice.api.v1alpha1 import InferenceServiceSpec, parse_spec
from sluice.render import launcher, triton
from sluice.render.plan import Variant


def make_spec(repository: str = "pvc://models/repo", **extra: Any) -> InferenceServiceSpec:
    model = {"name": "resnet", "repository": repository, "version": 2, **extra.pop("model", {})}
    return parse_spec({"model": model, **extra})


def variant(repository: str = "pvc://models/repo", version: int = 2) -> Variant:
    return Variant(name="main", version=version, image="img:1", repository=repository, replicas=1)


def render(repository: str = "pvc://models/repo", **extra: Any) -> dict[str, Any]:
    return triton.container(make_spec(repository, **extra), variant(repository))


def env_of(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"]}


# ---------------------------------------------------------------------- args


def test_args_start_tritonserver_with_nothing_loaded_and_metrics_on() -> None:
    c = render()
    args = c["args"]
    assert args[0] == "tritonserver"
    assert "--model-control-mode=explicit" in args
    assert not [a for a in args if a.startswith("--load-model")]
    assert "--exit-on-error=false" in args  # a failed load must not end the server
    assert "--http-port=8000" in args and "--grpc-port=8001" in args
    assert "--metrics-port=8002" in args
    assert "--allow-metrics=true" in args
    assert "--metrics-config=summary_latencies=true" in args
    quantiles = [a for a in args if a.startswith("--metrics-config=summary_quantiles=")]
    assert len(quantiles) == 1
    assert {q.split(":")[0] for q in quantiles[0].split("=", 2)[2].split(",")} >= {"0.95", "0.99"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000,
        "grpc": 8001,
        "metrics": 8002,
    }


def test_user_args_come_after_sluices_own() -> None:
    args = render(triton={"args": ["--log-verbose=1", "--model-load-thread-count=2"]})["args"]
    assert args[-2:] == ["--log-verbose=1", "--model-load-thread-count=2"]


@pytest.mark.parametrize(
    ("repository", "s3", "expected"),
    [
        ("pvc://models/repo", None, "/mnt/models/repo"),
        ("pvc://models/a/b/", None, "/mnt/models/a/b"),
        ("pvc://models", None, "/mnt/models"),
        ("s3://bucket/path/to/repo", None, "s3://bucket/path/to/repo"),
        ("s3://bucket/repo", {"region": "eu-west-1"}, "s3://bucket/repo"),
        (
            "s3://bucket/repo",
            {"endpoint": "http://minio.storage:9000"},
            "s3://http://minio.storage:9000/bucket/repo",
        ),
        (
            "s3://bucket/repo",
            {"endpoint": "https://objects.example.com"},
            "s3://https://objects.example.com:443/bucket/repo",
        ),
        ("s3://bucket/repo", {"endpoint": "http://minio"}, "s3://http://minio:80/bucket/repo"),
        ("gs://bucket/repo", None, "gs://bucket/repo"),
        ("as://account/container/repo", None, "as://account/container/repo"),
    ],
)
def test_model_repository_per_kind(
    repository: str, s3: dict[str, str] | None, expected: str
) -> None:
    model = {"s3": s3} if s3 else {}
    c = render(repository, model=model)
    assert f"--model-repository={expected}" in c["args"]
    assert [a for a in c["args"] if a.startswith("--model-repository")] == [
        f"--model-repository={expected}"
    ]


# -------------------------------------------------------------------- probes


@pytest.mark.parametrize("timeout", [30, 1800, 1805, 86400])
def test_probes(timeout: int) -> None:
    c = render(triton={"startupTimeoutSeconds": timeout})
    ready = "/v2/models/resnet/versions/2/ready"
    for kind in ("startupProbe", "readinessProbe"):
        assert c[kind]["httpGet"] == {"path": ready, "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = c["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert timeout <= budget < timeout + startup["periodSeconds"]
    # Liveness starts only after the startup probe passed; it alone never restarts a
    # pod whose server answers, however long a load takes.
    live = c["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 30


def test_probe_path_follows_the_variant_version() -> None:
    spec = make_spec()
    c = triton.container(spec, variant(version=7))
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/resnet/versions/7/ready"
    assert env_of(c)["SLUICE_MODEL_VERSION"] == "7"


# ----------------------------------------------------------------------- env


def test_env_names_the_model_and_version_and_keeps_user_env_last() -> None:
    c = render(triton={"env": [{"name": "FOO", "value": "bar"}]})
    env = env_of(c)
    assert env["SLUICE_MODEL"] == "resnet"
    assert env["SLUICE_MODEL_VERSION"] == "2"
    assert c["env"][-1] == {"name": "FOO", "value": "bar"}
    assert "SLUICE_HTTP_PORT" not in env  # the launcher reads --http-port itself


@pytest.mark.parametrize(
    ("repository", "model", "env_from", "extra_env"),
    [
        (
            "s3://b/r",
            {"credentialsSecret": "s3-creds", "s3": {"region": "eu-west-1"}},
            "s3-creds",
            {"AWS_DEFAULT_REGION": "eu-west-1"},
        ),
        ("s3://b/r", {}, None, {}),
        ("as://acct/cont/r", {"credentialsSecret": "az"}, "az", {}),
        (
            "gs://b/r",
            {"credentialsSecret": "gcs"},
            None,
            {"GOOGLE_APPLICATION_CREDENTIALS": "/var/run/secrets/sluice/gcs/gcs.json"},
        ),
        ("gs://b/r", {}, None, {}),
        ("pvc://models/r", {"credentialsSecret": "unused"}, None, {}),
    ],
)
def test_credentials_per_kind(
    repository: str, model: dict[str, Any], env_from: str | None, extra_env: dict[str, str]
) -> None:
    c = render(repository, model=model)
    if env_from:
        assert c["envFrom"] == [{"secretRef": {"name": env_from}}]
    else:
        assert "envFrom" not in c
    env = env_of(c)
    assert {k: v for k, v in env.items() if not k.startswith("SLUICE_")} == extra_env


# ----------------------------------------------------------------- resources


def test_resources_whole_gpus() -> None:
    r = render(gpu={"count": 2}, triton={"resources": {"cpu": "8", "memory": "32Gi"}})["resources"]
    assert r["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    assert r["requests"] == r["limits"]  # Guaranteed


def test_resources_mig_slices() -> None:
    r = render(gpu={"count": 3, "migProfile": "1g.10gb"})["resources"]
    assert r["limits"]["nvidia.com/mig-1g.10gb"] == "3"
    assert "nvidia.com/gpu" not in r["limits"]
    assert r["requests"] == r["limits"]


def test_resources_cpu_only() -> None:
    r = render(gpu={"count": 0})["resources"]
    assert not [k for k in (*r["limits"], *r["requests"]) if k.startswith("nvidia.com/")]
    assert r["requests"] == r["limits"] == {"cpu": "4", "memory": "16Gi"}


# ------------------------------------------------------------------- volumes


def mounts_and_volumes(
    repository: str, model: dict[str, Any] | None = None
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    spec = make_spec(repository, model=model or {})
    v = variant(repository)
    c = triton.container(spec, v)
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    vols = {x["name"]: x for x in triton.volumes(spec, v)}
    assert set(mounts) == set(vols)  # every mount has its volume and no volume is unused
    return mounts, vols


def test_volumes_pvc_mounted_read_only() -> None:
    mounts, vols = mounts_and_volumes("pvc://team-models/resnet/repo")
    assert vols["model-repository"]["persistentVolumeClaim"] == {
        "claimName": "team-models",
        "readOnly": True,
    }
    assert mounts["model-repository"] == {
        "name": "model-repository",
        "mountPath": "/mnt/models",
        "readOnly": True,
    }
    args = triton.tritonserver_args(
        make_spec("pvc://team-models/resnet/repo"), variant("pvc://team-models/resnet/repo")
    )
    assert "--model-repository=/mnt/models/resnet/repo" in args


@pytest.mark.parametrize("repository", ["s3://b/r", "as://a/c/r", "gs://b/r"])
def test_volumes_remote_stores_mount_nothing_of_the_repository(repository: str) -> None:
    _, vols = mounts_and_volumes(repository)
    assert set(vols) == {"dshm"}


def test_volumes_gcs_credentials_file() -> None:
    mounts, vols = mounts_and_volumes("gs://b/r", {"credentialsSecret": "gcs-key"})
    assert vols["gcs-credentials"]["secret"] == {
        "secretName": "gcs-key",
        "items": [{"key": "gcs.json", "path": "gcs.json"}],
    }
    assert mounts["gcs-credentials"]["readOnly"] is True
    assert mounts["gcs-credentials"]["mountPath"] == "/var/run/secrets/sluice/gcs"


@pytest.mark.parametrize("repository", ["pvc://m/r", "s3://b/r", "gs://b/r", "as://a/c/r"])
def test_shared_memory_for_the_python_backend(repository: str) -> None:
    mounts, vols = mounts_and_volumes(repository)
    assert vols["dshm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["dshm"]["mountPath"] == "/dev/shm"


# ------------------------------------------------------------------ launcher


def test_command_embeds_the_launcher_verbatim() -> None:
    c = render()
    source = (Path(launcher.__file__)).read_text()
    assert c["command"] == ["python3", "-c", source]
    assert c["image"] == "img:1"


def test_launcher_uses_only_the_standard_library() -> None:
    tree = ast.parse(Path(launcher.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "relative import in the launcher"
            imported.add((node.module or "").split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_launcher_runs_on_the_python_of_older_triton_images() -> None:
    source = Path(launcher.__file__).read_text()
    ast.parse(source, feature_version=(3, 8))  # SyntaxError if newer syntax creeps in
    assert source.count("from __future__ import annotations") == 1


def test_launcher_fails_clearly_without_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_MODEL", raising=False)
    assert launcher.main(["tritonserver"]) == 2
    monkeypatch.setenv("SLUICE_MODEL", "m")
    monkeypatch.setenv("SLUICE_MODEL_VERSION", "2")
    installed: list[int] = []
    monkeypatch.setattr(signal, "signal", lambda s, _h: installed.append(s))  # keep pytest's
    assert launcher.main(["/nonexistent/tritonserver", "--model-repository=s3://b/r"]) == 127
    assert set(installed) == {signal.SIGTERM, signal.SIGINT}


def test_arg_value_both_forms_last_wins() -> None:
    argv = ["tritonserver", "--http-port=8000", "--x", "--http-port", "9000"]
    assert launcher.arg_value(argv, "--http-port") == "9000"
    assert launcher.arg_value(argv, "--grpc-port") is None


@pytest.mark.parametrize(
    ("args", "url"),
    [
        ([], "http://127.0.0.1:8000"),
        (["--http-port=18000"], "http://127.0.0.1:18000"),
        (["--http-address=0.0.0.0", "--http-port=1"], "http://127.0.0.1:1"),
        (["--http-address", "10.1.2.3", "--http-port", "2"], "http://10.1.2.3:2"),
        (["--http-address=::1"], "http://[::1]:8000"),
    ],
)
def test_launcher_talks_to_the_port_tritonserver_listens_on(args: list[str], url: str) -> None:
    assert launcher.base_url(["tritonserver", *args]) == url


def test_local_repository_is_recognised_and_replaced() -> None:
    argv = ["tritonserver", "--model-repository=/mnt/models/r", "--http-port=1"]
    assert launcher.local_repository(argv) == ("--model-repository", "/mnt/models/r")
    assert launcher.replace_arg(argv, "--model-repository", "/mnt/models/r", "/tmp/o") == [
        "tritonserver",
        "--model-repository=/tmp/o",
        "--http-port=1",
    ]
    assert launcher.local_repository(["tritonserver", "--model-repository=s3://b/r"]) is None
    assert launcher.local_repository(["tritonserver", "--model-repository=gs://b/r"]) is None


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "link" if p.is_symlink() else ("dir" if p.is_dir() else "file")
    return out


def test_overlay_shows_only_the_pinned_version(tmp_path: Path) -> None:
    src = tmp_path / "repo"
    for v in (1, 2, 3, 10):
        (src / "m" / str(v)).mkdir(parents=True)
        (src / "m" / str(v) / "model.py").write_text(str(v))
    (src / "m" / "config.pbtxt").write_text('name: "m"')
    (src / "m" / "labels.txt").write_text("a")
    (src / "pre").mkdir()  # another model, e.g. a step of an ensemble
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    for _ in range(2):  # rebuilt before every attempt
        launcher.build_overlay(str(src), str(overlay), "m", 2)
        assert sorted(os.listdir(overlay / "m")) == ["2", "config.pbtxt", "labels.txt"]
        assert (overlay / "m" / "2" / "model.py").read_text() == "2"
        assert (overlay / "pre").resolve() == (src / "pre").resolve()
        assert _tree(overlay)["m"] == "dir"
    assert (src / "m" / "1" / "model.py").exists()  # the source is untouched


def test_overlay_says_which_versions_exist(tmp_path: Path) -> None:
    (tmp_path / "repo" / "m" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "3").mkdir()
    (tmp_path / "o").mkdir()
    with pytest.raises(launcher.LoadError, match=r"version 2 not found .*versions there: 1, 3"):
        launcher.build_overlay(str(tmp_path / "repo"), str(tmp_path / "o"), "m", 2)
    with pytest.raises(launcher.LoadError, match="no model directory"):
        launcher.build_overlay(str(tmp_path / "repo"), str(tmp_path / "o"), "other", 2)


def test_exit_status_of_a_signalled_server() -> None:
    assert launcher.exit_status(0) == 0
    assert launcher.exit_status(3) == 3
    assert launcher.exit_status(-15) == 143
