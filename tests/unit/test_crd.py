"""The CRD in crds/ is generated from the spec types and teaches through descriptions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sluice.api.crd import crd, crd_yaml

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "sluice.dev_inferenceservices.yaml"


def test_committed_crd_matches_the_spec_types() -> None:
    assert CRD_FILE.read_text() == crd_yaml(), (
        "crds/ is stale: run `make crds` after changing operator/sluice/api"
    )


def _walk(schema: dict[str, Any], path: str = ""):
    yield path, schema
    for name, sub in (schema.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_every_spec_and_status_field_has_a_description() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = [
        p
        for part in ("spec", "status")
        for p, s in _walk(root["properties"][part], part)
        if not p.endswith("[]") and not s.get("description")
    ]
    assert not missing, f"fields without a description: {missing}"


def test_schema_is_structural_and_declares_no_defaults() -> None:
    root = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, s in _walk(root["properties"]["spec"], "spec"):
        assert (
            "type" in s
            or s.get("x-kubernetes-int-or-string")
            or s.get("x-kubernetes-preserve-unknown-fields")
        ), path
        # Defaults on the server would rewrite the user's object: GitOps drift.
        assert "default" not in s, path


def test_names_subresources_and_columns() -> None:
    c = crd()
    names = c["spec"]["names"]
    assert names["kind"] == "InferenceService"
    assert "isvc" not in names["shortNames"]  # KServe's short name
    v = c["spec"]["versions"][0]
    assert v["subresources"]["status"] == {}
    assert v["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    cols = [col["name"] for col in v["additionalPrinterColumns"]]
    assert cols == ["Model", "Version", "Ready", "Replicas", "URL", "Age"]


def test_cel_rules_are_present() -> None:
    text = json.dumps(crd())
    for fragment in ("minReplicas <= self.maxReplicas", "isSorted()", ".sum() <= 100"):
        assert fragment in text
