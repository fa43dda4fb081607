"""The ``sluice.dev/v1alpha1`` InferenceService API: the single source of truth.

Defaults, bounds, descriptions and cross-field rules are declared here once.
``sluice crd`` generates ``crds/sluice.dev_inferenceservices.yaml`` from these
types, and a unit test fails when the committed file differs.

Defaults are applied by :func:`parse_spec`, never by the apiserver: a schema
default would rewrite the user's object and make GitOps tools show drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any

from . import validation as val
from .schema import Rule, SpecError, load, parse, spec_field, to_dict
from .validation import DNS_LABEL as DNS_LABEL
from .validation import DURATION as DURATION
from .validation import MODEL_NAME as MODEL_NAME
from .validation import REPOSITORY as REPOSITORY
from .validation import seconds as seconds

GROUP = "sluice.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ("tis", "sisvc")
API_VERSION = f"{GROUP}/{VERSION}"

MAIN_VARIANT = "main"
CANARY_VARIANT = "canary"
BASELINE_VARIANT = "baseline"  # the stable revision beside a canary (spec.rollout.baseline)
RESERVED_VARIANTS = (MAIN_VARIANT, CANARY_VARIANT)

DEFAULT_TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51

MIG_PROFILE = r"^[0-9]+g\.[0-9]+gb$"


# ----------------------------------------------------------------------- model


@dataclass(frozen=True, kw_only=True)
class S3Spec:
    """Settings for an S3 or S3-compatible model repository."""

    endpoint: str | None = spec_field(
        "Endpoint of an S3-compatible store, with scheme and port, for example "
        "http://minio.storage:9000. Empty for AWS S3 itself.",
        default=None,
        pattern=val.S3_ENDPOINT,
        max_length=253,
    )
    region: str | None = spec_field(
        "Region passed to Triton as AWS_DEFAULT_REGION.",
        default=None,
        pattern=r"^[-A-Za-z0-9_]+$",
        max_length=63,
    )


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The Triton model to serve: its name, where its repository is, and which version."""

    name: str = spec_field(
        "Model name as it appears in the Triton model repository (the folder name).",
        pattern=MODEL_NAME,
        max_length=128,
        rules=(val.MODEL_NAME_RULE,),
    )
    repository: str = spec_field(
        "Model repository URL. s3://bucket/path, gs://bucket/path and as://account/"
        "container/path are read by Triton natively; pvc://<claim>/<path> mounts the "
        "PersistentVolumeClaim read-only and serves from <path> inside it.",
        pattern=REPOSITORY,
        max_length=1024,
        rules=(val.REPOSITORY_RULE,),
    )
    version: int = spec_field(
        "The model version to serve (a numbered folder in the model's directory). Each "
        "pod loads exactly this version even if the repository holds others, and is "
        "ready only when it is loaded. Changing it rolls out the new version (as a "
        "canary when spec.rollout.strategy is Canary).",
        minimum=1,
    )
    credentials_secret: str | None = spec_field(
        "Name of a Secret in the same namespace with the store's credentials. Its keys "
        "become environment variables of the Triton container (AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY for s3://, AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY "
        "for as://); a key named gcs.json is mounted as the Google credentials file.",
        default=None,
        pattern=val.DNS_SUBDOMAIN,
        max_length=253,
    )
    s3: S3Spec | None = spec_field("Settings for s3:// repositories.", default=None)

    RULES = (
        Rule(
            cel="!has(self.s3) || self.repository.startsWith('s3://')",
            message="model.s3 applies only to an s3:// repository",
            check=lambda m: m.s3 is None or m.repository.startswith("s3://"),
            field_path="s3",
        ),
        Rule(
            cel="!self.repository.startsWith('pvc://') || "
            "self.repository.matches('^pvc://[a-z0-9]([-.a-z0-9]*[a-z0-9])?(/.*)?$')",
            message="a pvc:// repository must name a PersistentVolumeClaim: "
            "pvc://<claim-name>/<path>",
            check=lambda m: (
                not m.repository.startswith("pvc://")
                or re.match(r"^pvc://[a-z0-9]([-.a-z0-9]*[a-z0-9])?(/.*)?$", m.repository)
                is not None
            ),
            field_path="repository",
        ),
    )


@dataclass(frozen=True, kw_only=True)
class EnvVar:
    """An environment variable for the Triton container."""

    name: str = spec_field("Variable name.", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)
    value: str = spec_field("Variable value.", default="", max_length=4096)


@dataclass(frozen=True, kw_only=True)
class Resources:
    """CPU and memory for each Triton container (requests equal limits: Guaranteed QoS)."""

    cpu: str = spec_field(
        "CPU cores, as a Kubernetes quantity (for example 4 or 500m), from 1m to 1024.",
        default="4",
        int_or_string=True,
        pattern=val.CPU_QUANTITY,
        max_length=32,
        rules=(val.quantity_range("1m", "1024"),),
    )
    memory: str = spec_field(
        "Memory, as a Kubernetes quantity in bytes (for example 16Gi), from 1Mi to 64Ti. "
        "The milli suffix m is refused: 1m would be a thousandth of a byte.",
        default="16Gi",
        int_or_string=True,
        pattern=val.MEMORY_QUANTITY,
        max_length=32,
        rules=(val.quantity_range("1Mi", "64Ti"),),
    )


@dataclass(frozen=True, kw_only=True)
class TritonSpec:
    """How each Triton server container runs."""

    image: str = spec_field(
        "Triton server image, pinned to a tag or digest.",
        default=DEFAULT_TRITON_IMAGE,
        max_length=512,
        pattern=val.IMAGE,
    )
    resources: Resources = spec_field(
        "CPU and memory for each Triton container.", default_factory=Resources
    )
    args: tuple[str, ...] = spec_field(
        "Extra tritonserver arguments, appended after Sluice's own. Flags Sluice renders "
        "itself are refused (repository, model control mode, load-model, ports, "
        "allow-http/allow-metrics, strict readiness, exit-on-error and the "
        "summary_* metrics settings), abbreviations included: they would turn off the "
        "version pinning or blind the probes and the autoscaler.",
        default=(),
        max_items=64,
        pattern=val.PRINTABLE,
        max_length=1024,
        rules=(val.ARGS_RULE,),
    )
    env: tuple[EnvVar, ...] = spec_field(
        "Extra environment variables for the Triton container. SLUICE_MODEL and "
        "SLUICE_MODEL_VERSION are Sluice's (SLUICE_LOAD_RETRY_SECONDS is the user's to "
        "set); AWS_DEFAULT_REGION comes from model.s3.region and "
        "GOOGLE_APPLICATION_CREDENTIALS from model.credentialsSecret when those are set.",
        default=(),
        max_items=64,
        list_type="map",
        list_map_keys=("name",),
        rules=(val.ENV_RULE,),
    )
    startup_timeout_seconds: int = spec_field(
        "How long a pod may take to start and load its model before Kubernetes "
        "restarts it. Large models over slow storage need many minutes.",
        default=1800,
        minimum=30,
        maximum=86400,
    )


# ------------------------------------------------------------------------- gpu


@dataclass(frozen=True, kw_only=True)
class GpuSpec:
    """GPU placement for each pod."""

    count: int = spec_field(
        "GPUs per pod (nvidia.com/gpu), or MIG slices when migProfile is set. 0 runs "
        "the model on CPU nodes only: no GPU is requested and the GPU taint is not "
        "tolerated.",
        default=1,
        minimum=0,
        maximum=16,
    )
    products: tuple[str, ...] = spec_field(
        "Acceptable GPU products (the nvidia.com/gpu.product node label, for example "
        "NVIDIA-H100-80GB-HBM3). Pods are scheduled only on nodes with one of them. "
        "Empty: any GPU.",
        default=(),
        max_items=16,
        pattern=val.NONEMPTY_LABEL_VALUE,
    )
    mig_profile: str | None = spec_field(
        "A MIG profile such as 1g.10gb: pods request nvidia.com/mig-<profile> instead "
        "of whole GPUs.",
        default=None,
        pattern=MIG_PROFILE,
        max_length=32,
    )

    RULES = (
        Rule(
            cel="!has(self.migProfile) || !has(self.count) || self.count > 0",
            message="gpu.migProfile needs gpu.count >= 1 (the number of MIG slices per pod)",
            check=lambda g: g.mig_profile is None or g.count > 0,
            field_path="count",
        ),
        Rule(
            cel="!has(self.products) || size(self.products) == 0 || "
            "!has(self.count) || self.count > 0",
            message="gpu.products needs gpu.count >= 1: a CPU model (count 0) "
            "cannot ask for a GPU product",
            check=lambda g: not g.products or g.count > 0,
            field_path="products",
        ),
    )


# --------------------------------------------------------------------- scaling


@dataclass(frozen=True, kw_only=True)
class ScalingTarget:
    """The latency signal the autoscaler holds each variant to."""

    metric: str = spec_field(
        "Which signal: p99LatencyMs or p95LatencyMs (tail latency, the worst pod of the "
        "variant), avgLatencyMs (mean request latency over the variant), or queueTimeMs "
        "(mean time requests wait in Triton's queue).",
        enum=("p99LatencyMs", "p95LatencyMs", "avgLatencyMs", "queueTimeMs"),
        default="p99LatencyMs",
    )
    value: float = spec_field(
        "Target in milliseconds: scale up above it, down when well below it.",
        minimum=0.1,
        maximum=3600000,
    )


@dataclass(frozen=True, kw_only=True)
class ScalingBehavior:
    """How quickly replicas may change in one direction."""

    stabilization_seconds: int | None = spec_field(
        "The signal must call for this direction for this long before replicas change. "
        "Defaults: 0 for scale-up; for scale-down 300 (policy Proportional) or, policy "
        "Demand, twice the measured model-load time within 60..300 (a spare replica is "
        "kept about as long as getting it back takes).",
        default=None,
        minimum=0,
        maximum=86400,
    )
    max_step: int | None = spec_field(
        "At most this many replicas added (scaleUp: the surge bound) or removed (scaleDown) "
        "per decision. Defaults: policy Demand has no bound (it sizes the whole gap in one "
        "decision, within maxReplicas); policy Proportional moves 4 up, 1 down.",
        default=None,
        minimum=1,
        maximum=1000,
    )


@dataclass(frozen=True, kw_only=True)
class ScalingSpec:
    """Latency-SLO autoscaling. The operator writes each variant's replicas itself."""

    mode: str = spec_field(
        "Auto applies decisions; Observe computes and reports them (status and Events) "
        "without changing replicas; Off uses spec.replicas.",
        enum=("Auto", "Observe", "Off"),
        default="Auto",
    )
    min_replicas: int = spec_field(
        "Fewest replicas per variant.", default=1, minimum=1, maximum=1000
    )
    max_replicas: int = spec_field("Most replicas per variant.", minimum=1, maximum=1000)
    target: ScalingTarget = spec_field("The latency target.")
    policy: str = spec_field(
        "How replicas are sized. Demand (default): from the request rate and Triton's "
        "compute time per request through a queueing model (M/G/1) of the target latency, "
        "corrected online from the measured queue time, looking ahead over the measured "
        "model-load time; starting pods count as coming capacity. Proportional: the earlier "
        "rule, replicas x observed/target of the target signal, one bounded step at a time.",
        enum=("Demand", "Proportional"),
        default="Demand",
    )
    tolerance: float = spec_field(
        "No change while the signal is within this fraction of the target. Policy Demand: "
        "scale down only to a size whose predicted latency is at least this fraction below "
        "the target.",
        default=0.1,
        minimum=0,
        maximum=0.9,
    )
    warmup_seconds: int = spec_field(
        "Replicas created less than this long ago and not yet ready count as coming "
        "capacity. Policy Proportional: no further scale-up while they load, within this "
        "bound. Policy Demand: the longest model-load time it will assume from pods that "
        "are still loading.",
        default=600,
        minimum=0,
        maximum=86400,
    )
    scale_up: ScalingBehavior = spec_field("Scale-up behaviour.", default_factory=ScalingBehavior)
    scale_down: ScalingBehavior = spec_field(
        "Scale-down behaviour.", default_factory=ScalingBehavior
    )

    RULES = (
        Rule(
            cel="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            message="scaling.minReplicas must be <= scaling.maxReplicas",
            check=lambda s: s.min_replicas <= s.max_replicas,
            field_path="minReplicas",
        ),
    )

    @property
    def up_stabilization(self) -> int:
        v = self.scale_up.stabilization_seconds
        return 0 if v is None else v

    @property
    def down_stabilization(self) -> int:
        v = self.scale_down.stabilization_seconds
        return 300 if v is None else v

    @property
    def up_step(self) -> int:
        if self.scale_up.max_step:
            return self.scale_up.max_step
        return self.max_replicas if self.policy == "Demand" else 4

    @property
    def down_step(self) -> int:
        if self.scale_down.max_step:
            return self.scale_down.max_step
        return self.max_replicas if self.policy == "Demand" else 1


# -------------------------------------------------------------------- variants


@dataclass(frozen=True, kw_only=True)
class VariantModel:
    """What a variant changes about the model; unset fields come from spec.model."""

    version: int | None = spec_field("Model version this variant serves.", default=None, minimum=1)
    repository: str | None = spec_field(
        "Model repository of this variant.",
        default=None,
        pattern=REPOSITORY,
        max_length=1024,
        rules=(val.REPOSITORY_RULE,),
    )


@dataclass(frozen=True, kw_only=True)
class VariantTriton:
    """What a variant changes about the Triton server."""

    image: str | None = spec_field(
        "Triton image of this variant.", default=None, max_length=512, pattern=val.IMAGE
    )


@dataclass(frozen=True, kw_only=True)
class VariantSpec:
    """A fixed A/B variant served beside the main one, with its own Deployment."""

    name: str = spec_field(
        "Variant name, a DNS label. 'main' and 'canary' are reserved.",
        pattern=DNS_LABEL,
        max_length=20,
    )
    weight: int = spec_field(
        "Share of traffic in percent. The main variant receives 100 minus the sum.",
        minimum=0,
        maximum=100,
    )
    model: VariantModel = spec_field(
        "Model overrides for this variant.", default_factory=VariantModel
    )
    triton: VariantTriton = spec_field(
        "Triton overrides for this variant.", default_factory=VariantTriton
    )
    replicas: int | None = spec_field(
        "Replicas while autoscaling is off. Default: spec.replicas.",
        default=None,
        minimum=0,
        maximum=1000,
    )

    RULES = (
        Rule(
            cel="self.name != 'main' && self.name != 'canary'",
            message="variant names 'main' and 'canary' are reserved",
            check=lambda v: v.name not in RESERVED_VARIANTS,
            field_path="name",
        ),
    )


# --------------------------------------------------------------------- rollout


# The signals Sluice queries itself (sluice.policy.signals.SIGNALS): a custom
# signal may not take one of these names.
BUILTIN_SIGNALS = (
    "requestRate",
    "errorRate",
    "avgLatencyMs",
    "queueTimeMs",
    "p95LatencyMs",
    "p99LatencyMs",
    "computeTimeMs",
    "batchSize",
    "pendingRequests",
    "pendingGrowth",
    "requestRateNow",
    "requestRate1mAgo",
    "requestRate2mAgo",
    "requestRate3mAgo",
    "p95LatencyTypicalMs",
    "p99LatencyTypicalMs",
    "computeTimeNowMs",
    "batchSizeNow",
)


@dataclass(frozen=True, kw_only=True)
class CustomSignal:
    """A signal of your own, for example a business metric your model exports, judged
    like the built-in ones: one value per variant and rate window, compared window by
    window with a sequential test."""

    name: str = spec_field(
        "Signal name, shown in status, Events and sluice get (camelCase, not one of the "
        "built-in signal names).",
        pattern=r"^[a-z][a-zA-Z0-9]*$",
        max_length=40,
    )
    query: str = spec_field(
        "PromQL template. {selector} is replaced by the label matchers of this "
        "InferenceService and {window} by the rate window; the result must have one "
        "series per variant, keeping the namespace, inferenceservice and variant labels "
        "(aggregate with sum/max/avg by (namespace, inferenceservice, variant)).",
        min_length=1,
        max_length=4096,
    )
    direction: str = spec_field(
        "Which values are better: lower (a latency, a cost) or higher (a conversion rate, "
        "a score).",
        enum=("lower", "higher"),
        default="lower",
    )
    compare: str = spec_field(
        "Ratio judges log(candidate / baseline) per window (values must be positive; "
        "tolerance relative: 0.05 = 5 % worse); Difference judges candidate - baseline "
        "per window (any sign; tolerance in the signal's own unit).",
        enum=("Ratio", "Difference"),
        default="Ratio",
    )
    tolerance: float = spec_field(
        "Canary analysis: how much worse than the baseline is tolerated (Ratio: relative, "
        "Difference: absolute). Experiments report who is better and ignore it.",
        default=0.1,
        minimum=0,
        maximum=1000000,
    )

    RULES = (
        Rule(
            cel="!(self.name in [" + ", ".join(f"'{n}'" for n in BUILTIN_SIGNALS) + "])",
            message="a custom signal cannot take a built-in signal's name",
            check=lambda c: c.name not in BUILTIN_SIGNALS,
            field_path="name",
        ),
        Rule(
            cel="self.query.contains('{selector}')",
            message="a custom signal's query must contain {selector} (this service's "
            "label matchers), or it would read every service's series",
            check=lambda c: "{selector}" in c.query,
            field_path="query",
        ),
    )


def custom_signals_field(description: str) -> Any:
    """A list of custom signals, keyed by name (canary analysis and experiments)."""
    return spec_field(
        description, default=(), max_items=8, list_type="map", list_map_keys=("name",)
    )


@dataclass(frozen=True, kw_only=True)
class AnalysisSpec:
    """Checks a canary must pass at every step. Missing data never counts as a failure."""

    max_latency_ms: float | None = spec_field(
        "Kept for compatibility: the canary's latencies are judged against the baseline's "
        "(maxLatencyRatio), not against an absolute limit.",
        default=None,
        minimum=0.1,
    )
    max_latency_ratio: float = spec_field(
        "The canary's latencies (mean and the tail metric) may be at most this multiple of "
        "the baseline's (1.2 = up to 20% slower): the tolerance of the sequential test. The "
        "canary fails when it is slower than this with the stated confidence, and passes "
        "only when it is shown to be within it.",
        default=1.2,
        minimum=1,
        maximum=100,
    )
    max_error_rate: float = spec_field(
        "Kept for compatibility: the canary's error rate is judged against the baseline's "
        "(maxErrorRateIncrease), not against an absolute limit.",
        default=0.01,
        minimum=0,
        maximum=1,
    )
    max_error_rate_increase: float = spec_field(
        "The canary may fail at most this fraction of requests more than the baseline "
        "(0.01 = one percentage point): the tolerance of the sequential test on the two "
        "error rates, computed from Triton's success and failure counts.",
        default=0.01,
        minimum=0.0001,
        maximum=1,
    )
    confidence: float = spec_field(
        "Confidence of every verdict, valid however often the analysis looks (a sequential "
        "test, checked every control cycle). 0.99: a canary as good as the baseline is "
        "failed on a signal in at most 1% of rollouts.",
        default=0.99,
        minimum=0.8,
        maximum=0.9999,
    )
    min_samples: int = spec_field(
        "Requests each side (canary and baseline) must have served before a signal can "
        "pass. A clear regression fails earlier.",
        default=500,
        minimum=1,
        maximum=100000000,
    )
    min_request_rate: float = spec_field(
        "Kept for compatibility: a rate window with fewer than 20 requests on a side adds "
        "no evidence, and minSamples gates every verdict.",
        default=0.1,
        minimum=0,
    )
    failure_threshold: int = spec_field(
        "Unused since verdicts accumulate evidence over the rollout (a failed signal rolls "
        "back at once); kept for compatibility.",
        default=3,
        minimum=1,
        maximum=100,
    )
    progress_deadline: str = spec_field(
        "How long a step may wait for a conclusive analysis. A canary that is not ready "
        "and observed by then is rolled back; one whose analysis is still inconclusive "
        "is handled as onInconclusive says.",
        default="30m",
        pattern=DURATION,
        max_length=val.DURATION_MAX_LENGTH,
        rules=(val.duration_range("1s", "168h"),),
    )
    on_inconclusive: str = spec_field(
        "What a rollout whose analysis is still inconclusive at the progress deadline "
        "does. Pause (default) holds the canary at its weight, says why with the numbers "
        "(status.rollout.awaitingDecision, a Warning Event) and waits: the evidence "
        "still decides (a Fail rolls back, a Pass moves on), or sluice promote / sluice "
        "abort do (Argo Rollouts pauses on an Inconclusive analysis the same way). "
        "Rollback rolls it back.",
        enum=("Pause", "Rollback"),
        default="Pause",
    )
    custom_signals: tuple[CustomSignal, ...] = custom_signals_field(
        "Signals of your own (PromQL), judged with the built-in ones: a canary fails when "
        "it is worse than a custom signal's tolerance with the stated confidence."
    )


@dataclass(frozen=True, kw_only=True)
class RolloutSpec:
    """How a change of model version or image reaches traffic."""

    strategy: str = spec_field(
        "Rolling replaces pods in place, new ones ready before old ones go. Canary starts "
        "the change as a separate variant and moves traffic to it through steps while "
        "analysis passes; needs spec.router.",
        enum=("Rolling", "Canary"),
        default="Rolling",
    )
    steps: tuple[int, ...] = spec_field(
        "Canary traffic percentages, increasing. After the last step the canary is promoted.",
        default=(10, 25, 50),
        min_items=1,
        max_items=20,
        minimum=1,
        maximum=99,
    )
    interval: str = spec_field(
        "Time at each step before the next analysis decides, for example 60s or 2m.",
        default="60s",
        pattern=DURATION,
        max_length=val.DURATION_MAX_LENGTH,
        rules=(val.duration_range("1s", "24h"),),
    )
    analysis: AnalysisSpec = spec_field(
        "Checks the canary must pass.", default_factory=AnalysisSpec
    )
    baseline: bool = spec_field(
        "Run a baseline variant beside the canary: the stable revision with the canary's "
        "replicas and traffic share, started and removed with it, so canary and baseline "
        "see the same per-pod load and the comparison is like with like (Kayenta's "
        "design). false compares the canary with the main variant, at whatever load each "
        "has.",
        default=True,
    )
    paused: bool = spec_field(
        "Hold the rollout where it is: no step, no promotion (evidence still accumulates "
        "and a failed signal still rolls back). A declarative state, kept in git; remove "
        "it (or set false) to resume. sluice pause|resume NAME set it.",
        default=False,
    )

    RULES = (
        Rule(
            cel="!has(self.steps) || (self.steps.isSorted() && "
            "self.steps.all(s, self.steps.exists_one(t, t == s)))",
            message="rollout.steps must be strictly increasing",
            check=lambda r: list(r.steps) == sorted(set(r.steps)),
            field_path="steps",
        ),
    )

    @property
    def interval_seconds(self) -> float:
        return seconds(self.interval)


# ---------------------------------------------------------------------- router


@dataclass(frozen=True, kw_only=True)
class GatewayRef:
    """The Gateway API Gateway the HTTPRoute attaches to."""

    name: str = spec_field("Gateway name.", pattern=DNS_LABEL, max_length=63)
    namespace: str | None = spec_field(
        "Gateway namespace. Default: the InferenceService's namespace.",
        default=None,
        pattern=DNS_LABEL,
        max_length=63,
    )
    section_name: str | None = spec_field(
        "Listener name on the Gateway.", default=None, pattern=DNS_LABEL, max_length=63
    )


@dataclass(frozen=True, kw_only=True)
class HeaderMatch:
    """Requests carrying this header go to one variant, whatever the weights (sticky A/B)."""

    header: str = spec_field(
        "Header name.", pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", max_length=256
    )
    value: str = spec_field("Exact header value.", min_length=1, max_length=4096)
    variant: str = spec_field("Variant that serves matching requests.", pattern=DNS_LABEL)


@dataclass(frozen=True, kw_only=True)
class MirrorSpec:
    """Copies of requests sent to a variant whose responses are discarded."""

    variant: str = spec_field("Variant that receives the mirrored requests.", pattern=DNS_LABEL)
    percent: int = spec_field(
        "Percentage of requests mirrored.", default=100, minimum=1, maximum=100
    )


@dataclass(frozen=True, kw_only=True)
class RouterSpec:
    """Traffic routing through a Gateway API HTTPRoute, one backend per variant."""

    gateway: GatewayRef = spec_field("The Gateway to attach to.")
    hostnames: tuple[str, ...] = spec_field(
        "Hostnames the route answers for. Empty: all of the Gateway's.",
        default=(),
        max_items=16,
        pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        max_length=253,
    )
    path_prefix: str = spec_field(
        "Path prefix the route matches, an absolute path as the Gateway API accepts it.",
        default="/",
        pattern=val.PATH_PREFIX,
        max_length=1024,
        rules=(val.PATH_PREFIX_RULE,),
    )
    header_matches: tuple[HeaderMatch, ...] = spec_field(
        "Header rules for sticky A/B.", default=(), max_items=8
    )
    mirror: MirrorSpec | None = spec_field("Request mirroring.", default=None)


# ------------------------------------------------------------------ monitoring


@dataclass(frozen=True, kw_only=True)
class MonitoringSpec:
    """How Prometheus finds the pods and which PromQL gives each signal."""

    pod_monitor: str = spec_field(
        "Auto renders a PodMonitor when the Prometheus Operator's CRDs exist; Always "
        "and Never force it.",
        default="Auto",
        enum=("Auto", "Always", "Never"),
    )
    queries: dict[str, str] = spec_field(
        "PromQL templates that replace the built-in query of a signal (requestRate, "
        "errorRate, avgLatencyMs, queueTimeMs, p95LatencyMs, p99LatencyMs). {selector} "
        "is replaced by the label matchers of this InferenceService and {window} by the "
        "rate window; results must keep the namespace, inferenceservice and variant "
        "labels.",
        default_factory=dict,
    )

    RULES = (
        Rule(
            cel="!has(self.queries) || self.queries.all(k, k in ['requestRate', "
            "'errorRate', 'avgLatencyMs', 'queueTimeMs', 'p95LatencyMs', 'p99LatencyMs'])",
            message="monitoring.queries keys must be signal names: requestRate, errorRate, "
            "avgLatencyMs, queueTimeMs, p95LatencyMs, p99LatencyMs",
            check=lambda m: (
                set(m.queries)
                <= {
                    "requestRate",
                    "errorRate",
                    "avgLatencyMs",
                    "queueTimeMs",
                    "p95LatencyMs",
                    "p99LatencyMs",
                }
            ),
            field_path="queries",
        ),
    )


# ----------------------------------------------------------------- podTemplate


@dataclass(frozen=True, kw_only=True)
class Toleration:
    """A toleration of a node taint, as in a pod spec."""

    key: str | None = spec_field(
        "Taint key; empty with operator Exists tolerates every taint.",
        default=None,
        pattern="^(" + val.QUALIFIED_NAME[1:-1] + ")?$",
        max_length=317,
    )
    operator: str | None = spec_field(
        "Exists or Equal (default Equal).", default=None, enum=("Exists", "Equal")
    )
    value: str | None = spec_field(
        "Taint value (Equal only).", default=None, pattern=val.LABEL_VALUE, max_length=63
    )
    effect: str | None = spec_field(
        "Taint effect to tolerate; unset: all.",
        default=None,
        enum=("NoSchedule", "PreferNoSchedule", "NoExecute"),
    )
    toleration_seconds: int | None = spec_field(
        "How long a NoExecute taint is tolerated before eviction.", default=None
    )

    RULES = (
        Rule(
            cel="!has(self.operator) || self.operator != 'Exists' || "
            "!has(self.value) || self.value == ''",
            message="a toleration with operator Exists must not have a value",
            check=lambda t: t.operator != "Exists" or not t.value,
            field_path="value",
        ),
        Rule(
            cel="(has(self.key) && self.key != '') || "
            "(has(self.operator) && self.operator == 'Exists')",
            message="a toleration without a key must have operator Exists",
            check=lambda t: bool(t.key) or t.operator == "Exists",
            field_path="operator",
        ),
        Rule(
            cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            message="tolerationSeconds needs effect NoExecute",
            check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
            field_path="effect",
        ),
    )


@dataclass(frozen=True, kw_only=True)
class NodeSelectorRequirement:
    """One node label expression."""

    key: str = spec_field("Node label key.", pattern=val.QUALIFIED_NAME, max_length=317)
    operator: str = spec_field(
        "How the label is compared.", enum=("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
    )
    values: tuple[str, ...] = spec_field(
        "Label values (In, NotIn; one integer for Gt, Lt).",
        default=(),
        max_items=64,
        pattern=val.LABEL_VALUE,
        max_length=63,
    )


@dataclass(frozen=True, kw_only=True)
class NodeSelectorTerm:
    """Expressions that must all hold on a node."""

    match_expressions: tuple[NodeSelectorRequirement, ...] = spec_field(
        "Node label expressions.", default=(), max_items=32
    )
    match_fields: tuple[NodeSelectorRequirement, ...] = spec_field(
        "Node field expressions (metadata.name).", default=(), max_items=8
    )


@dataclass(frozen=True, kw_only=True)
class NodeSelector:
    """Terms of which at least one must hold."""

    node_selector_terms: tuple[NodeSelectorTerm, ...] = spec_field(
        "Terms, ORed.", min_items=1, max_items=16
    )


@dataclass(frozen=True, kw_only=True)
class PreferredSchedulingTerm:
    """A weighted node preference."""

    weight: int = spec_field("Weight.", minimum=1, maximum=100)
    preference: NodeSelectorTerm = spec_field("The preferred node term.")


@dataclass(frozen=True, kw_only=True)
class NodeAffinity:
    """Node affinity, as in a pod spec."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = spec_field(
        "Nodes the pods may run on. Sluice adds the GPU product expression to each term.",
        default=None,
    )
    preferred_during_scheduling_ignored_during_execution: tuple[PreferredSchedulingTerm, ...] = (
        spec_field("Weighted node preferences.", default=(), max_items=16)
    )


@dataclass(frozen=True, kw_only=True)
class Affinity:
    """Affinity terms, as in a pod spec."""

    node_affinity: NodeAffinity | None = spec_field(
        "Node affinity, merged with the GPU product node affinity.", default=None
    )
    pod_affinity: dict[str, Any] | None = spec_field(
        "Pod affinity, passed through (Kubernetes validates it when the Deployment is "
        "applied; a refusal is reported in the Ready condition).",
        default=None,
        preserve_unknown=True,
    )
    pod_anti_affinity: dict[str, Any] | None = spec_field(
        "Pod anti-affinity, passed through like podAffinity.",
        default=None,
        preserve_unknown=True,
    )


@dataclass(frozen=True, kw_only=True)
class PodTemplate:
    """Pod settings passed through to every Triton pod."""

    labels: dict[str, str] = spec_field(
        "Extra pod labels. Sluice's own labels (sluice.dev/*, app.kubernetes.io/*) win.",
        default_factory=dict,
        max_properties=64,
        value_pattern=val.LABEL_VALUE,
        value_max_length=63,
        rules=(val.map_keys_rule(),),
    )
    annotations: dict[str, str] = spec_field(
        "Extra pod annotations.",
        default_factory=dict,
        max_properties=64,
        value_max_length=65536,
        rules=(val.map_keys_rule(),),
    )
    service_account_name: str | None = spec_field(
        "ServiceAccount the pods run as.",
        default=None,
        pattern=val.DNS_SUBDOMAIN,
        max_length=253,
    )
    image_pull_secrets: tuple[str, ...] = spec_field(
        "Names of image pull Secrets.",
        default=(),
        max_items=16,
        pattern=val.DNS_SUBDOMAIN,
        max_length=253,
    )
    priority_class_name: str | None = spec_field(
        "PriorityClass of the pods.", default=None, pattern=val.DNS_SUBDOMAIN, max_length=253
    )
    node_selector: dict[str, str] = spec_field(
        "Extra node selector labels.",
        default_factory=dict,
        max_properties=32,
        value_pattern=val.LABEL_VALUE,
        value_max_length=63,
        rules=(val.map_keys_rule(),),
    )
    tolerations: tuple[Toleration, ...] = spec_field(
        "Extra tolerations, added to the GPU toleration Sluice sets itself.",
        default=(),
        max_items=32,
    )
    affinity: Affinity = spec_field(
        "Extra affinity terms, merged with the GPU product node affinity.",
        default_factory=Affinity,
    )


# ------------------------------------------------------------------ experiment


@dataclass(frozen=True, kw_only=True)
class ExperimentSpec:
    """The A/B verdict on spec.variants: each variant judged against main."""

    signals: tuple[str, ...] = spec_field(
        "Signals compared: errorRate (failed fractions from Triton's counters), "
        "avgLatencyMs, queueTimeMs, p95LatencyMs, p99LatencyMs (lower is better; any "
        "spec.monitoring.queries template replaces the built-in query).",
        default=("p99LatencyMs", "avgLatencyMs", "errorRate"),
        min_items=1,
        max_items=6,
        enum=("errorRate", "avgLatencyMs", "queueTimeMs", "p95LatencyMs", "p99LatencyMs"),
    )
    confidence: float = spec_field(
        "Confidence of every verdict, valid however often it is looked at (sequential "
        "tests). 0.99: two identical variants are declared different on a signal in at "
        "most 1% of experiments.",
        default=0.99,
        minimum=0.8,
        maximum=0.9999,
    )
    min_samples: int = spec_field(
        "Requests each side must have served before a verdict.",
        default=1000,
        minimum=1,
        maximum=100000000,
    )
    custom_signals: tuple[CustomSignal, ...] = custom_signals_field(
        "Signals of your own (PromQL, for example a business metric the model exports), "
        "compared like the built-in ones: per signal which variant is better, by how "
        "much, with what confidence, on how many requests. A winner must not be worse "
        "on any of them."
    )
    promote_winner: bool = spec_field(
        "Once a variant is conclusively better than main on the first signal and not "
        "worse on any other, it becomes main: its model version and image roll out to "
        "main (the spec keeps what you wrote; status.experiment.winner says which). Off "
        "by default: the verdict is only reported.",
        default=False,
    )


# ------------------------------------------------------------------------ spec


@dataclass(frozen=True, kw_only=True)
class InferenceServiceSpec:
    """The desired state of a Triton inference fleet."""

    model: ModelSpec = spec_field("The model to serve.")
    triton: TritonSpec = spec_field("The Triton server.", default_factory=TritonSpec)
    gpu: GpuSpec = spec_field("GPU placement.", default_factory=GpuSpec)
    replicas: int = spec_field(
        "Replicas of the main variant while autoscaling is off; the target of kubectl scale.",
        default=1,
        minimum=0,
        maximum=1000,
    )
    scaling: ScalingSpec | None = spec_field(
        "Latency-SLO autoscaling. Unset: replicas stay at spec.replicas.", default=None
    )
    variants: tuple[VariantSpec, ...] = spec_field(
        "Fixed A/B variants served beside the main one. Needs spec.router.",
        default=(),
        max_items=8,
        list_type="map",
        list_map_keys=("name",),
    )
    experiment: ExperimentSpec | None = spec_field(
        "Judge the A/B variants against main with sequential statistical tests: per "
        "signal which is better, by how much, with what confidence and on how many "
        "requests. Unset: variants are compared side by side in status.signals only.",
        default=None,
    )
    rollout: RolloutSpec = spec_field(
        "How version and image changes roll out.", default_factory=RolloutSpec
    )
    router: RouterSpec | None = spec_field(
        "Gateway API routing. Needed for A/B variants and canary rollouts.", default=None
    )
    monitoring: MonitoringSpec = spec_field(
        "Metrics collection and queries.", default_factory=MonitoringSpec
    )
    pod_template: PodTemplate = spec_field(
        "Pod settings passed through to every Triton pod.", default_factory=PodTemplate
    )

    RULES = (
        Rule(
            cel="!has(self.variants) || self.variants.map(v, v.weight).sum() <= 100",
            message="the weights of spec.variants add up to more than 100",
            check=lambda s: sum(v.weight for v in s.variants) <= 100,
            field_path="variants",
        ),
        Rule(
            cel="(!has(self.variants) || size(self.variants) == 0) || has(self.router)",
            message="spec.variants needs spec.router: weighted traffic splits go through "
            "a Gateway API HTTPRoute",
            check=lambda s: not s.variants or s.router is not None,
            field_path="router",
        ),
        Rule(
            cel="!has(self.rollout) || !has(self.rollout.strategy) || "
            "self.rollout.strategy != 'Canary' || has(self.router)",
            message="rollout.strategy Canary needs spec.router: canary traffic goes "
            "through a Gateway API HTTPRoute",
            check=lambda s: s.rollout.strategy != "Canary" or s.router is not None,
            field_path="router",
        ),
        Rule(
            cel="!has(self.rollout) || !has(self.rollout.strategy) || "
            "self.rollout.strategy != 'Canary' || !has(self.variants) || "
            "size(self.variants) == 0",
            message="rollout.strategy Canary cannot be combined with spec.variants in "
            "v1alpha1: use one or the other",
            check=lambda s: s.rollout.strategy != "Canary" or not s.variants,
            field_path="variants",
        ),
        Rule(
            cel="!has(self.router) || !has(self.router.headerMatches) || "
            "self.router.headerMatches.all(h, h.variant == 'main' || "
            "(has(self.variants) && self.variants.exists(v, v.name == h.variant)))",
            message="router.headerMatches[].variant must name 'main' or one of spec.variants",
            check=lambda s: (
                s.router is None
                or all(h.variant in _variant_names(s) for h in s.router.header_matches)
            ),
            field_path="router",
        ),
        Rule(
            cel="!has(self.triton) || !has(self.triton.env) || !has(self.model.s3) || "
            "!has(self.model.s3.region) || "
            "self.triton.env.all(e, e.name != 'AWS_DEFAULT_REGION')",
            message="spec.triton.env must not set AWS_DEFAULT_REGION when "
            "spec.model.s3.region is set: Sluice sets it from the region",
            check=lambda s: (
                s.model.s3 is None
                or s.model.s3.region is None
                or all(e.name != "AWS_DEFAULT_REGION" for e in s.triton.env)
            ),
            field_path="triton.env",
        ),
        Rule(
            cel="!has(self.triton) || !has(self.triton.env) || "
            "!has(self.model.credentialsSecret) || "
            "self.triton.env.all(e, e.name != 'GOOGLE_APPLICATION_CREDENTIALS')",
            message="spec.triton.env must not set GOOGLE_APPLICATION_CREDENTIALS when "
            "spec.model.credentialsSecret is set: Sluice mounts the Secret's gcs.json "
            "and points the variable at it",
            check=lambda s: (
                s.model.credentials_secret is None
                or all(e.name != "GOOGLE_APPLICATION_CREDENTIALS" for e in s.triton.env)
            ),
            field_path="triton.env",
        ),
        Rule(
            cel="!has(self.router) || !has(self.router.mirror) || "
            "self.router.mirror.variant == 'main' || (has(self.variants) && "
            "self.variants.exists(v, v.name == self.router.mirror.variant))",
            message="router.mirror.variant must name 'main' or one of spec.variants",
            check=lambda s: (
                s.router is None
                or s.router.mirror is None
                or s.router.mirror.variant in _variant_names(s)
            ),
            field_path="router",
        ),
    )


def _variant_names(s: InferenceServiceSpec) -> set[str]:
    return {MAIN_VARIANT, *(v.name for v in s.variants)}


MAX_NAME_LENGTH = 42  # "<name>-<variant>" Service names must fit in 63 characters
NAME_RULE = Rule(
    cel=f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    message=f"metadata.name must be at most {MAX_NAME_LENGTH} characters: each variant's "
    "Service is named <name>-<variant> and Service names are limited to 63",
    check=lambda name: len(name) <= MAX_NAME_LENGTH,
)
NAME_LABEL_RULE = Rule(
    cel=f"self.metadata.name.matches('{DNS_LABEL}')",
    message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
    "starting with a letter, ending with a letter or digit; no dots): the Services are "
    "named <name> and <name>-<variant>",
    check=lambda name: re.fullmatch(DNS_LABEL, name) is not None,
)
NAME_RULES = (NAME_RULE, NAME_LABEL_RULE)


def check_name(name: str) -> None:
    for rule in NAME_RULES:
        if not rule.check(name):
            raise SpecError("metadata.name", rule.message)


def parse_spec(data: Any) -> InferenceServiceSpec:
    """Parse and validate ``.spec``; raises :class:`SpecError` naming the field."""
    spec = parse(InferenceServiceSpec, data, "spec")
    names = [v.name for v in spec.variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:  # the list-map schema rejects these at apply; offline too
        raise SpecError("spec.variants", f"duplicate variant name(s): {', '.join(dupes)}")
    return spec


# ---------------------------------------------------------------------- status
#
# The operator reads status once per write (InferenceServiceStatus.from_dict),
# works on these types and serialises once (to_dict). Timestamps are epoch
# seconds in Python and RFC 3339 with milliseconds on the wire.


@dataclass(frozen=True, kw_only=True)
class Condition:
    """A standard Kubernetes condition."""

    type: str = spec_field("Condition type, for example Ready.")
    status: str = spec_field("True, False or Unknown.", enum=("True", "False", "Unknown"))
    reason: str = spec_field("One-word CamelCase reason.", default="")
    message: str = spec_field("What was observed and why, for people.", default="")
    last_transition_time: float | None = spec_field(
        "When status last changed (RFC 3339).", default=None, timestamp=True
    )
    observed_generation: int | None = spec_field(
        "metadata.generation this condition was computed from.", default=None
    )

    @property
    def is_true(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True, kw_only=True)
class VariantStatus:
    """Observed state of one variant."""

    name: str = spec_field("Variant name.")
    version: int | None = spec_field("Model version the variant serves.", default=None)
    image: str | None = spec_field("Triton image of the variant.", default=None)
    replicas: int = spec_field("Pods of the variant's Deployment.", default=0)
    ready_replicas: int = spec_field("Ready pods.", default=0)
    desired_replicas: int | None = spec_field("Replicas the operator wants now.", default=None)
    weight: int | None = spec_field("Traffic percent currently routed here.", default=None)
    deployment: str | None = spec_field("Name of the variant's Deployment.", default=None)


@dataclass(frozen=True, kw_only=True)
class Signals:
    """The latest observation of one variant from Prometheus."""

    variant: str | None = spec_field(
        "Variant name (in status.signals; omitted where the variant is implied).", default=None
    )
    request_rate: float | None = spec_field("Requests per second.", default=None)
    error_rate: float | None = spec_field("Failed fraction of requests.", default=None)
    avg_latency_ms: float | None = spec_field("Mean latency, ms.", default=None)
    queue_time_ms: float | None = spec_field("Mean queue time, ms.", default=None)
    p95_latency_ms: float | None = spec_field("p95 latency of the worst pod, ms.", default=None)
    p99_latency_ms: float | None = spec_field("p99 latency of the worst pod, ms.", default=None)
    compute_time_ms: float | None = spec_field(
        "Mean compute time per inference (one execution, shared by its batch), ms.",
        default=None,
    )
    batch_size: float | None = spec_field(
        "Mean batch size: inferences per execution.", default=None
    )
    pending_requests: float | None = spec_field(
        "Requests waiting in Triton's queues, summed over pods.", default=None
    )
    pending_growth: float | None = spec_field(
        "How fast the queues grow (requests per second, summed over pods): arrivals the "
        "request rate (completions) does not show yet.",
        default=None,
    )
    p95_latency_typical_ms: float | None = spec_field(
        "p95 latency of the typical pod (mean over pods of their own p95), ms.", default=None
    )
    p99_latency_typical_ms: float | None = spec_field(
        "p99 latency of the typical pod (mean over pods of their own p99), ms: an estimate "
        "that, unlike the worst pod's, does not drift up with the number of pods.",
        default=None,
    )
    request_rate_now: float | None = spec_field(
        "Requests per second between the last two scrapes (irate).", default=None
    )
    request_rate_1m_ago: float | None = spec_field(
        "Requests per second over the minute before the last: with requestRate, the trend.",
        default=None,
    )
    request_rate_2m_ago: float | None = spec_field(
        "Requests per second over the minute two minutes ago.", default=None
    )
    request_rate_3m_ago: float | None = spec_field(
        "Requests per second over the minute three minutes ago.", default=None
    )
    compute_time_now_ms: float | None = spec_field(
        "Mean compute time per inference between the last two scrapes (irate), ms.",
        default=None,
    )
    batch_size_now: float | None = spec_field(
        "Mean batch size between the last two scrapes (irate).", default=None
    )
    missing: tuple[str, ...] = spec_field(
        "Signals that had no usable value, each with why.", default=()
    )
    observed_at: float | None = spec_field("When this was observed.", default=None, timestamp=True)

    def values(self) -> tuple[object, ...]:
        """The observation without its time (what it says, not when)."""
        return (
            self.variant,
            self.request_rate,
            self.error_rate,
            self.avg_latency_ms,
            self.queue_time_ms,
            self.p95_latency_ms,
            self.p99_latency_ms,
            self.missing,
        )

    def shape(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Which signals have values and which are missing (and why)."""
        have = tuple(
            k
            for k in (
                "request_rate",
                "error_rate",
                "avg_latency_ms",
                "queue_time_ms",
                "p95_latency_ms",
                "p99_latency_ms",
                "compute_time_ms",
                "batch_size",
                "pending_requests",
                "pending_growth",
                "p95_latency_typical_ms",
                "p99_latency_typical_ms",
                "request_rate_now",
                "request_rate_1m_ago",
                "request_rate_2m_ago",
                "request_rate_3m_ago",
                "compute_time_now_ms",
                "batch_size_now",
            )
            if getattr(self, k) is not None
        )
        return have, self.missing


@dataclass(frozen=True, kw_only=True)
class ScalingStatus:
    """The autoscaler's last decision for one variant."""

    variant: str = spec_field("Variant name.")
    current_replicas: int = spec_field("Replicas when decided.", default=0)
    desired_replicas: int = spec_field("Replicas decided.", default=0)
    applied: bool = spec_field("False in Observe mode.", default=False)
    metric: str | None = spec_field("Signal used.", default=None)
    observed: float | None = spec_field("Its value, ms.", default=None)
    target: float | None = spec_field("Its target, ms.", default=None)
    reason: str = spec_field("Why.", default="")
    last_scale_time: float | None = spec_field(
        "When replicas last changed.", default=None, timestamp=True
    )
    pending_since: float | None = spec_field(
        "Since when the signal has called for the pending direction (stabilisation).",
        default=None,
        timestamp=True,
    )
    pending_direction: str | None = spec_field("Up or Down while stabilising.", default=None)
    pending_replicas: int | None = spec_field(
        "While scaling down is stabilising: the most replicas any decision since "
        "pendingSince called for (the size reached when the window passes).",
        default=None,
    )
    pending_low_replicas: int | None = spec_field(
        "While scaling down is stabilising: a lower size called for since pendingLowSince "
        "(reached once that has held for the window).",
        default=None,
    )
    pending_low_since: float | None = spec_field(
        "Since when every decision has allowed pendingLowReplicas.",
        default=None,
        timestamp=True,
    )
    demand: float | None = spec_field(
        "Policy Demand: the request rate sized for (arrivals, plus the queue backlog to "
        "drain and the trend over the model-load time), req/s.",
        default=None,
    )
    capacity_per_replica: float | None = spec_field(
        "Policy Demand: req/s one replica serves within the target, by the queueing model.",
        default=None,
    )
    correction: float | None = spec_field(
        "Policy Demand: measured over predicted (M/M/1) mean queue time, within 0.25..4; "
        "scales the model's queueing delay. Measured while the fleet is steady, else the "
        "last measured value.",
        default=None,
    )
    tail_correction: float | None = spec_field(
        "Policy Demand: the typical pod's measured quantile over the model's (within "
        "0.5..2), measured near the target; scales the predicted tail.",
        default=None,
    )
    predicted_latency_ms: float | None = spec_field(
        "Policy Demand: the target signal the model predicts at desiredReplicas, ms.",
        default=None,
    )
    load_time_seconds: float | None = spec_field(
        "Policy Demand: the model-load time measured from this variant's pods (creation to "
        "ready), s.",
        default=None,
    )
    overloaded_at: float | None = spec_field(
        "Policy Demand: when the variant was last overloaded (its queues held more than "
        "the target's worth of work per ready pod). For 4 minutes after it the rate "
        "windows show how fast capacity came rather than a trend, and the queue time a "
        "backlog draining: no trend and no correction is learnt from them.",
        default=None,
        timestamp=True,
    )
    signals: Signals | None = spec_field("What was observed.", default=None)

    @property
    def code(self) -> str:
        """The one-word decision code that starts :attr:`reason`."""
        return self.reason.split(":", 1)[0]


@dataclass(frozen=True)
class RevisionStatus:
    """A model version and image pair."""

    version: int = spec_field("Model version.")
    image: str = spec_field("Triton image.")


@dataclass(frozen=True, kw_only=True)
class SignalVerdict:
    """The verdict on one signal, the numbers behind it and the evidence it rests on."""

    signal: str = spec_field("Signal name, for example p99LatencyMs or errorRate.")
    kind: str = spec_field(
        "proportion (failed fractions from counts), ratio (log-ratios per batch: latencies, "
        "Ratio custom signals) or difference (differences per batch: Difference custom "
        "signals).",
        enum=("proportion", "ratio", "difference"),
        default="ratio",
    )
    direction: str = spec_field(
        "Which values are better.", enum=("lower", "higher"), default="lower"
    )
    candidate: float | None = spec_field(
        "The candidate's value (pooled error rate, or geometric mean over batches).",
        default=None,
    )
    baseline: float | None = spec_field("What it is compared with, the same way.", default=None)
    tolerance: float | None = spec_field(
        "How much worse is tolerated (proportion: absolute; ratio: relative).", default=None
    )
    effect: float | None = spec_field(
        "Estimated difference (proportion) or ratio candidate/baseline.", default=None
    )
    lower: float | None = spec_field("Lower end of the confidence interval.", default=None)
    upper: float | None = spec_field("Upper end of the confidence interval.", default=None)
    confidence: float | None = spec_field("Confidence of the interval.", default=None)
    samples: int = spec_field("Requests of the smaller side.", default=0)
    batches: int = spec_field("Rate windows that carried evidence.", default=0)
    verdict: str = spec_field(
        "Pass, Fail or Inconclusive (canary); for an experiment also who is better.",
        enum=("Pass", "Fail", "Inconclusive"),
        default="Inconclusive",
    )
    better: str | None = spec_field(
        "Experiments: the better variant on this signal, once shown.", default=None
    )
    reason: str = spec_field("Why this verdict.", default="")
    # The evidence: sufficient statistics the next cycle continues from.
    sum_x: float = spec_field("Sum of batch log-ratios (ratio).", default=0.0)
    sum_x2: float = spec_field("Sum of squared batch log-ratios (ratio).", default=0.0)
    sum_log_candidate: float = spec_field(
        "Sum of log candidate values (ratio) or of the values (difference).", default=0.0
    )
    sum_log_baseline: float = spec_field(
        "Sum of log baseline values (ratio) or of the values (difference).", default=0.0
    )
    candidate_requests: float = spec_field("Candidate requests counted.", default=0.0)
    candidate_failures: float = spec_field("Candidate failures counted.", default=0.0)
    baseline_requests: float = spec_field("Baseline requests counted.", default=0.0)
    baseline_failures: float = spec_field("Baseline failures counted.", default=0.0)


@dataclass(frozen=True, kw_only=True)
class AnalysisStatus:
    """Accumulated evidence and verdicts of one comparison (canary vs baseline, or an
    A/B variant vs main)."""

    candidate: str = spec_field("The variant judged.")
    baseline: str = spec_field("The variant it is compared with.")
    verdict: str = spec_field(
        "Fail if any signal fails, Pass if every signal passes, else Inconclusive.",
        enum=("Pass", "Fail", "Inconclusive"),
        default="Inconclusive",
    )
    better: str | None = spec_field(
        "Experiments: the variant shown better (on the first signal, not worse on any).",
        default=None,
    )
    last_batch_at: float | None = spec_field(
        "When the last rate window was counted (windows never overlap).",
        default=None,
        timestamp=True,
    )
    signals: tuple[SignalVerdict, ...] = spec_field("Per signal.", default=())


@dataclass(frozen=True, kw_only=True)
class ExperimentStatus:
    """The A/B verdicts of spec.experiment."""

    variants: tuple[AnalysisStatus, ...] = spec_field(
        "One comparison per variant against main.", default=()
    )
    winner: str | None = spec_field("The variant conclusively better than main.", default=None)
    promoted: RevisionStatus | None = spec_field(
        "With promoteWinner: the winner's revision, now served by main.", default=None
    )
    message: str = spec_field("What the experiment says, for people.", default="")


@dataclass(frozen=True, kw_only=True)
class HandledRequests:
    """The one-shot request tokens (annotations sluice.dev/abort, promote, retry)
    already acted on: each token acts once."""

    abort: str | None = spec_field("Last abort token handled.", default=None)
    promote: str | None = spec_field("Last promote token handled.", default=None)
    retry: str | None = spec_field("Last retry token handled.", default=None)


# Rollout phases in which a canary variant exists (RollingBack: its weight is
# already 0; it is removed once the route no longer sends it traffic).
IN_FLIGHT = ("Progressing", "Promoting", "RollingBack")
# Phases in which nothing is rolling out.
DONE = ("Idle", "Succeeded", "RolledBack")


@dataclass(frozen=True, kw_only=True)
class RolloutStatus:
    """Where a canary rollout is. Kept in status so a restarted operator continues."""

    phase: str = spec_field(
        "Idle (nothing to roll out), Progressing (the canary takes traffic through the "
        "steps), Promoting (the main variant moves to the canary's revision, then takes "
        "all traffic back), Succeeded, RollingBack (traffic is back on the stable variant; "
        "the canary is removed next) or RolledBack.",
        enum=("Idle", "Progressing", "Promoting", "Succeeded", "RollingBack", "RolledBack"),
        default="Idle",
    )
    stable: RevisionStatus | None = spec_field("What the main variant serves.", default=None)
    canary: RevisionStatus | None = spec_field("What the canary serves.", default=None)
    step: int = spec_field("Index into spec.rollout.steps; -1 before the first.", default=-1)
    canary_weight: int = spec_field("Traffic percent on the canary.", default=0)
    failed_checks: int = spec_field("Failed analysis checks in this rollout.", default=0)
    step_started_at: float | None = spec_field(
        "When the current step began.", default=None, timestamp=True
    )
    last_progress_at: float | None = spec_field(
        "When a step last completed.", default=None, timestamp=True
    )
    message: str = spec_field("What happened last and why.", default="")
    paused: bool = spec_field("spec.rollout.paused holds the rollout.", default=False)
    awaiting_decision: bool = spec_field(
        "The progress deadline passed with the analysis inconclusive (onInconclusive "
        "Pause): the canary holds its weight until the evidence decides or sluice "
        "promote / sluice abort.",
        default=False,
    )
    analysis: AnalysisStatus | None = spec_field(
        "The canary's evidence and verdicts against its baseline, per signal.", default=None
    )
    handled: HandledRequests | None = spec_field(
        "One-shot requests already acted on.", default=None
    )

    @property
    def in_flight(self) -> bool:
        """A canary exists beside the stable variant."""
        return self.phase in IN_FLIGHT and self.stable is not None and self.canary is not None

    @property
    def promoted(self) -> bool:
        """While promoting, main already serves the canary's revision."""
        return self.phase == "Promoting"


@dataclass(frozen=True, kw_only=True)
class InferenceServiceStatus:
    """Observed state, written only by the operator."""

    observed_generation: int | None = spec_field(
        "metadata.generation the status describes.", default=None
    )
    conditions: tuple[Condition, ...] = spec_field("Conditions.", default=())
    url: str | None = spec_field("In-cluster URL of the apex Service.", default=None)
    model: str | None = spec_field("Model name (printer column).", default=None)
    version: int | None = spec_field("Version the main variant serves.", default=None)
    replicas: int = spec_field("Pods across all variants (scale subresource).", default=0)
    ready_replicas: int = spec_field("Ready pods across all variants.", default=0)
    ready: str | None = spec_field("ready/desired, for kubectl get.", default=None)
    selector: str | None = spec_field(
        "Label selector of the pods (scale subresource).", default=None
    )
    variants: tuple[VariantStatus, ...] = spec_field("Per-variant state.", default=())
    scaling: tuple[ScalingStatus, ...] = spec_field("Per-variant autoscaler decisions.", default=())
    signals: tuple[Signals, ...] = spec_field(
        "What Prometheus said about each variant, side by side (request rate, error rate, "
        "latencies): the comparison of A/B variants and of a canary with its stable variant.",
        default=(),
    )
    rollout: RolloutStatus | None = spec_field("Canary rollout state.", default=None)
    experiment: ExperimentStatus | None = spec_field(
        "A/B verdicts (spec.experiment).", default=None
    )
    spec_error: str | None = spec_field(
        "Why the spec cannot be served, when it cannot.", default=None
    )

    # ------------------------------------------------------------- the wire

    @classmethod
    def from_dict(cls, data: Any) -> InferenceServiceStatus:
        """``.status`` as read from the apiserver (None or {} gives the empty status)."""
        return load(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """The ``.status`` to write: unset fields and empty lists are left out."""
        out: dict[str, Any] = to_dict(self, omit_empty=True)
        return out

    # ----------------------------------------------------------- conditions

    def condition(self, type_: str) -> Condition | None:
        for c in self.conditions:
            if c.type == type_:
                return c
        return None

    def with_condition(
        self,
        type_: str,
        status: bool | str,
        reason: str,
        message: str,
        now: float,
        generation: int | None = None,
    ) -> InferenceServiceStatus:
        """Set one condition (as meta.SetStatusCondition): lastTransitionTime
        moves only when its status changes; the order of conditions is kept."""
        st = ("True" if status else "False") if isinstance(status, bool) else status

        def new(at: float) -> Condition:
            return Condition(
                type=type_,
                status=st,
                reason=reason,
                message=message,
                last_transition_time=at,
                observed_generation=generation,
            )

        before = self.condition(type_)
        if before is None:
            return replace(self, conditions=(*self.conditions, new(now)))
        kept = before.last_transition_time
        c = new(kept if before.status == st and kept is not None else now)
        if c == before:
            return self
        return replace(self, conditions=tuple(c if x is before else x for x in self.conditions))

    def without_condition(self, type_: str) -> InferenceServiceStatus:
        if self.condition(type_) is None:
            return self
        return replace(self, conditions=tuple(c for c in self.conditions if c.type != type_))

    def same_as(self, other: InferenceServiceStatus) -> bool:
        """Equal but for when conditions last changed: nothing worth a write."""
        if self is other:
            return True
        if [_untimed(c) for c in self.conditions] != [_untimed(c) for c in other.conditions]:
            return False
        return all(getattr(self, f) == getattr(other, f) for f in _BUT_CONDITIONS)

    # ------------------------------------------------------------- readers

    def scaled_replicas(self) -> dict[str, int]:
        """Replicas the autoscaler decided and applied, per variant."""
        return {s.variant: s.desired_replicas for s in self.scaling if s.applied}

    def scaling_for(self, variant: str) -> ScalingStatus | None:
        for s in self.scaling:
            if s.variant == variant:
                return s
        return None

    def signals_for(self, variant: str) -> Signals | None:
        for s in self.signals:
            if s.variant == variant:
                return s
        return None

    def variant(self, name: str) -> VariantStatus | None:
        for v in self.variants:
            if v.name == name:
                return v
        return None


def _untimed(c: Condition) -> tuple[str, str, str, str, int | None]:
    return c.type, c.status, c.reason, c.message, c.observed_generation


_BUT_CONDITIONS = tuple(f.name for f in fields(InferenceServiceStatus) if f.name != "conditions")
