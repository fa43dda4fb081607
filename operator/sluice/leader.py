"""Leader election on a coordination.k8s.io/v1 Lease: exactly one replica acts.

The client-go pattern (k8s.io/client-go/tools/leaderelection), kept small:

- A candidate reads the Lease. It takes it when nobody holds it, when it
  holds it already, or when the record has not changed for
  ``lease_duration`` seconds *as measured by the candidate's own clock*
  since it last saw it change (so no two clocks are compared). Every write is
  a ``replace`` with the resourceVersion read, so two candidates racing for
  an expired Lease cannot both win: the apiserver answers 409 to the loser.
- The holder renews every ``retry_period``. If it sees another holder, or
  has not renewed for ``renew_deadline`` (< ``lease_duration``), it has lost
  the Lease and ``on_lost`` runs; the operator exits non-zero there, so the
  pod restarts as a standby. A leader that cannot renew stops acting before
  anyone else may take over: renew_deadline < lease_duration.
- On a graceful stop the holder releases the Lease (empty holder), so a
  standby takes over at its next retry instead of after ``lease_duration``.

The Lease object itself may be created beforehand (the Helm chart does, so
``helm uninstall`` removes it and the operator needs no ``create`` right);
otherwise the first candidate creates it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("sluice.leader")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_LEASE_NAME = "sluice-leader"


@dataclass(frozen=True)
class LeaseConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry_period < renew_deadline < lease_duration, got "
                f"{self.retry_period}, {self.renew_deadline}, {self.lease_duration}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LeaseConfig:
        """From the environment the Helm chart sets (defaults for a local run).

        ``SLUICE_LEASE_NAMESPACE`` (else ``POD_NAMESPACE``, else the pod's
        service-account namespace, else ``default``), ``SLUICE_LEASE_NAME``,
        ``POD_NAME`` as the identity (else host name and a random suffix),
        ``SLUICE_LEASE_DURATION``, ``SLUICE_RENEW_DEADLINE``,
        ``SLUICE_RETRY_PERIOD`` in seconds.
        """
        e = os.environ if env is None else env
        namespace = e.get("SLUICE_LEASE_NAMESPACE") or e.get("POD_NAMESPACE")
        if not namespace:
            try:
                namespace = SA_NAMESPACE_FILE.read_text().strip()
            except OSError:
                namespace = "default"
        identity = e.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        return cls(
            namespace=namespace,
            name=e.get("SLUICE_LEASE_NAME") or DEFAULT_LEASE_NAME,
            identity=identity,
            lease_duration=float(e.get("SLUICE_LEASE_DURATION") or 15),
            renew_deadline=float(e.get("SLUICE_RENEW_DEADLINE") or 10),
            retry_period=float(e.get("SLUICE_RETRY_PERIOD") or 2),
        )


def _micro_time(t: dt.datetime) -> str:
    """A metav1.MicroTime: RFC 3339 with exactly six fractional digits."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        api: k8s.ApiClient,
        config: LeaseConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # Called with plain dict bodies and raw JSON answers (MicroTime kept verbatim).
        self._coord: Any = k8s.CoordinationV1Api(api)
        self._clock = clock
        # The last Lease spec seen and when (our clock) it was first seen so.
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._last_renew = 0.0
        self._leading = threading.Event()
        self._stop_renewing = threading.Event()
        self._renewer: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._lost_once = threading.Lock()

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    # ------------------------------------------------------------ one attempt

    def _timeout(self) -> float:
        return max(self.config.retry_period, 1.0)

    def _read(self) -> dict[str, Any] | None:
        c = self.config
        try:
            resp = self._coord.read_namespaced_lease(
                c.name, c.namespace, _preload_content=False, _request_timeout=self._timeout()
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        lease: dict[str, Any] = json.loads(resp.data)
        return lease

    def _spec(self, previous: Mapping[str, Any]) -> dict[str, Any]:
        c = self.config
        now = _micro_time(dt.datetime.now(dt.UTC))
        mine = previous.get("holderIdentity") == c.identity
        return {
            "holderIdentity": c.identity,
            "leaseDurationSeconds": max(1, round(c.lease_duration)),
            "acquireTime": previous.get("acquireTime") if mine else now,
            "renewTime": now,
            "leaseTransitions": int(previous.get("leaseTransitions") or 0) + (0 if mine else 1),
        }

    def try_acquire_or_renew(self) -> bool:
        """One read and at most one write; True when we hold the Lease after it."""
        c = self.config
        lease = self._read()
        now = self._clock()
        if lease is None:
            body: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": c.name, "namespace": c.namespace},
                "spec": {**self._spec({}), "leaseTransitions": 0},
            }
            try:
                self._coord.create_namespaced_lease(
                    c.namespace, body, _request_timeout=self._timeout()
                )
            except ApiException as e:
                if e.status == 409:  # another candidate created it first
                    return False
                raise
            self._observed, self._observed_at = body["spec"], now
            return True

        spec = lease.get("spec") or {}
        if spec != self._observed:
            self._observed, self._observed_at = spec, now
        holder = spec.get("holderIdentity")
        if holder and holder != c.identity and now < self._observed_at + c.lease_duration:
            return False  # held by someone else and not expired (by our clock)

        new = self._spec(spec)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {**lease["metadata"]},  # carries resourceVersion: optimistic lock
            "spec": {**spec, **new},
        }
        try:
            self._coord.replace_namespaced_lease(
                c.name, c.namespace, body, _request_timeout=self._timeout()
            )
        except ApiException as e:
            if e.status == 409:  # somebody wrote in between; read again next time
                return False
            raise
        if holder != c.identity:
            log.info("acquired Lease %s/%s (previous holder: %s)", c.namespace, c.name, holder)
        self._observed, self._observed_at = body["spec"], now
        return True

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as e:  # unreachable apiserver, timeouts, 5xx: "not this time"
            log.warning("Lease %s/%s: %s", self.config.namespace, self.config.name, e)
            return False

    # --------------------------------------------------------------- the loop

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this process holds the Lease (True) or ``stop`` is set (False)."""
        c = self.config
        log.info("waiting to lead: Lease %s/%s as %s", c.namespace, c.name, c.identity)
        while not stop.is_set():
            started = self._clock()  # count from the request, not its answer: conservative
            if self._attempt():
                self._last_renew = started
                self._leading.set()
                return True
            # Jitter, as client-go does, so standbys do not hit the apiserver in step.
            stop.wait(c.retry_period * (1 + 0.2 * random.random()))
        return False

    def hold(self, on_lost: Callable[[], None]) -> None:
        """Renew in the background; call ``on_lost`` once when leadership is lost.

        Two daemon threads: one renews; a watchdog declares the loss when no
        renewal succeeded for ``renew_deadline``, even while the renewing
        thread hangs in a request, so the deadline holds whatever the network does.
        """
        if not self.is_leader:
            raise RuntimeError("hold() before acquire()")
        self._stop_renewing.clear()
        self._lost_once = threading.Lock()
        self._renewer = threading.Thread(
            target=self._renew_loop, args=(on_lost,), name="lease-renew", daemon=True
        )
        self._watchdog = threading.Thread(
            target=self._watch, args=(on_lost,), name="lease-watchdog", daemon=True
        )
        self._renewer.start()
        self._watchdog.start()

    def _lose(self, on_lost: Callable[[], None], why: str) -> None:
        if not self._lost_once.acquire(blocking=False):
            return  # the other thread got there first
        self._leading.clear()
        self._stop_renewing.set()
        c = self.config
        log.error("lost Lease %s/%s: %s", c.namespace, c.name, why)
        on_lost()

    def _renew_loop(self, on_lost: Callable[[], None]) -> None:
        c = self.config
        try:
            while not self._stop_renewing.wait(c.retry_period):
                started = self._clock()
                if self._attempt():
                    self._last_renew = started
                    continue
                other = (self._observed or {}).get("holderIdentity")
                if other and other != c.identity:
                    self._lose(on_lost, f"now held by {other}")
                    return
        except BaseException:
            log.exception("Lease %s/%s: the renew loop failed", c.namespace, c.name)
            self._lose(on_lost, "the renew loop failed")

    def _watch(self, on_lost: Callable[[], None]) -> None:
        c = self.config
        tick = min(c.retry_period, 0.5)
        while not self._stop_renewing.wait(tick):
            if self._clock() - self._last_renew >= c.renew_deadline:
                self._lose(on_lost, f"not renewed for {c.renew_deadline:g}s")
                return

    def stop_renewing(self) -> None:
        """Stop renewing without touching the Lease (as a crash would)."""
        self._stop_renewing.set()
        for t in (self._renewer, self._watchdog):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=self.config.retry_period + 2 * self._timeout() + 1)

    def release(self) -> None:
        """Graceful stop: let go of the Lease so a standby takes over at once."""
        self.stop_renewing()
        if not self.is_leader:
            return
        self._leading.clear()
        c = self.config
        with contextlib.suppress(Exception):  # best effort: the Lease expires anyway
            lease = self._read()
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != c.identity:
                return
            now = _micro_time(dt.datetime.now(dt.UTC))
            released: dict[str, Any] = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {**lease["metadata"]},
                "spec": {
                    "leaseDurationSeconds": 1,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": spec.get("leaseTransitions", 0),
                },
            }
            self._coord.replace_namespaced_lease(
                c.name, c.namespace, released, _request_timeout=self._timeout()
            )
            log.info("released Lease %s/%s", c.namespace, c.name)
