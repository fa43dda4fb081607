"""The parser on malformed inputs that are not in the table (tests/support/fuzz.py)."""

from __future__ import annotations

from collections import Counter

from sluice.api.schema import SpecError
from sluice.api.v1alpha1 import check_name, parse_spec
from sluice.reconcile.desired import desired
from tests.support.fuzz import mutants


def test_parser_fails_only_with_spec_error_and_what_it_accepts_renders() -> None:
    verdicts: Counter[str] = Counter()
    for m in mutants(600, seed=12):
        try:
            check_name(m.obj["metadata"]["name"])
            spec = parse_spec(m.obj["spec"])
        except SpecError as e:
            assert e.path, m.id  # every refusal names a field
            verdicts["refused"] += 1
            continue
        except Exception as e:  # pragma: no cover - the failure this test exists for
            raise AssertionError(f"{m.id}: {e!r}") from e
        verdicts["accepted"] += 1
        obj = {**m.obj, "metadata": {**m.obj["metadata"], "namespace": "ns", "uid": "u"}}
        _, children = desired(obj, spec)
        for child in children:
            if child["kind"] != "Deployment":
                continue
            c = child["spec"]["template"]["spec"]["containers"][0]
            names = [e["name"] for e in c["env"]]
            assert len(names) == len(set(names)), m.id
            assert "--model-control-mode=explicit" in c["args"], m.id
            assert len([a for a in c["args"] if a.startswith("--model-c")]) == 1, m.id
            probe = c["readinessProbe"]["httpGet"]["path"]
            assert "/../" not in probe and "/./" not in probe, m.id
    assert verdicts["refused"] > 200 and verdicts["accepted"] > 40, verdicts
