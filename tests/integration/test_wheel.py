"""What the Dockerfile does, without Docker: build the wheel from the image's build
context only, install it into a clean virtualenv, and run ``sluice`` from there."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def build_context(dst: Path) -> Path:
    """The files the Dockerfile's build stage COPYs, and nothing else."""
    text = (REPO / "Dockerfile").read_text()
    build_stage = text.split("FROM ", 2)[1]
    copies = re.findall(r"^COPY\s+(?!--)(.+)$", build_stage, re.M)
    assert copies, "the build stage copies nothing"
    dst.mkdir(parents=True)
    for line in copies:
        *srcs, _dst = line.split()
        for src in srcs:
            s = REPO / src
            if s.is_dir():
                shutil.copytree(s, dst / src, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(s, dst / src)
    return dst


def run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    ctx = build_context(tmp / "context")
    dist = tmp / "dist"
    # The Dockerfile's `pip wheel --no-deps --wheel-dir /dist .`: an isolated PEP 517 build.
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", dist, ".", cwd=ctx)
    wheels = list(dist.glob("sluice-*.whl"))
    assert len(wheels) == 1, wheels
    env = tmp / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env)
    run(env / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheels[0])
    return env


def test_wheel_carries_the_package_data_and_no_tests(installed: Path) -> None:
    wheel = next((installed.parent / "dist").glob("sluice-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sluice/cli.py" in names and "sluice/leader.py" in names
    assert any(n.startswith("sluice/render/templates/") and n.endswith(".j2") for n in names)
    assert not [n for n in names if n.startswith("tests/")]
    meta = next(n for n in names if n.endswith("/METADATA"))
    requires = zipfile.ZipFile(wheel).read(meta).decode()
    assert "Requires-Dist: prometheus-client" in requires
    assert "Requires-Dist: kopf" in requires


def test_sluice_runs_from_the_clean_virtualenv(installed: Path) -> None:
    sluice = installed / "bin" / "sluice"
    out = run(sluice, "--help").stdout
    for sub in ("crd", "render", "run"):
        assert sub in out
    run_help = run(sluice, "run", "--help").stdout
    assert "--standalone" in run_help and "--metrics-port" in run_help
    # The installed copy, not this checkout, answers.
    where = run(installed / "bin" / "python", "-c", "import sluice; print(sluice.__file__)")
    assert where.stdout.strip().startswith(str(installed))
    run(installed / "bin" / "python", "-c", "import sluice.operator_main, sluice.observability")


def test_installed_sluice_generates_the_crd_and_renders_a_sample(installed: Path) -> None:
    sluice = installed / "bin" / "sluice"
    assert (
        run(sluice, "crd").stdout
        == (REPO / "crds" / "sluice.dev_inferenceservices.yaml").read_text()
    )
    sample = REPO / "manifests" / "samples" / "resnet50-h100.yaml"
    objs = list(yaml.safe_load_all(run(sluice, "render", "-f", sample).stdout))
    assert {"Deployment", "Service"} <= {o["kind"] for o in objs}
