"""Leader election on a real Lease: exactly one holder, takeover within the lease
duration, never before it, and a leader that cannot renew stops first.

The first tests drive :class:`sluice.leader.LeaderElector` in threads; the last
ones run two real ``sluice run`` processes the way the chart's two replicas run.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sluice.leader import LeaderElector, LeaseConfig
from tests.support.kube import Kubectl, temp_namespace
from tests.support.sluice_run import start, stop
from tests.support.triton import free_port, http_get
from tests.support.wait import never, until

REPO = Path(__file__).resolve().parents[2]
LEASE, RENEW, RETRY = 3.0, 2.0, 0.25


@pytest.fixture(scope="module")
def ns(kubectl: Kubectl) -> Iterator[str]:
    with temp_namespace(kubectl, "leader") as name:
        yield name


@pytest.fixture
def api(kubeconfig: Path) -> k8s.ApiClient:
    return k8s_config.new_client_from_config(config_file=str(kubeconfig))


def elector(api: k8s.ApiClient, ns: str, lease: str, who: str) -> LeaderElector:
    cfg = LeaseConfig(
        ns, lease, who, lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY
    )
    return LeaderElector(api, cfg)


@contextmanager
def candidate(e: LeaderElector) -> Iterator[threading.Event]:
    """Run ``acquire`` in a thread; the yielded event stops it. Never leaves it running."""
    stop = threading.Event()
    t = threading.Thread(target=e.acquire, args=(stop,), daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        e.stop_renewing()
        t.join(timeout=10)
        assert not t.is_alive()


def lease_holder(api: k8s.ApiClient, ns: str, name: str) -> str | None:
    lease = k8s.CoordinationV1Api(api).read_namespaced_lease(name, ns)
    return lease.spec.holder_identity


def steal(api: k8s.ApiClient, ns: str, name: str, who: str = "intruder") -> None:
    """What another leader's write looks like: a new holder, renewed now."""
    coord = k8s.CoordinationV1Api(api)
    raw = json.loads(coord.read_namespaced_lease(name, ns, _preload_content=False).data)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raw["spec"].update({"holderIdentity": who, "renewTime": now, "acquireTime": now})
    coord.replace_namespaced_lease(name, ns, raw)


def test_exactly_one_of_two_candidates_leads(api: k8s.ApiClient, ns: str) -> None:
    a, b = elector(api, ns, "one", "a"), elector(api, ns, "one", "b")
    with candidate(a), candidate(b):
        until(lambda: a.is_leader or b.is_leader, 10, "a leader")
        leader = a if a.is_leader else b
        lost = threading.Event()
        leader.hold(on_lost=lost.set)
        never(lambda: (a.is_leader and b.is_leader) or lost.is_set(), 2 * LEASE, "two leaders")
        assert lease_holder(api, ns, "one") == leader.config.identity


def test_standby_takes_over_a_crashed_leader_within_the_lease_duration(
    api: k8s.ApiClient, ns: str
) -> None:
    a, b = elector(api, ns, "crash", "a"), elector(api, ns, "crash", "b")
    with candidate(a):
        until(lambda: a.is_leader, 10, "a to lead")
        a.hold(on_lost=lambda: None)
        with candidate(b):
            never(lambda: b.is_leader, LEASE, "b leading while a renews")
            a.stop_renewing()  # a crash: no release, the Lease just stops being renewed
            t0 = time.monotonic()
            until(lambda: b.is_leader, LEASE + 5, "b to take over")
            took = time.monotonic() - t0
    # Not before the Lease expired (a renewed at most RETRY before t0), and promptly after.
    assert LEASE - RETRY - 0.05 <= took <= LEASE + 3 * RETRY + 1.0, took
    assert lease_holder(api, ns, "crash") == "b"


def test_released_lease_is_taken_at_once(api: k8s.ApiClient, ns: str) -> None:
    a, b = elector(api, ns, "release", "a"), elector(api, ns, "release", "b")
    with candidate(a):
        until(lambda: a.is_leader, 10, "a to lead")
        a.hold(on_lost=lambda: None)
        with candidate(b):
            a.release()
            t0 = time.monotonic()
            until(lambda: b.is_leader, LEASE, "b to take over after the release")
            assert time.monotonic() - t0 < LEASE / 2
    assert not a.is_leader


def test_leader_that_sees_another_holder_gives_up_at_once(api: k8s.ApiClient, ns: str) -> None:
    a = elector(api, ns, "stolen", "a")
    lost = threading.Event()
    with candidate(a):
        until(lambda: a.is_leader, 10, "a to lead")
        a.hold(on_lost=lost.set)
        steal(api, ns, "stolen")
        until(lost.is_set, 2 * RETRY + 2, "a to notice the Lease is someone else's")
        assert not a.is_leader


def test_leader_that_cannot_renew_stops_before_anyone_may_take_over(
    api: k8s.ApiClient, ns: str
) -> None:
    a = elector(api, ns, "cut-off", "a")
    lost = threading.Event()
    with candidate(a):
        until(lambda: a.is_leader, 10, "a to lead")
        # Cut a off from the apiserver: its client now talks to a closed port.
        cfg = k8s.Configuration()
        cfg.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
        a._coord = k8s.CoordinationV1Api(k8s.ApiClient(cfg))
        t0 = time.monotonic()
        a.hold(on_lost=lost.set)
        until(lost.is_set, LEASE + 2, "a to give up")
        gave_up = time.monotonic() - t0
    # It gave up after the renew deadline, before the Lease could expire for others.
    assert RENEW - RETRY <= gave_up < LEASE, gave_up


# ------------------------------------------------------------------ processes


def metric(port: int, name: str) -> float | None:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    if status != 200:
        return None
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class Replica:
    def __init__(self, name: str, kubeconfig: Path, ns: str, stack: ExitStack) -> None:
        self.name = name
        self.health, self.metrics = free_port(), free_port()
        env = {
            "POD_NAME": name,
            "SLUICE_LEASE_NAMESPACE": ns,
            "SLUICE_LEASE_NAME": "operator",
            "SLUICE_LEASE_DURATION": "4",
            "SLUICE_RENEW_DEADLINE": "3",
            "SLUICE_RETRY_PERIOD": "0.5",
        }
        self.log = REPO / ".cluster" / "logs" / f"leader-{ns}-{name}.log"
        args = ["-n", ns, "--health-port", str(self.health), "--metrics-port", str(self.metrics)]
        self.proc = start(kubeconfig, [*args, "--control-interval", "2"], self.log, env)
        stack.callback(stop, self.proc)

    def healthz(self) -> tuple[int, str]:
        return http_get(f"http://127.0.0.1:{self.health}/healthz")

    def leading(self) -> float | None:
        return metric(self.metrics, "sluice_leader")


def holder(kubectl: Kubectl, ns: str) -> str | None:
    lease: dict[str, Any] | None = kubectl.get("lease", "operator", "-n", ns)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


@pytest.fixture
def proc_ns(kubectl: Kubectl, crds: None) -> Iterator[str]:
    with temp_namespace(kubectl, "leaderp") as name:
        yield name


def test_two_operator_processes_one_acts_the_other_stands_by_and_takes_over(
    kubectl: Kubectl, kubeconfig: Path, proc_ns: str
) -> None:
    ns = proc_ns
    with ExitStack() as stack:
        replicas = {n: Replica(n, kubeconfig, ns, stack) for n in ("op-a", "op-b")}
        first = until(lambda: holder(kubectl, ns), 30, "a holder of the Lease")
        leader = replicas[first]
        standby = next(r for r in replicas.values() if r is not leader)

        # Both answer liveness; only the leader says it leads.
        until(lambda: leader.leading() == 1.0, 30, "the leader's sluice_leader 1")
        until(lambda: standby.healthz()[0] == 200, 30, "the standby's /healthz")
        assert json.loads(standby.healthz()[1]) == {"leader": False}
        assert standby.leading() == 0.0
        until(lambda: leader.healthz()[0] == 200, 30, "kopf's /healthz on the leader")
        never(lambda: holder(kubectl, ns) != first, 2.0, "the Lease changing hands")

        # A crash (SIGKILL: no release): the standby takes over after the lease duration.
        leader.proc.kill()
        leader.proc.wait(timeout=10)
        t0 = time.monotonic()
        until(lambda: holder(kubectl, ns) == standby.name, 4 + 5, "the standby to take over")
        assert time.monotonic() - t0 >= 4 - 0.5 - 0.2, "taken over before the Lease expired"
        until(lambda: standby.leading() == 1.0, 30, "the new leader's sluice_leader 1")
        until(lambda: standby.healthz()[0] == 200, 30, "kopf's /healthz on the new leader")

        # A graceful stop releases the Lease: a new standby takes over at once.
        third = Replica("op-c", kubeconfig, ns, stack)
        until(lambda: third.healthz()[0] == 200, 30, "op-c standing by")
        standby.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        until(lambda: holder(kubectl, ns) == "op-c", 4, "op-c to take over the released Lease")
        assert standby.proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 4, "waited for expiry although the Lease was released"

        # A leader that finds the Lease taken exits non-zero (the pod restarts as a standby).
        until(lambda: third.leading() == 1.0, 30, "op-c's sluice_leader 1")
        steal(k8s_config.new_client_from_config(config_file=str(kubeconfig)), ns, "operator")
        until(lambda: third.proc.poll() is not None, 10, "op-c to exit")
        assert third.proc.returncode == 3
        assert "lost Lease" in third.log.read_text()
