"""A real tritonserver for tests: the one in the nvidia-pytriton wheel, run on the CPU.

- :func:`find_install` locates the wheel's tritonserver (``SLUICE_TRITONSERVER`` may
  point at another ``bin/tritonserver`` of the same layout) and fails loudly if absent.
- :func:`prepare_backends` builds a backend directory in a temporary path (symlinks to
  the wheel's Python backend plus the stub for this Python), so site-packages is never
  modified.
- :func:`make_model_repository` writes a model repository whose Python-backend model
  holds versions that answer with their own number, with optional latency and a gate
  file that holds the load until a test opens it.
- :class:`Proc` starts a process in its own session and stops it and every descendant
  by PID.
- :class:`S3Store` is a small S3-compatible store on 127.0.0.1 that serves a directory
  and checks AWS Signature V4 with one key pair: enough for Triton's ``s3://`` reader.

Every wait is a poll with a timeout (:func:`tests.support.wait.until`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from tests.support.wait import until

__all__ = [
    "MODEL_INPUT",
    "MODEL_OUTPUT",
    "Proc",
    "S3Store",
    "TritonInstall",
    "descendants",
    "find_install",
    "free_port",
    "http_get",
    "http_post",
    "make_model_repository",
    "prepare_backends",
    "repository_index",
    "triton_env",
    "until",
]

MODEL_OUTPUT = "VERSION"
MODEL_INPUT = "INPUT0"


# ----------------------------------------------------------------- the binary


@dataclass(frozen=True)
class TritonInstall:
    binary: Path  # .../pytriton/tritonserver/bin/tritonserver
    lib_dir: Path  # shared libraries the binary needs (LD_LIBRARY_PATH)
    python_backend: Path  # .../tritonserver/backends/python
    stub: Path  # triton_python_backend_stub for this Python

    @property
    def bin_dir(self) -> Path:
        return self.binary.parent

    def search_path(self) -> str:
        """PATH for a tritonserver process: its own bin, this venv's bin (python3), system."""
        return os.pathsep.join(
            [
                str(self.bin_dir),
                str(Path(sys.executable).parent),
                "/usr/local/bin",
                "/usr/bin",
                "/bin",
            ]
        )


def find_install() -> TritonInstall:
    """The nvidia-pytriton tritonserver, or an AssertionError that says how to get one."""
    given = os.environ.get("SLUICE_TRITONSERVER")
    if given:
        binary = Path(given)
    else:
        try:
            import pytriton  # type: ignore[import-untyped]
        except ImportError as e:
            raise AssertionError(
                "tritonserver not found: the test extra installs nvidia-pytriton==0.7.0 "
                "(pip install -e '.[test]'), or set SLUICE_TRITONSERVER to a tritonserver "
                f"binary ({e})"
            ) from e
        binary = Path(pytriton.__file__).parent / "tritonserver" / "bin" / "tritonserver"
    root = binary.parent.parent  # .../tritonserver
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=binary,
        lib_dir=root.parent.parent / "nvidia_pytriton.libs",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / py / "triton_python_backend_stub",
    )
    for what, p in [
        ("tritonserver binary", install.binary),
        ("its libraries", install.lib_dir),
        ("the Python backend", install.python_backend / "libtriton_python.so"),
        (f"the Python {py} backend stub", install.stub),
    ]:
        if not p.exists():
            raise AssertionError(f"tritonserver install incomplete: {what} missing at {p}")
    return install


def prepare_backends(install: TritonInstall, dest: Path) -> Path:
    """A --backend-directory under ``dest``: the wheel's Python backend plus its stub."""
    python = dest / "backends" / "python"
    python.mkdir(parents=True, exist_ok=True)
    for entry in install.python_backend.iterdir():
        if entry.name == "__pycache__":
            continue
        link = python / entry.name
        if not link.exists():
            link.symlink_to(entry)
    stub = python / install.stub.name
    if not stub.exists():
        shutil.copy2(install.stub, stub)  # the backend looks for it beside itself
    return dest / "backends"


def triton_env(install: TritonInstall) -> dict[str, str]:
    """What a tritonserver process from the wheel needs in its environment."""
    return {"LD_LIBRARY_PATH": str(install.lib_dir), "PATH": install.search_path()}


# ---------------------------------------------------------------- repository

_MODEL_PY = '''\
import json
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Answers with its version number; latency and load are steered by config params."""

    def initialize(self, args):
        self.version = int(args["model_version"])
        params = json.loads(args["model_config"]).get("parameters", {})
        self.sleep_s = float(params.get("sleep_ms", {}).get("string_value", "0")) / 1000.0
        gate = params.get("gate_file", {}).get("string_value", "")
        if gate:
            # Hold the load until the test creates the gate file (bounded).
            deadline = time.monotonic() + 600
            while not os.path.exists(gate):
                if time.monotonic() > deadline:
                    raise RuntimeError("gate file never appeared: " + gate)
                time.sleep(0.05)

    def execute(self, requests):
        if self.sleep_s:
            time.sleep(self.sleep_s)  # the model's service time, by design
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "{input}").as_numpy()
            out = np.full((x.shape[0], 1), self.version, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("{output}", out)]))
        return responses
'''.replace("{input}", MODEL_INPUT).replace("{output}", MODEL_OUTPUT)


def model_config_pbtxt(model: str, max_batch_size: int, parameters: Mapping[str, str]) -> str:
    params = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
        for k, v in parameters.items()
    )
    return (
        f'name: "{model}"\n'
        'backend: "python"\n'
        f"max_batch_size: {max_batch_size}\n"
        f'input [ {{ name: "{MODEL_INPUT}" data_type: TYPE_FP32 dims: [ 1 ] }} ]\n'
        f'output [ {{ name: "{MODEL_OUTPUT}" data_type: TYPE_INT32 dims: [ 1 ] }} ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
        "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
        f"{params}"
    )


def make_model_repository(
    root: Path,
    model: str = "m",
    versions: Sequence[int] = (1, 2, 3),
    max_batch_size: int = 8,
    sleep_ms: float = 0,
    gate_file: Path | None = None,
    parameters: Mapping[str, str] | None = None,
) -> Path:
    """Write ``root/<model>/{config.pbtxt,<v>/model.py}``; returns ``root``.

    Version ``v`` answers every request with the INT32 value ``v``. ``sleep_ms`` is
    slept in each execute; while ``gate_file`` does not exist, loads wait.
    """
    params = {"sleep_ms": str(sleep_ms), **(parameters or {})}
    if gate_file is not None:
        params["gate_file"] = str(gate_file)
    model_dir = root / model
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(model_config_pbtxt(model, max_batch_size, params))
    for v in versions:
        (model_dir / str(v)).mkdir(exist_ok=True)
        (model_dir / str(v) / "model.py").write_text(_MODEL_PY)
    return root


# ------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids = _children()
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Proc:
    """A process started in its own session, with its output in a log file."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    seen: set[int] = field(default_factory=set)  # every descendant PID ever observed

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    def tree(self) -> list[int]:
        """The live descendants now; remembered for :meth:`leftovers`."""
        pids = descendants(self.pid)
        self.seen.update(pids)
        return pids

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.running():
            self.tree()
            os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def leftovers(self) -> list[int]:
        return sorted(p for p in self.seen | set(descendants(self.pid)) if alive(p))

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, wait; then SIGKILL what is left, each by PID. Returns the exit code."""
        if self.popen is None:
            return None
        if self.running():
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        for pid in [self.pid, *self.leftovers()]:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        rc = self.popen.wait(timeout=30)
        until(lambda: not self.leftovers(), 30, f"the process tree of {self.argv[0]} to end")
        return rc


# ----------------------------------------------------------------------- HTTP


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def http_post(url: str, body: Any, timeout: float = 30.0) -> tuple[int, str]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def repository_index(base: str) -> list[dict[str, Any]]:
    status, text = http_post(f"{base}/v2/repository/index", {})
    assert status == 200, f"repository index answered {status}: {text}"
    index: list[dict[str, Any]] = json.loads(text)
    return index


# ------------------------------------------------------------- an S3 store


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _uri_encode(s: str) -> str:
    return urllib.parse.quote(s, safe="-_.~")


class S3Store:
    """An S3-compatible store on 127.0.0.1 serving ``root/<bucket>/<key>``, read-only.

    It answers what Triton's S3 reader asks (HeadBucket, ListObjectsV2, HeadObject,
    GetObject), path-style, and rejects any request not signed (AWS Signature V4) with
    ``access_key``/``secret_key``. ``requests`` records (method, path, access key).
    """

    def __init__(self, root: Path, access_key: str, secret_key: str) -> None:
        self.root = root
        self.access_key = access_key
        self.secret_key = secret_key
        self.requests: list[tuple[str, str, str]] = []
        self.rejected: list[tuple[str, str, str]] = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                store._serve(self, head=True)

            def do_GET(self) -> None:
                store._serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> S3Store:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    # -- signature

    def _check_signature(self, h: BaseHTTPRequestHandler) -> str | None:
        """The request's access key when its SigV4 signature is valid, else None."""
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return None
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
        try:
            access_key, date, region, service, _ = parts["Credential"].split("/")
            signed_headers = parts["SignedHeaders"]
            signature = parts["Signature"]
        except (KeyError, ValueError):
            return None
        if access_key != self.access_key:
            return None
        path, _, query = h.path.partition("?")
        pairs = []
        for item in query.split("&") if query else []:
            k, _, v = item.partition("=")
            pairs.append(
                (_uri_encode(urllib.parse.unquote(k)), _uri_encode(urllib.parse.unquote(v)))
            )
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))
        names = signed_headers.split(";")
        canonical_headers = "".join(
            f"{n}:{' '.join((h.headers.get(n) or '').split())}\n" for n in names
        )
        payload = h.headers.get("x-amz-content-sha256") or hashlib.sha256(b"").hexdigest()
        canonical = "\n".join(
            [h.command, path, canonical_query, canonical_headers, signed_headers, payload]
        )
        amz_date = h.headers.get("x-amz-date", "")
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = _hmac(("AWS4" + self.secret_key).encode(), date)
        for part in (region, service, "aws4_request"):
            key = _hmac(key, part)
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return access_key if hmac.compare_digest(expected, signature) else None

    # -- requests

    def _reply(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        head: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        key_id = self._check_signature(h)
        path, _, query = h.path.partition("?")
        if key_id is None:
            self.rejected.append((h.command, h.path, h.headers.get("Authorization", "")))
            body = b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            self._reply(h, 403, body, head, {"Content-Type": "application/xml"})
            return
        self.requests.append((h.command, h.path, key_id))
        bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
        base = self.root / bucket
        if not bucket or not base.is_dir():
            self._reply(h, 404, b"<Error><Code>NoSuchBucket</Code></Error>", head)
        elif not key:
            params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
            body = b"" if head else self._list(bucket, base, params)
            self._reply(h, 200, body, head, {"Content-Type": "application/xml"})
        else:
            f = base / key
            if not f.is_file() or ".." in Path(key).parts:
                self._reply(h, 404, b"<Error><Code>NoSuchKey</Code></Error>", head)
                return
            data = f.read_bytes()
            headers = {
                "Content-Type": "application/octet-stream",
                "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                "Last-Modified": formatdate(f.stat().st_mtime, usegmt=True),
            }
            self._reply(h, 200, data, head, headers)

    def _list(self, bucket: str, base: Path, params: Mapping[str, str]) -> bytes:
        prefix = params.get("prefix", "")
        delimiter = params.get("delimiter", "")
        url_encoded = params.get("encoding-type") == "url"
        keys = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
        contents: list[str] = []
        common: set[str] = set()
        for k in keys:
            if not k.startswith(prefix):
                continue
            rest = k[len(prefix) :]
            if delimiter and delimiter in rest:
                common.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            st = (base / k).stat()
            modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC)
            name = urllib.parse.quote(k, safe="/") if url_encoded else k
            contents.append(
                f"<Contents><Key>{escape(name)}</Key>"
                f"<LastModified>{modified.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</LastModified>"
                f'<ETag>"{hashlib.md5((base / k).read_bytes()).hexdigest()}"</ETag>'
                f"<Size>{st.st_size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            )
        prefixes = "".join(
            f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in sorted(common)
        )
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
            f"<KeyCount>{len(contents) + len(common)}</KeyCount><MaxKeys>1000</MaxKeys>"
            + (f"<Delimiter>{escape(delimiter)}</Delimiter>" if delimiter else "")
            + ("<EncodingType>url</EncodingType>" if url_encoded else "")
            + "<IsTruncated>false</IsTruncated>"
            + "".join(contents)
            + prefixes
            + "</ListBucketResult>"
        )
        return xml.encode()
