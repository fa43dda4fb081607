"""The Triton container of each pod: command, ports, probes and model source.

Pure functions of the spec and the variant. The Deployment template places
their results; ``tests/integration/test_triton_dataplane.py`` runs the container
exactly as rendered against a real tritonserver.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from ..api.v1alpha1 import InferenceServiceSpec
from .plan import Variant

HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002

PVC_MOUNT = "/mnt/models"
GCS_CREDENTIALS_DIR = "/var/run/secrets/sluice/gcs"
SHM_SIZE = "1Gi"

# Probes: the startup probe gives the load its whole budget; liveness only
# asks whether the server process answers, so a long load is never killed by
# it; readiness asks for exactly the pinned version.
PROBE_PERIOD = 10

# preStop: keep serving while endpoints and gateways drop the pod (EndpointSlices mark a
# deleted pod not ready at once; proxies follow within seconds), then SIGTERM. Without
# it Triton unloads while still receiving traffic and answers 400 (triton#6939).
DRAIN_SECONDS = 10

# Quantile:allowed-error pairs of nv_inference_request_summary_us and the other
# summaries; p95 and p99 are the autoscaler's and the canary analysis's signals.
SUMMARY_QUANTILES = "0.5:0.05,0.9:0.01,0.95:0.001,0.99:0.001"


@cache
def launcher_source() -> str:
    return resources.files("sluice.render").joinpath("launcher.py").read_text()


def model_repository(spec: InferenceServiceSpec, variant: Variant) -> str:
    """The --model-repository value Triton gets for this variant."""
    repo = variant.repository
    if repo.startswith("pvc://"):
        _claim, _, path = repo[len("pvc://") :].partition("/")
        return f"{PVC_MOUNT}/{path}".rstrip("/") if path else PVC_MOUNT
    if repo.startswith("s3://") and spec.model.s3 and spec.model.s3.endpoint:
        return f"s3://{s3_endpoint(spec.model.s3.endpoint)}/{repo[len('s3://') :]}"
    return repo


def s3_endpoint(endpoint: str) -> str:
    """``scheme://host:port`` for Triton's ``s3://<scheme>://<host>:<port>/<bucket>`` form.

    Triton recognises a custom endpoint only with an explicit port, so the scheme's
    default port is added when the spec leaves it out.
    """
    scheme, _, host = endpoint.partition("://")
    if ":" in host:
        return endpoint
    return f"{endpoint}:{443 if scheme == 'https' else 80}"


def pvc_claim(repository: str) -> str | None:
    if not repository.startswith("pvc://"):
        return None
    return repository[len("pvc://") :].partition("/")[0]


def tritonserver_args(spec: InferenceServiceSpec, variant: Variant) -> list[str]:
    return [
        "tritonserver",
        f"--model-repository={model_repository(spec, variant)}",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--exit-on-error=false",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        "--metrics-config=summary_latencies=true",
        f"--metrics-config=summary_quantiles={SUMMARY_QUANTILES}",
        *spec.triton.args,
    ]


def container(spec: InferenceServiceSpec, variant: Variant) -> dict[str, Any]:
    model = spec.model.name
    ready_path = f"/v2/models/{model}/versions/{variant.version}/ready"
    startup_failures = max(1, -(-spec.triton.startup_timeout_seconds // PROBE_PERIOD))
    env: list[dict[str, Any]] = [
        {"name": "SLUICE_MODEL", "value": model},
        {"name": "SLUICE_MODEL_VERSION", "value": str(variant.version)},
    ]
    if variant.repository.startswith("s3://") and spec.model.s3 and spec.model.s3.region:
        env.append({"name": "AWS_DEFAULT_REGION", "value": spec.model.s3.region})
    if variant.repository.startswith("gs://") and spec.model.credentials_secret:
        env.append(
            {
                "name": "GOOGLE_APPLICATION_CREDENTIALS",
                "value": f"{GCS_CREDENTIALS_DIR}/gcs.json",
            }
        )
    # The parser refuses user variables that collide with these; should one slip
    # through (an object stored before the rule), Sluice's value wins and the list
    # keeps unique names: a duplicate would fail server-side apply.
    own = {e["name"] for e in env}
    env.extend({"name": e.name, "value": e.value} for e in spec.triton.env if e.name not in own)

    resources_: dict[str, Any] = {
        "cpu": spec.triton.resources.cpu,
        "memory": spec.triton.resources.memory,
    }
    if spec.gpu.count > 0:
        res_name = (
            f"nvidia.com/mig-{spec.gpu.mig_profile}" if spec.gpu.mig_profile else "nvidia.com/gpu"
        )
        # Extended resources must have requests equal to limits; stating both keeps
        # the pod Guaranteed and visible to anything that sums requests.
        resources_[res_name] = str(spec.gpu.count)
    limits = dict(resources_)

    c: dict[str, Any] = {
        "name": "triton",
        "image": variant.image,
        "command": ["python3", "-c", launcher_source()],
        "args": tritonserver_args(spec, variant),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": resources_, "limits": limits},
        "startupProbe": {
            "httpGet": {"path": ready_path, "port": "http"},
            "periodSeconds": PROBE_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": startup_failures,
        },
        "readinessProbe": {
            "httpGet": {"path": ready_path, "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 4,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "volumeMounts": volume_mounts(spec, variant),
    }
    if spec.model.credentials_secret and variant.repository.startswith(("s3://", "as://")):
        # AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (s3) or AZURE_STORAGE_ACCOUNT/
        # AZURE_STORAGE_KEY (as) straight from the Secret's keys.
        c["envFrom"] = [{"secretRef": {"name": spec.model.credentials_secret}}]
    return c


def volume_mounts(spec: InferenceServiceSpec, variant: Variant) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if pvc_claim(variant.repository):
        mounts.append({"name": "model-repository", "mountPath": PVC_MOUNT, "readOnly": True})
    if variant.repository.startswith("gs://") and spec.model.credentials_secret:
        mounts.append(
            {"name": "gcs-credentials", "mountPath": GCS_CREDENTIALS_DIR, "readOnly": True}
        )
    return mounts


def volumes(spec: InferenceServiceSpec, variant: Variant) -> list[dict[str, Any]]:
    vols: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}}
    ]
    claim = pvc_claim(variant.repository)
    if claim:
        vols.append(
            {
                "name": "model-repository",
                "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
            }
        )
    if variant.repository.startswith("gs://") and spec.model.credentials_secret:
        vols.append(
            {
                "name": "gcs-credentials",
                "secret": {
                    "secretName": spec.model.credentials_secret,
                    "items": [{"key": "gcs.json", "path": "gcs.json"}],
                },
            }
        )
    return vols
