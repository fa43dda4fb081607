#!/usr/bin/env python3
"""Small Python-backend Triton models for the local data plane.

    python hack/models.py DIR            # writes DIR/models/triton/demo (versions 1..3)

The layout is a model repository as the data plane resolves it:
``s3://models/triton`` -> ``DIR/models/triton``; the model ``demo`` answers every
request with its version number (INT32 ``VERSION``) after sleeping its service time.

Service times are parameters of config.pbtxt: ``sleep_ms`` for every version and
``sleep_ms_<v>`` for version ``v``; one model instance and ``max_batch_size: 1``, so
requests queue behind each other and tail latency grows with load, as on a busy GPU.
Edit config.pbtxt (or call :func:`write_model`) to change them; a version's new
service time applies to the pods started after the change.

Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

MODEL_INPUT = "INPUT0"
MODEL_OUTPUT = "VERSION"

MODEL_PY = '''\
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Answers with its version number after its service time (config parameters)."""

    def initialize(self, args):
        self.version = int(args["model_version"])
        params = json.loads(args["model_config"]).get("parameters", {})

        def param(key, default):
            return params.get(key, {}).get("string_value", default)

        ms = float(param("sleep_ms_%d" % self.version, param("sleep_ms", "0")))
        self.sleep_s = ms / 1000.0

    def execute(self, requests):
        responses = []
        for request in requests:
            if self.sleep_s:
                time.sleep(self.sleep_s)  # the model's service time, by design
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out = np.full((x.shape[0], 1), self.version, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("VERSION", out)]))
        return responses
'''

# The demo's model: versions 1 and 2 serve in 40 ms, version 3 is a slower build.
DEMO_SERVICE_MS = {1: 40.0, 2: 40.0, 3: 120.0}


def config_pbtxt(name: str, sleep_ms: Mapping[int, float], default_ms: float) -> str:
    params = {"sleep_ms": default_ms, **{f"sleep_ms_{v}": ms for v, ms in sleep_ms.items()}}
    lines = "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v:g}" }} }}\n'
        for k, v in params.items()
    )
    return (
        f'name: "{name}"\n'
        'backend: "python"\n'
        "max_batch_size: 1\n"
        f'input [ {{ name: "{MODEL_INPUT}" data_type: TYPE_FP32 dims: [ 1 ] }} ]\n'
        f'output [ {{ name: "{MODEL_OUTPUT}" data_type: TYPE_INT32 dims: [ 1 ] }} ]\n'
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
        f"{lines}"
    )


def write_model(
    repository: Path,
    name: str,
    sleep_ms: Mapping[int, float],
    versions: Sequence[int] | None = None,
    default_ms: float = 0.0,
) -> Path:
    """Write ``repository/<name>/`` with the given versions and service times."""
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, sleep_ms, default_ms))
    for v in versions or sorted(sleep_ms):
        (model_dir / str(v)).mkdir(exist_ok=True)
        (model_dir / str(v) / "model.py").write_text(MODEL_PY)
    return model_dir


def write_demo_models(root: Path) -> Path:
    """The default MODELS directory: ``root/models/triton/demo``."""
    write_model(root / "models" / "triton", "demo", DEMO_SERVICE_MS)
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    write_demo_models(args.dir)
    print(args.dir / "models" / "triton" / "demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
