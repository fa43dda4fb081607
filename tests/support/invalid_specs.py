"""Invalid InferenceServices, each with what the apiserver and the Python parser say.

One table serves two tests: tests/unit/test_api_rules.py checks the parser,
tests/integration/test_reconcile.py sends the same objects to a real apiserver.
The two must reject every case; their messages must name the problem.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

BASE: dict[str, Any] = {
    "apiVersion": "sluice.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "bad"},
    "spec": {
        "model": {"name": "m", "repository": "s3://bucket/models", "version": 1},
        "gpu": {"count": 1},
    },
}

ROUTER = {"gateway": {"name": "gw"}}


@dataclass(frozen=True)
class Case:
    id: str
    patch: dict[str, Any]  # deep-merged into BASE ("spec"/"metadata" keys)
    api_says: str  # fragment of the apiserver's rejection
    parser_says: str  # fragment of SpecError's message

    def obj(self) -> dict[str, Any]:
        out = copy.deepcopy(BASE)
        _merge(out, copy.deepcopy(self.patch))
        return out


def _merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if v == _DELETE:
            dst.pop(k, None)
        elif isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v


_DELETE: Any = "<delete>"  # a string survives deepcopy

CASES = [
    Case(
        "version-missing",
        {"spec": {"model": {"version": _DELETE}}},
        "spec.model.version: Required value",
        "spec.model.version: is required",
    ),
    Case(
        "version-zero",
        {"spec": {"model": {"version": 0}}},
        "should be greater than or equal to 1",
        "spec.model.version: must be >= 1",
    ),
    Case(
        "repository-scheme",
        {"spec": {"model": {"repository": "http://models.example.com/triton"}}},
        "spec.model.repository",
        "spec.model.repository",
    ),
    Case(
        "min-above-max",
        {"spec": {"scaling": {"minReplicas": 5, "maxReplicas": 2, "target": {"value": 50}}}},
        "scaling.minReplicas must be <= scaling.maxReplicas",
        "scaling.minReplicas must be <= scaling.maxReplicas",
    ),
    Case(
        "weights-over-100",
        {
            "spec": {
                "router": ROUTER,
                "variants": [
                    {"name": "b", "weight": 60, "model": {"version": 2}},
                    {"name": "c", "weight": 50, "model": {"version": 3}},
                ],
            }
        },
        "add up to more than 100",
        "add up to more than 100",
    ),
    Case(
        "duplicate-variants",
        {
            "spec": {
                "router": ROUTER,
                "variants": [{"name": "b", "weight": 10}, {"name": "b", "weight": 20}],
            }
        },
        "Duplicate value",
        "duplicate variant name(s): b",
    ),
    Case(
        "mig-without-gpus",
        {"spec": {"gpu": {"count": 0, "migProfile": "1g.10gb"}}},
        "gpu.migProfile needs gpu.count >= 1",
        "gpu.migProfile needs gpu.count >= 1",
    ),
    Case(
        "cpu-model-with-products",
        {"spec": {"gpu": {"count": 0, "products": ["NVIDIA-H100-80GB-HBM3"]}}},
        "gpu.products needs gpu.count >= 1",
        "gpu.products needs gpu.count >= 1",
    ),
    Case(
        "variants-without-router",
        {"spec": {"variants": [{"name": "b", "weight": 10}]}},
        "spec.variants needs spec.router",
        "spec.variants needs spec.router",
    ),
    Case(
        "canary-without-router",
        {"spec": {"rollout": {"strategy": "Canary"}}},
        "rollout.strategy Canary needs spec.router",
        "rollout.strategy Canary needs spec.router",
    ),
    Case(
        "steps-not-increasing",
        {"spec": {"router": ROUTER, "rollout": {"strategy": "Canary", "steps": [50, 20]}}},
        "rollout.steps must be strictly increasing",
        "rollout.steps must be strictly increasing",
    ),
    Case(
        "custom-signal-builtin-name",
        {
            "spec": {
                "rollout": {
                    "analysis": {
                        "customSignals": [
                            {"name": "p99LatencyMs", "query": "max by (variant) (x{{selector}})"}
                        ]
                    }
                }
            }
        },
        "a custom signal cannot take a built-in signal's name",
        "a custom signal cannot take a built-in signal's name",
    ),
    Case(
        "custom-signal-without-selector",
        {
            "spec": {
                "experiment": {
                    "customSignals": [
                        {"name": "revenue", "query": "sum by (variant) (rate(revenue_total[5m]))"}
                    ]
                }
            }
        },
        "must contain {selector}",
        "must contain {selector}",
    ),
    Case(
        "reserved-variant-name",
        {"spec": {"router": ROUTER, "variants": [{"name": "main", "weight": 10}]}},
        "variant names 'main' and 'canary' are reserved",
        "variant names 'main' and 'canary' are reserved",
    ),
    Case(
        "unknown-metric",
        {"spec": {"scaling": {"maxReplicas": 3, "target": {"metric": "p50", "value": 5}}}},
        'Unsupported value: "p50"',
        "must be one of p99LatencyMs",
    ),
    Case(
        "header-match-unknown-variant",
        {
            "spec": {
                "router": {
                    "gateway": {"name": "gw"},
                    "headerMatches": [{"header": "x-ab", "value": "b", "variant": "nope"}],
                }
            }
        },
        "router.headerMatches[].variant must name 'main' or one of spec.variants",
        "router.headerMatches[].variant must name 'main' or one of spec.variants",
    ),
    Case(
        "typo-field",
        {"spec": {"gpus": {"count": 2}}},
        'unknown field "spec.gpus"',
        "unknown field(s): gpus",
    ),
    Case(
        "name-too-long",
        {"metadata": {"name": "a-very-long-inference-service-name-over-42-chars"}},
        "metadata.name must be at most 42 characters",
        "metadata.name must be at most 42 characters",
    ),
    Case(
        "version-beyond-int64",
        {"spec": {"model": {"version": 10**20}}},
        "spec.model.version in body must be of type integer",
        "spec.model.version: must be an integer (64-bit)",
    ),
    # ---- names that are valid object names but not Service names (issue 12)
    Case(
        "name-with-dot",
        {"metadata": {"name": "my.model"}},
        "metadata.name must be a DNS-1035 label",
        "metadata.name must be a DNS-1035 label",
    ),
    Case(
        "name-leading-digit",
        {"metadata": {"name": "1model"}},
        "metadata.name must be a DNS-1035 label",
        "metadata.name must be a DNS-1035 label",
    ),
    # ---- paths Triton or the probes would reinterpret
    Case(
        "model-name-dotdot",
        {"spec": {"model": {"name": ".."}}},
        "spec.model.name: Invalid value",
        "spec.model.name: must not be '.' or '..'",
    ),
    Case(
        "model-name-dot",
        {"spec": {"model": {"name": "."}}},
        "must not be '.' or '..'",
        "spec.model.name: must not be '.' or '..'",
    ),
    Case(
        "pvc-repository-dotdot",
        {"spec": {"model": {"repository": "pvc://claim/../../etc"}}},
        "must not contain '.' or '..' path segments",
        "spec.model.repository: must not contain '.' or '..' path segments",
    ),
    Case(
        "variant-repository-dot",
        {
            "spec": {
                "router": ROUTER,
                "variants": [{"name": "b", "weight": 10, "model": {"repository": "s3://b/./x"}}],
            }
        },
        "spec.variants[0].model.repository",
        "spec.variants[0].model.repository: must not contain '.' or '..' path segments",
    ),
    # ---- whitespace and control characters in URIs and image references
    Case(
        "repository-spaces",
        {"spec": {"model": {"repository": "s3://bucket/my models; rm -rf /"}}},
        "spec.model.repository in body should match",
        "spec.model.repository: 's3://bucket/my models; rm -rf /' does not match",
    ),
    Case(
        "repository-control-char",
        {"spec": {"model": {"repository": "gs://bucket/a\tb"}}},
        "spec.model.repository in body should match",
        "spec.model.repository:",
    ),
    Case(
        "s3-endpoint-space",
        {"spec": {"model": {"s3": {"endpoint": "http://minio .storage:9000"}}}},
        "spec.model.s3.endpoint in body should match",
        "spec.model.s3.endpoint:",
    ),
    Case(
        "image-invalid-reference",
        {"spec": {"triton": {"image": "nvcr.io/nvidia/Triton Server:24.10"}}},
        "spec.triton.image in body should match",
        "spec.triton.image:",
    ),
    Case(
        "image-empty-component",
        {"spec": {"triton": {"image": "nvcr.io//tritonserver:24.10-py3"}}},
        "spec.triton.image in body should match",
        "spec.triton.image:",
    ),
    Case(
        "variant-image-invalid",
        {
            "spec": {
                "router": ROUTER,
                "variants": [
                    {"name": "b", "weight": 10, "triton": {"image": "img:tag with space"}}
                ],
            }
        },
        "spec.variants[0].triton.image in body should match",
        "spec.variants[0].triton.image:",
    ),
    # ---- quantities and durations out of range
    Case(
        "memory-millibytes",
        {"spec": {"triton": {"resources": {"memory": "1m"}}}},
        "spec.triton.resources.memory in body should match",
        "spec.triton.resources.memory: '1m' does not match",
    ),
    Case(
        "memory-bytes",
        {"spec": {"triton": {"resources": {"memory": 4096}}}},
        "must be between 1Mi and 64Ti",
        "spec.triton.resources.memory: must be between 1Mi and 64Ti",
    ),
    Case(
        "cpu-zero",
        {"spec": {"triton": {"resources": {"cpu": "0"}}}},
        "must be between 1m and 1024",
        "spec.triton.resources.cpu: must be between 1m and 1024",
    ),
    Case(
        "duration-overflow",
        {"spec": {"rollout": {"interval": "99999999999999999999h"}}},
        "spec.rollout.interval",
        "spec.rollout.interval:",
    ),
    Case(
        "duration-out-of-range",
        {"spec": {"rollout": {"interval": "48h"}}},
        "must be between 1s and 24h",
        "spec.rollout.interval: must be between 1s and 24h",
    ),
    Case(
        "progress-deadline-zero",
        {"spec": {"rollout": {"analysis": {"progressDeadline": "0s"}}}},
        "must be between 1s and 168h",
        "spec.rollout.analysis.progressDeadline: must be between 1s and 168h",
    ),
    # ---- pod settings Kubernetes would refuse in the Deployment
    Case(
        "pod-label-key",
        {"spec": {"podTemplate": {"labels": {"bad key!": "x"}}}},
        "spec.podTemplate.labels: Invalid value: keys must be valid Kubernetes label keys",
        "spec.podTemplate.labels: keys must be valid Kubernetes label keys",
    ),
    Case(
        "pod-label-value",
        {"spec": {"podTemplate": {"labels": {"team": "not valid!"}}}},
        "spec.podTemplate.labels.team in body should match",
        "spec.podTemplate.labels.team: 'not valid!' does not match",
    ),
    Case(
        "pod-annotation-key",
        {"spec": {"podTemplate": {"annotations": {"-starts-with-dash": "x"}}}},
        "spec.podTemplate.annotations: Invalid value",
        "spec.podTemplate.annotations: keys must be valid Kubernetes label keys",
    ),
    Case(
        "node-selector-key",
        {"spec": {"podTemplate": {"nodeSelector": {"Bad.Prefix/zone": "a"}}}},
        "spec.podTemplate.nodeSelector: Invalid value",
        "spec.podTemplate.nodeSelector: keys must be valid Kubernetes label keys",
    ),
    Case(
        "node-selector-value",
        {"spec": {"podTemplate": {"nodeSelector": {"zone": "a" * 64}}}},
        "spec.podTemplate.nodeSelector.zone",
        "spec.podTemplate.nodeSelector.zone:",
    ),
    Case(
        "toleration-exists-with-value",
        {
            "spec": {
                "podTemplate": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}
            }
        },
        "a toleration with operator Exists must not have a value",
        "spec.podTemplate.tolerations[0].value: a toleration with operator Exists must not have",
    ),
    Case(
        "toleration-bad-effect",
        {"spec": {"podTemplate": {"tolerations": [{"key": "k", "effect": "Sometimes"}]}}},
        'Unsupported value: "Sometimes"',
        "spec.podTemplate.tolerations[0].effect: must be one of",
    ),
    Case(
        "toleration-unknown-field",
        {"spec": {"podTemplate": {"tolerations": [{"key": "k", "efect": "NoSchedule"}]}}},
        'unknown field "spec.podTemplate.tolerations[0].efect"',
        "spec.podTemplate.tolerations[0]: unknown field(s): efect",
    ),
    Case(
        "toleration-seconds-without-noexecute",
        {"spec": {"podTemplate": {"tolerations": [{"key": "k", "tolerationSeconds": 30}]}}},
        "tolerationSeconds needs effect NoExecute",
        "tolerationSeconds needs effect NoExecute",
    ),
    Case(
        "service-account-name",
        {"spec": {"podTemplate": {"serviceAccountName": "Triton_SA"}}},
        "spec.podTemplate.serviceAccountName in body should match",
        "spec.podTemplate.serviceAccountName: 'Triton_SA' does not match",
    ),
    Case(
        "priority-class-name",
        {"spec": {"podTemplate": {"priorityClassName": "high priority"}}},
        "spec.podTemplate.priorityClassName in body should match",
        "spec.podTemplate.priorityClassName:",
    ),
    Case(
        "image-pull-secret-name",
        {"spec": {"podTemplate": {"imagePullSecrets": ["Registry Creds"]}}},
        "spec.podTemplate.imagePullSecrets[0] in body should match",
        "spec.podTemplate.imagePullSecrets[0]:",
    ),
    Case(
        "affinity-wrong-type",
        {"spec": {"podTemplate": {"affinity": {"nodeAffinity": "zone-a"}}}},
        "spec.podTemplate.affinity.nodeAffinity: Invalid value",
        "spec.podTemplate.affinity.nodeAffinity: must be an object, got str",
    ),
    Case(
        "affinity-terms-wrong-type",
        {
            "spec": {
                "podTemplate": {
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": "zone=a"}]
                            }
                        }
                    }
                }
            }
        },
        "nodeSelectorTerms[0].matchExpressions: Invalid value",
        "nodeSelectorTerms[0].matchExpressions: must be a list",
    ),
    Case(
        "gpu-product-not-a-label-value",
        {"spec": {"gpu": {"products": ["NVIDIA-H100-"]}}},
        "spec.gpu.products[0] in body should match",
        "spec.gpu.products[0]:",
    ),
    # ---- routes the Gateway API would refuse
    Case(
        "path-prefix-dotdot",
        {"spec": {"router": {"gateway": {"name": "gw"}, "pathPrefix": "/v2/../admin"}}},
        "must not contain '//', '/./', '/../'",
        "spec.router.pathPrefix: must not contain '//', '/./', '/../'",
    ),
    Case(
        "path-prefix-double-slash",
        {"spec": {"router": {"gateway": {"name": "gw"}, "pathPrefix": "/v2//models"}}},
        "must not contain '//', '/./', '/../'",
        "spec.router.pathPrefix: must not contain '//'",
    ),
    Case(
        "path-prefix-space",
        {"spec": {"router": {"gateway": {"name": "gw"}, "pathPrefix": "/v2/my models"}}},
        "spec.router.pathPrefix in body should match",
        "spec.router.pathPrefix: '/v2/my models' does not match",
    ),
    Case(
        "header-match-empty-value",
        {
            "spec": {
                "router": {
                    "gateway": {"name": "gw"},
                    "headerMatches": [{"header": "x-ab", "value": "", "variant": "main"}],
                }
            }
        },
        "spec.router.headerMatches[0].value in body should be at least 1 chars long",
        "spec.router.headerMatches[0].value: must be at least 1 character(s)",
    ),
    # ---- arguments and variables that would undo Sluice's guarantees
    Case(
        "args-model-control-mode",
        {"spec": {"triton": {"args": ["--log-verbose=1", "--model-control-mode=poll"]}}},
        "spec.triton.args: Invalid value",
        "spec.triton.args: must not set flags Sluice renders itself",
    ),
    Case(
        "args-model-repository-two-tokens",
        {"spec": {"triton": {"args": ["--model-repository", "/etc"]}}},
        "must not set flags Sluice renders itself",
        "'--model-repository' sets --model-repository",
    ),
    Case(
        "args-abbreviated-flag",
        {"spec": {"triton": {"args": ["--model-control=poll"]}}},
        "must not set flags Sluice renders itself",
        "'--model-control=poll' sets --model-control-mode",
    ),
    Case(
        "args-metrics-summary",
        {"spec": {"triton": {"args": ["--metrics-config=summary_latencies=false"]}}},
        "must not set flags Sluice renders itself",
        "sets --metrics-config",
    ),
    Case(
        "args-control-character",
        {"spec": {"triton": {"args": ["--log-verbose=1\n--model-control-mode=poll"]}}},
        "spec.triton.args[0] in body should match",
        "spec.triton.args[0]:",
    ),
    Case(
        "env-sluice-variable",
        {"spec": {"triton": {"env": [{"name": "SLUICE_MODEL_VERSION", "value": "2"}]}}},
        "must not set SLUICE_MODEL or SLUICE_MODEL_VERSION",
        "spec.triton.env: must not set SLUICE_MODEL or SLUICE_MODEL_VERSION",
    ),
    Case(
        "env-region-twice",
        {
            "spec": {
                "model": {"s3": {"region": "eu-west-1"}},
                "triton": {"env": [{"name": "AWS_DEFAULT_REGION", "value": "us-east-1"}]},
            }
        },
        "spec.triton.env must not set AWS_DEFAULT_REGION",
        "spec.triton.env must not set AWS_DEFAULT_REGION",
    ),
    Case(
        "env-google-credentials-twice",
        {
            "spec": {
                "model": {"repository": "gs://bucket/models", "credentialsSecret": "gcs"},
                "triton": {"env": [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/x"}]},
            }
        },
        "must not set GOOGLE_APPLICATION_CREDENTIALS",
        "must not set GOOGLE_APPLICATION_CREDENTIALS",
    ),
]


# Valid edge cases: both the parser and the apiserver must accept each, so that
# the rules above refuse only what Kubernetes, Triton or the Gateway API would.
ACCEPTED = [
    Case(
        "everything-near-the-rules",
        {
            "metadata": {"name": "a" + "-b" * 20 + "c"},
            "spec": {
                "model": {
                    "name": "..model.v2_x-",
                    "repository": "s3://bucket/path/.hidden/..x/models;v=1",
                    "s3": {"endpoint": "http://10.0.0.1:9000", "region": "eu-west-1"},
                    "credentialsSecret": "s3.creds",
                },
                "triton": {
                    "image": "localhost:5000/team/triton_server__x:24.10-py3@sha256:" + "a" * 64,
                    "resources": {"cpu": "500m", "memory": "1Mi"},
                    "args": [
                        "--log-verbose=1",
                        "--http-address=127.0.0.1",
                        "--backend-directory=/opt/backends",
                        "--metrics-config=histogram_latencies=true",
                        "--model-load-thread-count=2",
                        "--allow-grpc=false",
                        "--exit-timeout-secs=5",
                        "--",
                    ],
                    "env": [
                        {"name": "SLUICE_LOAD_RETRY_SECONDS", "value": "3"},
                        {"name": "AWS_PROFILE", "value": "x"},
                    ],
                },
                "rollout": {"interval": "23h59m59s999ms"},
                "router": {
                    "gateway": {"name": "gw"},
                    "pathPrefix": "/v2/models/a.b/%41~x",
                    "headerMatches": [{"header": "x-ab", "value": " ", "variant": "main"}],
                },
                "podTemplate": {
                    "labels": {"example.com/team": "ml", "empty": ""},
                    "annotations": {"a.b/c": "any value at all: {json}"},
                    "serviceAccountName": "triton.runner",
                    "priorityClassName": "gpu-high",
                    "imagePullSecrets": ["registry.creds"],
                    "nodeSelector": {"topology.kubernetes.io/zone": "eu-1a"},
                    "tolerations": [
                        {"operator": "Exists"},
                        {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
                        {"key": "k", "effect": "NoExecute", "tolerationSeconds": 30},
                    ],
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {"matchExpressions": [{"key": "zone", "operator": "Exists"}]}
                                ]
                            },
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 10,
                                    "preference": {
                                        "matchExpressions": [
                                            {"key": "a", "operator": "In", "values": ["b"]}
                                        ]
                                    },
                                }
                            ],
                        },
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 1,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": {"app": "x"}},
                                    },
                                }
                            ]
                        },
                    },
                },
            },
        },
        "",
        "",
    ),
    Case("memory-integer-bytes", {"spec": {"triton": {"resources": {"memory": 1048576}}}}, "", ""),
    Case("cpu-integer", {"spec": {"triton": {"resources": {"cpu": 2}}}}, "", ""),
]
