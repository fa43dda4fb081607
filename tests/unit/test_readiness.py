"""Status from plan and observation: conditions say what was seen and why."""

from __future__ import annotations

from sluice.api.v1alpha1 import InferenceServiceStatus
from sluice.policy.readiness import DeploymentState, pod_problems, served_status
from sluice.render.plan import Variant

NOW = 1_795_420_800.0  # 2026-11-23T08:00:00Z


def status(states: dict[str, DeploymentState], problems: dict[str, str] | None = None) -> dict:
    return served_status(
        InferenceServiceStatus(),
        model="m",
        variants=[Variant("main", 3, "img", "s3://b", 2, 100)],
        states=states,
        generation=4,
        url="http://m.ns.svc.cluster.local:8000",
        selector="sel",
        route=None,
        rollout_in_flight=False,
        now=NOW,
        problems=problems,
    ).to_dict()


def cond(st: dict, type_: str) -> dict:
    return next(c for c in st["conditions"] if c["type"] == type_)


def test_ready_when_rolled_out() -> None:
    st = status({"main": DeploymentState("m-main", "main", 2, 2, 2, 2, True, 3)})
    assert cond(st, "Ready")["status"] == "True"
    assert cond(st, "Progressing")["reason"] == "Complete"
    assert st["observedGeneration"] == 4 and st["ready"] == "2/2" and st["version"] == 3


def test_not_ready_says_why_with_the_pod_problem() -> None:
    st = status(
        {"main": DeploymentState("m-main", "main", 2, 1, 2, 1, True, 3)},
        {"main": "pod m-main-x unschedulable: 0/3 nodes are available"},
    )
    ready = cond(st, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RollingOut"
    assert "main 1/2 ready (version 3): pod m-main-x unschedulable" in ready["message"]


def test_not_ready_while_old_pods_remain() -> None:
    # 2 updated and ready, but the surge pod of the old version is still there.
    st = status({"main": DeploymentState("m-main", "main", 2, 3, 2, 3, True, 3, pods=3)})
    assert cond(st, "Ready")["status"] == "False"
    st = status({"main": DeploymentState("m-main", "main", 2, 2, 2, 2, True, 3, pods=2)})
    assert cond(st, "Ready")["status"] == "True"


def test_stale_deployment_is_not_ready() -> None:
    st = status({"main": DeploymentState("m-main", "main", 2, 2, 2, 2, False, 3)})
    assert cond(st, "Ready")["status"] == "False"


def test_transition_time_kept_while_status_unchanged() -> None:
    t1, t2, t3 = NOW, NOW + 1, NOW + 2
    c1 = InferenceServiceStatus().with_condition("Ready", True, "Serving", "a", t1)
    c2 = c1.with_condition("Ready", True, "Serving", "b", t2)
    c3 = c2.with_condition("Ready", False, "RollingOut", "c", t3)
    assert c2.conditions[0].last_transition_time == t1 and c2.conditions[0].message == "b"
    assert c3.conditions[0].last_transition_time == t3


def test_pod_problems_reads_unschedulable_and_waiting_reasons() -> None:
    pods = [
        {
            "metadata": {"name": "a", "labels": {"v": "main"}},
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "message": 'persistentvolumeclaim "x" not found',
                    }
                ]
            },
        },
        {
            "metadata": {"name": "b", "labels": {"v": "canary"}},
            "status": {
                "containerStatuses": [
                    {
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": "no such image"}
                        }
                    }
                ]
            },
        },
        {"metadata": {"name": "c", "labels": {"v": "other"}}, "status": {"phase": "Running"}},
    ]
    assert pod_problems(pods, "v") == {
        "main": 'pod a unschedulable: persistentvolumeclaim "x" not found',
        "canary": "pod b ImagePullBackOff: no such image",
    }


# ------------------------------------------- what Kubernetes already says


def test_replica_failure_is_in_the_ready_message_of_its_variant() -> None:
    from sluice.policy.readiness import deployment_problem

    problem = deployment_problem(
        [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
            {
                "type": "ReplicaFailure",
                "status": "True",
                "reason": "FailedCreate",
                "message": 'pods "m-main-5d" is forbidden: error looking up service account '
                'ns/triton: serviceaccount "triton" not found',
            },
        ]
    )
    assert problem is not None
    st = status({"main": DeploymentState("m-main", "main", 2, 0, 0, 0, True, 3, problem=problem)})
    msg = cond(st, "Ready")["message"]
    assert "main 0/2 ready (version 3): ReplicaFailure (FailedCreate): " in msg
    assert 'serviceaccount "triton" not found' in msg


def test_progress_deadline_exceeded_is_reported() -> None:
    from sluice.policy.readiness import deployment_problem

    conds = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "m-main-5d" has timed out progressing.',
        }
    ]
    assert deployment_problem(conds) == (
        'ProgressDeadlineExceeded: ReplicaSet "m-main-5d" has timed out progressing.'
    )
    healthy = [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]
    assert deployment_problem(healthy) is None


def test_deployment_and_pod_problems_are_both_shown() -> None:
    st = status(
        {
            "main": DeploymentState(
                "m-main", "main", 2, 1, 2, 1, True, 3, problem="ReplicaFailure x"
            )
        },
        {"main": "pod m-main-y ImagePullBackOff: back-off pulling image"},
    )
    assert "ReplicaFailure x; pod m-main-y ImagePullBackOff" in cond(st, "Ready")["message"]


def _pod(name: str, **status: object) -> dict:
    return {"metadata": {"name": name, "labels": {"v": "main"}}, "status": status}


def test_stuck_containers_are_named_with_their_reason_and_last_exit() -> None:
    crash = _pod(
        "p1",
        containerStatuses=[
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        ],
    )
    assert pod_problems([crash], "v") == {
        "main": "pod p1 CrashLoopBackOff: back-off 40s (last exit code 1, Error)"
    }
    secret = _pod(
        "p2",
        containerStatuses=[
            {
                "state": {
                    "waiting": {
                        "reason": "CreateContainerConfigError",
                        "message": 'secret "s3-creds" not found',
                    }
                }
            }
        ],
    )
    assert pod_problems([secret], "v") == {
        "main": 'pod p2 CreateContainerConfigError: secret "s3-creds" not found'
    }
    for reason in ("ImagePullBackOff", "ErrImagePull", "InvalidImageName"):
        p = _pod("p3", containerStatuses=[{"state": {"waiting": {"reason": reason}}}])
        assert pod_problems([p], "v") == {"main": f"pod p3 {reason}"}
    loading = _pod(
        "p4", containerStatuses=[{"state": {"waiting": {"reason": "ContainerCreating"}}}]
    )
    assert pod_problems([loading], "v") == {}
