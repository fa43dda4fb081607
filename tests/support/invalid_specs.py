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
]
