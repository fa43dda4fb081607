"""manifests/argocd/health.lua, run in Lua 5.1 (the language of Argo CD's gopher-lua).

The cases are Argo CD's own test format (health_test.yaml + testdata/); more
cases build the status with the operator's real status code
(sluice.policy.readiness), so a renamed reason cannot slip past the check.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from sluice.api.v1alpha1 import MAIN_VARIANT, InferenceServiceStatus
from sluice.policy import readiness
from sluice.render.plan import Variant

REPO = Path(__file__).resolve().parents[2]
ARGOCD = REPO / "manifests" / "argocd"
HEALTH_LUA = (ARGOCD / "health.lua").read_text()
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON-like Python data as Argo CD hands it to Lua: objects and arrays become tables."""
    if isinstance(value, dict):
        t = lua.table()
        for k, v in value.items():
            if v is not None:
                t[k] = _to_lua(lua, v)
        return t
    if isinstance(value, list):
        return lua.table(*[_to_lua(lua, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua on ``obj`` with only the libraries Argo CD opens (no io, os, require)."""
    lua = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    g = lua.globals()
    for unsafe in ("io", "os", "package", "require", "debug", "dofile", "loadfile", "load"):
        g[unsafe] = None
    g.obj = _to_lua(lua, obj)
    hs = lua.execute(HEALTH_LUA)
    assert hs is not None, "health.lua returned nothing"
    out = {"status": hs["status"], "message": hs["message"]}
    assert out["status"] in ARGO_STATUSES, out
    assert isinstance(out["message"], str), out
    return out


def load(case: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    return doc


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_health_test_yaml_cases(case: dict[str, Any]) -> None:
    assert health(load(case)) == case["healthStatus"]


def test_every_testdata_file_is_a_case_and_every_outcome_is_covered() -> None:
    listed = {Path(c["inputPath"]).name for c in CASES}
    on_disk = {p.name for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert listed == on_disk
    assert {c["healthStatus"]["status"] for c in CASES} == {
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
    }


WITH_CONDITIONS = [c for c in CASES if (load(c).get("status") or {}).get("conditions")]


@pytest.mark.parametrize(
    "case", WITH_CONDITIONS, ids=[Path(c["inputPath"]).stem for c in WITH_CONDITIONS]
)
def test_more_conditions_in_any_order_change_nothing(case: dict[str, Any]) -> None:
    """KServe's check counted True conditions and broke when types were added (#3973, #4791)."""
    obj = load(case)
    rnd = random.Random(Path(case["inputPath"]).stem)
    for _ in range(5):
        o = copy.deepcopy(obj)
        conds = o["status"]["conditions"]
        for i in range(rnd.randint(1, 6)):
            conds.append(
                {
                    "type": f"FutureCondition{i}",
                    "status": rnd.choice(["True", "False", "Unknown"]),
                    "reason": "Whatever",
                    "message": "a condition this check does not know",
                }
            )
        rnd.shuffle(conds)
        assert health(o) == case["healthStatus"]


def test_the_argocd_cm_patch_carries_this_exact_lua() -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"]["resource.customizations.health.sluice.dev_InferenceService"] == HEALTH_LUA


# --- statuses produced by the operator's own status code ----------------------------------

NOW = 1_795_168_800.0  # 2026-11-20T10:00:00Z


def _variants(replicas: int) -> list[Variant]:
    return [Variant(MAIN_VARIANT, 3, "tritonserver:24.08-py3", "s3://m", replicas, 100)]


def _state(ready: int, replicas: int) -> readiness.DeploymentState:
    return readiness.DeploymentState(
        name="m-main",
        variant=MAIN_VARIANT,
        replicas=replicas,
        ready=ready,
        updated=replicas,
        available=ready,
        current=True,
        version=3,
    )


def _served(ready: int, wanted: int, in_flight: bool = False) -> dict[str, Any]:
    return readiness.served_status(
        InferenceServiceStatus(),
        model="m",
        variants=_variants(wanted),
        states={MAIN_VARIANT: _state(ready, wanted)},
        generation=4,
        url="http://m.ns.svc.cluster.local:8000",
        selector="sluice.dev/inferenceservice=m",
        route=None,
        rollout_in_flight=in_flight,
        now=NOW,
    ).to_dict()


def _obj(status: dict[str, Any], generation: int = 4) -> dict[str, Any]:
    return {
        "apiVersion": "sluice.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "spec": {},
        "status": status,
    }


def test_operator_status_serving_is_healthy() -> None:
    assert health(_obj(_served(2, 2)))["status"] == "Healthy"


def test_operator_status_while_pods_start_is_progressing() -> None:
    assert health(_obj(_served(0, 2)))["status"] == "Progressing"
    assert health(_obj(_served(1, 2)))["status"] == "Progressing"


def test_operator_status_during_a_canary_is_progressing() -> None:
    assert health(_obj(_served(2, 2, in_flight=True)))["status"] == "Progressing"


def test_operator_status_scaled_to_zero_is_suspended() -> None:
    assert health(_obj(_served(0, 0)))["status"] == "Suspended"


def test_operator_status_for_an_invalid_spec_is_degraded() -> None:
    # A once-serving object whose new spec is invalid: the fleet still runs, Argo must tell.
    served = InferenceServiceStatus.from_dict(_served(2, 2))
    status = readiness.invalid_spec_status(served, "spec.gpu.count: too many", 5, NOW).to_dict()
    hs = health(_obj(status, generation=5))
    assert hs == {"status": "Degraded", "message": "Invalid spec: spec.gpu.count: too many"}


def test_operator_status_of_an_old_generation_is_progressing() -> None:
    # The user pushed generation 5; the status still describes 4, however good it looks.
    assert health(_obj(_served(2, 2), generation=5))["status"] == "Progressing"


def test_rolled_back_rollout_on_a_serving_fleet_is_degraded() -> None:
    status = {**_served(2, 2), "rollout": {"phase": "RolledBack", "message": "p99 too high"}}
    assert health(_obj(status)) == {
        "status": "Degraded",
        "message": "Canary rolled back: p99 too high",
    }
