"""The local data plane's pure parts (hack/dataplane.py): no processes, no cluster.

What a node substitutes in the rendered container (model repository root, listen
addresses, the tritonserver binary), the pod-IP aliasing 127.x <-> 10.x, address
allocation, the kubelet's probe rules and the PodMonitor's labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.api.v1alpha1 import parse_spec
from sluice.render import podmonitor, triton
from sluice.render.plan import Meta, Variant
from tests.support.hack import hack_module

dp = hack_module("dataplane")
MODELS = Path("/models")


def rendered(repository: str, **model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Triton container and a pod spec with its volumes, as Sluice renders them."""
    spec = parse_spec({"model": {"name": "m", "repository": repository, "version": 1, **model}})
    v = Variant(name="main", version=1, image="img:1", repository=repository, replicas=1)
    return triton.container(spec, v), {"volumes": triton.volumes(spec, v)}


def repository_arg(argv: list[str]) -> str:
    (arg,) = [a for a in argv if a.startswith("--model-repository=")]
    return arg.partition("=")[2]


# ------------------------------------------------------------ repositories


@pytest.mark.parametrize(
    ("repository", "local"),
    [
        ("s3://bucket/path/to/repo", "/models/bucket/path/to/repo"),
        ("s3://bucket", "/models/bucket"),
        ("gs://bucket/repo", "/models/bucket/repo"),
        ("as://account/container/repo", "/models/account/container/repo"),
        ("pvc://claim/sub/dir", "/models/claim/sub/dir"),
        ("pvc://claim", "/models/claim"),
    ],
)
def test_rendered_repositories_resolve_under_the_models_directory(
    repository: str, local: str
) -> None:
    c, pod = rendered(repository)
    argv = dp.local_argv(c, pod, "127.1.2.3", Path("/bin/tritonserver"), MODELS)
    assert repository_arg(argv) == local


def test_an_s3_endpoint_in_the_url_is_dropped_the_bucket_kept() -> None:
    c, pod = rendered("s3://bucket/repo", s3={"endpoint": "http://minio:9000"})
    assert repository_arg(c["args"]).startswith("s3://http://minio:9000/")  # as Triton wants it
    argv = dp.local_argv(c, pod, "127.1.2.3", Path("/bin/tritonserver"), MODELS)
    assert repository_arg(argv) == "/models/bucket/repo"


def test_a_local_path_is_left_alone() -> None:
    assert dp.resolve_repository("/srv/repo", {}, MODELS) == "/srv/repo"


def test_the_container_runs_as_rendered_but_for_the_nodes_substitutions() -> None:
    c, pod = rendered("s3://bucket/repo")
    argv = dp.local_argv(c, pod, "127.1.2.3", Path("/node/tritonserver"), MODELS)
    n = len(c["command"])
    assert argv[:n] == c["command"]  # the embedded launcher, unchanged
    args = argv[n:]
    changed = [(a, b) for a, b in zip(c["args"], args, strict=False) if a != b]
    assert changed == [
        ("tritonserver", "/node/tritonserver"),
        ("--model-repository=s3://bucket/repo", "--model-repository=/models/bucket/repo"),
    ]
    assert args[len(c["args"]) :] == [
        "--http-address=127.1.2.3",
        "--grpc-address=127.1.2.3",
        "--metrics-address=127.1.2.3",
    ]


# --------------------------------------------------------------- addresses


def test_pod_ips_alias_loopback_addresses_both_ways() -> None:
    assert dp.pod_ip("127.150.7.9") == "10.150.7.9"
    assert dp.host_address("10.150.7.9") == "127.150.7.9"
    for host in ("127.100.0.2", "127.200.255.254"):
        assert dp.host_address(dp.pod_ip(host)) == host
    assert dp.host_address("127.0.0.1") == "127.0.0.1"  # not an alias: unchanged
    with pytest.raises(AssertionError):
        dp.pod_ip("10.0.0.1")  # only loopback addresses are pods' own


def test_the_gateway_maps_published_ips_back_the_same_way() -> None:
    gw = hack_module("gateway")
    for ip in ("10.150.7.9", "10.244.0.5", "192.168.1.1"):
        assert gw.host_address(ip) == dp.host_address(ip)
        assert gw.host_address(ip).startswith("127.") or not ip.startswith("10.")


def test_addresses_are_handed_out_in_turn_not_the_lowest_free_one() -> None:
    a = dp.Addresses("127.150.7", free=lambda ip: True)
    first, second = a.take(), a.take()
    assert (first, second) == ("127.150.7.2", "127.150.7.3")
    a.release(first)
    assert a.take() == "127.150.7.4"  # the released one is not reused at once


def test_addresses_wrap_around_and_skip_used_and_busy_ones() -> None:
    busy = {"127.150.7.3"}
    a = dp.Addresses("127.150.7", free=lambda ip: ip not in busy)
    a.last = 253
    assert a.take() == "127.150.7.254"
    assert a.take() == "127.150.7.2"  # wrapped; .0, .1 and .255 are never pods'
    assert a.take() == "127.150.7.4"  # .3 is bound by someone else
    assert a.take("127.150.7.2") != "127.150.7.2"  # in use: not given twice
    assert a.take("127.150.7.100") == "127.150.7.100"  # a restarted plane keeps a pod's IP


def test_no_free_address_is_an_error() -> None:
    a = dp.Addresses("127.150.7", free=lambda ip: False)
    with pytest.raises(RuntimeError, match="no free address"):
        a.take()


# ------------------------------------------------------------------ probes


def probes(**specs: dict[str, Any]) -> dict[str, Any]:
    out = {k: dp.Probe(k, s) for k, s in specs.items()}
    for p in out.values():
        p.reset(0.0)
    return out


class Answers:
    """A check that answers from a script per probe kind, and records the calls."""

    def __init__(self, **script: list[bool]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[str] = []

    def __call__(self, probe: Any) -> bool:
        self.calls.append(probe.kind)
        return self.script[probe.kind].pop(0)


def run(
    ps: dict[str, Any], check: Answers, times: list[float], started: bool = False
) -> list[tuple[bool, bool, str | None]]:
    ready, out = False, []
    for t in times:
        started, ready, why = dp.probe_step(ps, t, started, ready, check)
        out.append((started, ready, why))
        if why:
            break
    return out


def test_readiness_waits_for_the_startup_probe_then_follows_its_thresholds() -> None:
    ps = probes(
        startupProbe={"periodSeconds": 10, "failureThreshold": 3},
        readinessProbe={"periodSeconds": 5, "failureThreshold": 2},
    )
    check = Answers(startupProbe=[False, True], readinessProbe=[True, False, False, True])
    steps = run(ps, check, [0, 5, 10, 15, 20, 25])
    assert [s[:2] for s in steps] == [
        (False, False),  # t=0 startup fails
        (False, False),  # t=5 nothing due
        (True, True),  # t=10 startup passes, readiness probed at once
        (True, True),  # t=15 one failure: below the threshold of 2
        (True, False),  # t=20 the second: not ready
        (True, True),  # t=25 one success (successThreshold 1)
    ]
    assert check.calls == ["startupProbe"] * 2 + ["readinessProbe"] * 4


def test_startup_failures_at_the_threshold_restart_the_container() -> None:
    ps = probes(startupProbe={"periodSeconds": 10, "failureThreshold": 3})
    steps = run(ps, Answers(startupProbe=[False] * 3), [0, 10, 20])
    assert steps[-1] == (False, False, "startup probe failed")
    assert all(s[2] is None for s in steps[:-1])


def test_liveness_failures_restart_only_after_the_threshold_in_a_row() -> None:
    ps = probes(livenessProbe={"periodSeconds": 1, "failureThreshold": 2})
    steps = run(ps, Answers(livenessProbe=[False, True, False, False]), [0, 1, 2, 3], started=True)
    assert [s[2] for s in steps] == [None, None, None, "liveness probe failed"]
    assert steps[0][1] is True  # no readiness probe: a started container is ready


def test_initial_delay_and_success_threshold() -> None:
    ps = probes(
        readinessProbe={"periodSeconds": 1, "successThreshold": 2, "initialDelaySeconds": 3}
    )
    check = Answers(readinessProbe=[True, True])
    steps = run(ps, check, [0, 2, 3, 4], started=True)
    assert [s[1] for s in steps] == [False, False, False, True]
    assert check.calls == ["readinessProbe"] * 2  # nothing before the initial delay


def test_the_rendered_probes_make_a_pod_ready_within_one_startup_period() -> None:
    c, _pod = rendered("s3://bucket/repo")
    ps = probes(**{k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")})
    # Triton loads for 12 s: the startup probe at 0 and 10 fails, at 20 passes.
    check = Answers(
        startupProbe=[False, False, True], readinessProbe=[True] * 9, livenessProbe=[True] * 9
    )
    steps = run(ps, check, [float(t) for t in range(0, 41)])
    became_ready = next(t for t, s in enumerate(steps) if s[1])
    assert became_ready == 20
    assert all(s[2] is None for s in steps)


# ------------------------------------------------------------------ labels


def test_targets_carry_the_labels_the_rendered_podmonitor_gives() -> None:
    relabel = podmonitor(Meta(name="x", namespace="x"))["spec"]["podMetricsEndpoints"][0]
    pod = {
        "metadata": {
            "namespace": "team",
            "name": "m-main-abc12",
            "labels": {
                "sluice.dev/inferenceservice": "m",
                "sluice.dev/variant": "main",
                "sluice.dev/model-version": "3",
            },
        }
    }
    labels = dp.target_labels(pod, relabel["relabelings"])
    assert labels == {
        "namespace": "team",
        "pod": "m-main-abc12",
        "inferenceservice": "m",
        "variant": "main",
        "model_version": "3",
        "container": "triton",
        "endpoint": "metrics",
    }
