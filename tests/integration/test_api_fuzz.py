"""The apiserver and the parser agree on malformed inputs not in the table, and
the apiserver accepts what Sluice renders from each input both accept."""

from __future__ import annotations

from pathlib import Path

from kubernetes.client.exceptions import ApiException

from sluice.api.schema import SpecError
from sluice.api.v1alpha1 import check_name, parse_spec
from sluice.reconcile.apply import is_refusal, reason_of
from sluice.reconcile.desired import desired
from sluice.reconcile.kube import Kube, load_config
from tests.support.fuzz import mutants


def test_apiserver_and_parser_agree_on_mutants(kubeconfig: Path, crds: None) -> None:
    kube = Kube(load_config(str(kubeconfig)))
    disagree: list[str] = []
    refused_children: list[str] = []
    for m in mutants(400, seed=2026):
        obj = {**m.obj, "metadata": {**m.obj["metadata"], "namespace": "default"}}
        try:
            check_name(obj["metadata"]["name"])
            spec = parse_spec(obj["spec"])
            parser = ""
        except SpecError as e:
            spec, parser = None, str(e)
        try:
            kube.dry_run_apply(obj)
            api = ""
        except ApiException as e:
            assert is_refusal(e), (m.id, e.status, reason_of(e))
            api = reason_of(e)
        if bool(parser) != bool(api):
            disagree.append(f"{m.id}: parser={parser or 'ok'!r} api={api or 'ok'!r}")
            continue
        if spec is None:
            continue
        _, children = desired({**obj, "metadata": {**obj["metadata"], "uid": ""}}, spec)
        for child in children:
            if child["kind"] not in ("Deployment", "Service", "HTTPRoute"):
                continue
            try:
                kube.dry_run_apply(child)
            except ApiException as e:
                refused_children.append(f"{m.id}: {child['kind']}: {reason_of(e)}")
    assert not disagree, "\n".join(disagree)
    # Pass-through pod fields (podAffinity/podAntiAffinity) are Kubernetes' to
    # validate; anything else Sluice renders must be accepted.
    unexpected = [r for r in refused_children if "ffinity" not in r.split(":", 2)[1]]
    assert not unexpected, "\n".join(unexpected)
