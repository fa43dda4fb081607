"""Sluice's in-pod launcher: run tritonserver and make it serve exactly one model version.

This file's source is embedded verbatim in the rendered Triton container as
``python3 -c <source> tritonserver <args...>`` (Triton images ship python3), so it
uses only the standard library, never imports ``sluice``, and keeps to Python 3.8
syntax (annotations are never evaluated).

What it does, in order:

1. Starts ``tritonserver <args...>``. Sluice renders ``--model-control-mode=explicit``,
   so the server loads nothing by itself.
2. Waits until ``/v2/health/live`` answers 200.
3. Loads ``$SLUICE_MODEL`` so that version ``$SLUICE_MODEL_VERSION`` and no other is
   ready, with the settings of the repository's ``config.pbtxt`` (see below).
4. If that fails (repository unreachable, version missing, load error) it logs Triton's
   answer, pauses ``$SLUICE_LOAD_RETRY_SECONDS`` (default 10) and tries again, for as long
   as the server runs. A failed load never ends the launcher: the pod stays unready and
   the startup probe's budget (spec.triton.startupTimeoutSeconds) decides when to give up.
5. Forwards SIGTERM and SIGINT to tritonserver, stops loading, and exits with the
   server's exit status (128+N when the server died of signal N).

How the version is pinned, and why this way
-------------------------------------------
Triton chooses which versions to load from the model config's ``version_policy``
(default: the latest version only), and no command-line flag chooses another. Its load
API (``POST /v2/repository/models/<m>/load``) accepts a config override, but the
override *replaces* config.pbtxt; nothing is merged. Measured on Triton 2.51: an
override holding only ``version_policy`` loaded the model with ``max_batch_size`` 0, no
inputs or outputs, no ``dynamic_batching`` and no ``parameters``, although config.pbtxt
set all of them. Triton also cannot report a model's config without loading a version
of it (``GET /v2/models/<m>/config`` is 404 for an unloaded model). Hence two paths:

* Local repository (a ``pvc://`` claim mounted in the pod, or any path without a
  scheme). The launcher points tritonserver at an overlay repository of symlinks, built
  in a temporary directory and refreshed before every attempt: every entry of the real
  repository appears in it (ensembles need their composing models), except that the
  model's own directory shows config.pbtxt and all other files but only the pinned
  version's numbered directory. A plain load (no override) then loads exactly that
  version with config.pbtxt as written. One load; no other version is read or run.

* Remote repository (``s3://``, ``gs://``, ``as://``), which only Triton can read. The
  launcher loads the model without override, so Triton applies config.pbtxt's own
  version policy. If exactly the pinned version is ready, it is done (one load; the
  usual case for a variant that serves the newest version). Otherwise it reads back the
  config Triton derived from config.pbtxt (``GET /v2/models/<m>/config``), unloads the
  model and waits until it is gone, and loads again with that config and
  ``version_policy: {specific: {versions: [N]}}``. The cost is one extra load of the
  version config.pbtxt selects (for large models: its download and its load time) and a
  dependency on that version being loadable. Unloading in between keeps at most one
  version in memory (a reload in place would hold both). A repository path per variant
  holding only the wanted version avoids the extra load.

If the overlay cannot be built (no writable temporary directory), a local repository
is served through the remote path, and the log says so.

Environment:
  SLUICE_MODEL                model name (its directory name in the repository)
  SLUICE_MODEL_VERSION        version to serve
  SLUICE_LOAD_RETRY_SECONDS   pause between failed load attempts (default 10)

The HTTP port and address the launcher talks to are read from the tritonserver
arguments (``--http-port``, ``--http-address``); the repository from
``--model-repository``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

UNLOAD_WAIT_SECONDS = 600.0


def log(msg: str) -> None:
    sys.stderr.write(f"[sluice-launcher] {msg}\n")
    sys.stderr.flush()


class LoadError(Exception):
    pass


# ------------------------------------------------------------------ arguments


def arg_value(argv: list[str], name: str) -> str | None:
    """The last value of ``--name=value`` or ``--name value`` in argv, else None."""
    value = None
    for i, a in enumerate(argv):
        if a.startswith(name + "="):
            value = a[len(name) + 1 :]
        elif a == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def replace_arg(argv: list[str], name: str, old: str, new: str) -> list[str]:
    """argv with every ``--name`` whose value is ``old`` given ``new`` instead."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == name + "=" + old:
            out[i] = name + "=" + new
        elif a == name and i + 1 < len(out) and out[i + 1] == old:
            out[i + 1] = new
    return out


def base_url(argv: list[str]) -> str:
    port = arg_value(argv, "--http-port") or "8000"
    host = arg_value(argv, "--http-address") or ""
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def local_repository(argv: list[str]) -> tuple[str, str] | None:
    """The --model-repository value when it is a local path, else None."""
    for name in ("--model-repository", "--model-store"):
        repo = arg_value(argv, name)
        if repo is not None:
            return (name, repo) if "://" not in repo else None
    return None


# ---------------------------------------------------------------------- HTTP


def http(method: str, url: str, body: Any = None, timeout: float | None = 30.0) -> tuple[int, str]:
    """(status, text); status 0 when the server could not be reached."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as e:
        return 0, str(e)


def short(text: str) -> str:
    return " ".join(text.split())[:600]


def load(base: str, model: str, config: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {}
    if config is not None:
        body = {"parameters": {"config": json.dumps(config)}}
    # No timeout: loading a large model can take many minutes. The call returns when
    # the load ends, or fails when the server goes away.
    status, text = http("POST", f"{base}/v2/repository/models/{model}/load", body, None)
    if status != 200:
        raise LoadError(f"load answered {status}: {short(text)}")


def model_states(base: str, model: str) -> dict[int, str]:
    """{version: state} of the model's versions that Triton knows about."""
    status, text = http("POST", f"{base}/v2/repository/index", {})
    if status != 200:
        raise LoadError(f"repository index answered {status}: {short(text)}")
    states: dict[int, str] = {}
    for entry in json.loads(text or "[]"):
        if entry.get("name") == model and entry.get("version"):
            states[int(entry["version"])] = str(entry.get("state", ""))
    return states


def ready_versions(base: str, model: str) -> list[int]:
    return sorted(v for v, s in model_states(base, model).items() if s == "READY")


def unload(base: str, model: str, proc: subprocess.Popen[bytes]) -> None:
    """Unload the model and wait until none of its versions is in memory."""
    http("POST", f"{base}/v2/repository/models/{model}/unload", {})
    deadline = time.monotonic() + UNLOAD_WAIT_SECONDS
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            states = model_states(base, model)
        except Exception:  # an odd answer: nothing more to wait for
            return
        if not any(s in ("READY", "LOADING", "UNLOADING") for s in states.values()):
            return
        time.sleep(0.2)


# ------------------------------------------------------------ local overlay


def clear_dir(path: str) -> None:
    for name in os.listdir(path):
        p = os.path.join(path, name)
        if os.path.islink(p) or not os.path.isdir(p):
            os.unlink(p)
        else:
            shutil.rmtree(p)


def is_version_dir(path: str, name: str) -> bool:
    return name.isdigit() and os.path.isdir(path)


def build_overlay(source: str, overlay: str, model: str, version: int) -> None:
    """Make ``overlay`` show ``source`` with only ``version`` of ``model``."""
    model_dir = os.path.join(source, model)
    if not os.path.isdir(model_dir):
        raise LoadError(f"no model directory {model_dir}")
    names = sorted(os.listdir(model_dir))
    versions = [n for n in names if is_version_dir(os.path.join(model_dir, n), n)]
    wanted = [n for n in versions if int(n) == version]
    if not wanted:
        there = ", ".join(versions) or "none"
        raise LoadError(f"version {version} not found in {model_dir} (versions there: {there})")
    clear_dir(overlay)
    for name in os.listdir(source):
        if name != model:
            os.symlink(os.path.join(source, name), os.path.join(overlay, name))
    os.mkdir(os.path.join(overlay, model))
    for name in names:
        if name in versions and name not in wanted:
            continue
        os.symlink(os.path.join(model_dir, name), os.path.join(overlay, model, name))


# ------------------------------------------------------------------- pinning


def pin(base: str, model: str, version: int, proc: subprocess.Popen[bytes]) -> str:
    """Load ``model`` so that only ``version`` is ready; returns a description."""
    load(base, model)
    ready = ready_versions(base, model)
    if ready == [version]:
        return f"version {version} ready with the repository's config"
    # config.pbtxt's own policy chose other versions: read back the config Triton built
    # from config.pbtxt, then load again with only the version policy changed.
    status, text = http("GET", f"{base}/v2/models/{model}/config")
    if status != 200:
        raise LoadError(f"reading the model config answered {status}: {short(text)}")
    config: dict[str, Any] = json.loads(text)
    config["version_policy"] = {"specific": {"versions": [version]}}
    log(
        f"config.pbtxt's version policy loaded versions {ready or 'none'}; "
        f"reloading with only version {version}"
    )
    unload(base, model, proc)
    load(base, model, config)
    ready = ready_versions(base, model)
    if ready != [version]:
        raise LoadError(f"after the pinned load the ready versions are {ready}")
    return f"version {version} ready with the repository's config and a specific version policy"


def wait_live(base: str, proc: subprocess.Popen[bytes], stop: list[int]) -> bool:
    while proc.poll() is None and not stop:
        status, _ = http("GET", base + "/v2/health/live", timeout=2.0)
        if status == 200:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
    return False


def exit_status(rc: int) -> int:
    return 128 - rc if rc < 0 else rc


def main(argv: list[str]) -> int:
    if not argv:
        log("usage: launcher tritonserver <args...>")
        return 2
    try:
        model = os.environ["SLUICE_MODEL"]
        version = int(os.environ["SLUICE_MODEL_VERSION"])
        retry = float(os.environ.get("SLUICE_LOAD_RETRY_SECONDS") or "10")
    except (KeyError, ValueError) as e:
        log(f"bad environment (SLUICE_MODEL, SLUICE_MODEL_VERSION): {e!r}")
        return 2

    source: str | None = None
    overlay: str | None = None
    local = local_repository(argv)
    if local is not None:
        flag, source = local
        try:
            overlay = tempfile.mkdtemp(prefix="sluice-repo-")
            argv = replace_arg(argv, flag, source, overlay)
            log(f"serving {model} from {source} through the overlay {overlay}")
        except OSError as e:
            log(f"cannot build an overlay ({e}); pinning through a config override")
            overlay = None
    base = base_url(argv)
    stop: list[int] = []
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        stop.append(signum)
        for p in started:
            if p.poll() is None:
                p.send_signal(signum)

    # Handlers first, so that a signal arriving while the server starts is not lost.
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, forward)
    try:
        proc = subprocess.Popen(argv)
    except OSError as e:
        log(f"cannot start {argv[0]}: {e}")
        return 127
    started.append(proc)
    if stop:
        proc.send_signal(stop[0])

    try:
        if wait_live(base, proc, stop):
            attempt = 0
            while proc.poll() is None and not stop:
                attempt += 1
                try:
                    if overlay is not None and source is not None:
                        build_overlay(source, overlay, model, version)
                    log(f"{model}: {pin(base, model, version, proc)}")
                    break
                except Exception as e:  # whatever went wrong, the next attempt may work
                    if stop or proc.poll() is not None:
                        break
                    log(
                        f"attempt {attempt} to load {model} version {version} failed: {e}; "
                        f"retrying in {retry:g}s"
                    )
                    unload(base, model, proc)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=retry)
        rc = proc.wait()
    finally:
        if overlay is not None:
            shutil.rmtree(overlay, ignore_errors=True)
    log(f"tritonserver exited with {rc}")
    return exit_status(rc)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
