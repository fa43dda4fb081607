"""The operator's engine: watch cache, work queue, reconcile workers, control cycle.

- :class:`~sluice.reconcile.cache.Cache` keeps every InferenceService and
  every managed child in memory from watch streams. A change of an object
  enqueues the InferenceService it belongs to (:meth:`Engine.changed`): a
  child's spec or rollout counters, a pod's reason for not running, and of the
  InferenceService itself only what the reconciler reads (metadata, spec,
  ``status.rollout`` and ``status.scaling``). The status the reconciler writes
  itself wakes nobody, so its echo costs nothing.
- :class:`WorkQueue` holds each key at most once: a key enqueued while it is
  being reconciled runs once more afterwards, never twice at the same time.
  Failures retry with exponential backoff (1 s to 5 min).
- :class:`Workers` reconcile from the cache (reads cost no API request; only
  writes of what differs do).
- :class:`ControlLoop` runs the metrics-driven control cycle
  (:mod:`sluice.reconcile.control`) at a fixed rate: the next cycle starts one
  interval after the previous one *started*, so the interval holds as long as
  a cycle takes less than it. Decisions land in status; status.scaling and
  status.rollout changes enqueue the reconcile that makes the children follow.
  Each cycle is also the level-triggered safety net: every InferenceService
  not reconciled successfully within ``resync_period`` is enqueued again (its
  reconcile reads the cache; an unchanged fleet makes no request).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from .. import observability
from ..api.v1alpha1 import API_VERSION, KIND
from ..policy import readiness
from ..render import LABEL_VARIANT
from .cache import Cache, CachedKube, Kind, Obj, owner_of
from .control import Controller
from .isvc import Reconciler
from .kube import Kube

log = logging.getLogger("sluice.loop")

Key = tuple[str, str]


class WorkQueue:
    """A set of keys in FIFO order, each processed by one worker at a time."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._order: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()
        self._later: list[tuple[float, Key]] = []
        self._closed = False

    def add(self, key: Key) -> None:
        with self._cv:
            self._add(key)

    def add_after(self, key: Key, delay: float) -> None:
        with self._cv:
            heapq.heappush(self._later, (time.monotonic() + delay, key))
            self._cv.notify()

    def _add(self, key: Key) -> None:
        if self._closed:
            return
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._order.append(key)
            self._cv.notify()
        observability.QUEUE_DEPTH.set(len(self._order))

    def get(self) -> Key | None:
        """The next key (blocks); None once closed."""
        with self._cv:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    self._add(heapq.heappop(self._later)[1])
                if self._order:
                    key = self._order.popleft()
                    self._queued.discard(key)
                    self._active.add(key)
                    observability.QUEUE_DEPTH.set(len(self._order))
                    return key
                self._cv.wait(self._later[0][0] - now if self._later else None)

    def done(self, key: Key) -> None:
        with self._cv:
            self._active.discard(key)
            if key in self._again:
                self._again.discard(key)
                self._add(key)

    def idle(self) -> bool:
        with self._cv:
            return not self._order and not self._active

    def __len__(self) -> int:
        return len(self._order)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Workers:
    """Threads that reconcile the queue's keys."""

    def __init__(
        self, reconciler: Reconciler, queue: WorkQueue, count: int, ready: threading.Event
    ) -> None:
        self.reconciler = reconciler
        self.queue = queue
        self.count = count
        self.ready = ready
        self.last_ok: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.count):
            t = threading.Thread(target=self._run, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def forget(self, key: Key) -> None:
        self.last_ok.pop(key, None)
        self._failures.pop(key, None)

    def _run(self) -> None:
        self.ready.wait()
        while (key := self.queue.get()) is not None:
            try:
                self.reconciler.reconcile(*key)
            except Exception:
                n = self._failures.get(key, 0) + 1
                self._failures[key] = n
                delay = min(2.0 ** (n - 1), 300.0)
                log.exception("reconcile of %s/%s failed; again in %.0f s", *key, delay)
                self.queue.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                self.last_ok[key] = time.monotonic()
                # Writes the apiserver refused are retried on the reconciler's
                # own backoff (5 s, 10 s, ... 5 min), not only on the next change.
                retry = self.reconciler.retry_in(*key)
                if retry is not None:
                    self.queue.add_after(key, max(retry, 0.5))
            finally:
                self.queue.done(key)


def _inputs(o: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a reconcile of an InferenceService reads from it."""
    md, st = o.get("metadata") or {}, o.get("status") or {}
    return (
        md.get("uid"),
        md.get("generation"),
        md.get("deletionTimestamp"),
        md.get("labels"),
        md.get("annotations"),
        o.get("spec"),
        st.get("rollout"),
        st.get("scaling"),
        (st.get("experiment") or {}).get("promoted"),  # an A/B winner main now serves
    )


def _pod_problem(o: Obj | None) -> dict[str, str]:
    return readiness.pod_problems([o], LABEL_VARIANT) if o is not None else {}


class Engine:
    """Cache, queue, workers and the control loop of one operator process."""

    def __init__(self, kube: Kube, namespaces: list[str], config: Mapping[str, Any]) -> None:
        self.namespaces = namespaces
        self.queue = WorkQueue()
        self.cache = Cache(kube, namespaces, self.changed)
        self.kube = CachedKube(kube, self.cache)
        self.reconciler = Reconciler(self.kube)
        self.synced = threading.Event()
        self.workers = Workers(
            self.reconciler, self.queue, int(config.get("max_workers") or 8), self.synced
        )
        self.loop = ControlLoop(self.kube, self.reconciler, namespaces, config, engine=self)

    def start(self) -> None:
        self.cache.start()
        self.workers.start()

    def wait_synced(self, timeout: float | None = None) -> bool:
        ok = self.cache.wait_synced(timeout)
        if ok:
            self.synced.set()
            log.info("watch cache synced: %s", self.cache.counts())
        return ok

    def stop(self) -> None:
        self.loop.stop()
        self.queue.close()
        self.cache.stop()

    def changed(self, kind: Kind, old: Obj | None, new: Obj | None) -> None:
        """Route one change seen by the cache to the InferenceService it concerns."""
        obj = new if new is not None else old
        assert obj is not None
        ns = str(obj["metadata"].get("namespace") or "")
        if kind.kind == KIND and kind.api_version == API_VERSION:
            key = (ns, str(obj["metadata"]["name"]))
            if new is None:
                self.workers.forget(key)
                self.reconciler.forget(*key)
            elif old is None or _inputs(old) != _inputs(new):
                self.queue.add(key)
            return
        owner = owner_of(obj)
        if not owner:
            return
        if kind.kind == "Pod" and _pod_problem(old) == _pod_problem(new):
            return  # the Deployment's counters tell readiness; pods only explain failures
        self.queue.add((ns, owner))

    def resync(self, objs: list[dict[str, Any]], period: float) -> int:
        """Enqueue every object not reconciled successfully within ``period``."""
        now = time.monotonic()
        n = 0
        for o in objs:
            md = o["metadata"]
            key = (str(md.get("namespace") or ""), str(md["name"]))
            last = self.workers.last_ok.get(key)
            if last is None or now - last >= period:
                self.queue.add(key)
                n += 1
        return n


class ControlLoop:
    def __init__(
        self,
        kube: Kube,
        reconciler: Reconciler,
        namespaces: list[str],
        config: Mapping[str, Any],
        engine: Engine | None = None,
    ) -> None:
        self.kube = kube
        self.reconciler = reconciler
        self.namespaces = namespaces
        self.engine = engine
        self.interval = float(config.get("control_interval") or 15.0)
        self.resync_period = float(
            config.get("resync_period") or os.environ.get("SLUICE_RESYNC_PERIOD") or 300.0
        )
        self.controller = Controller(kube, reconciler, namespaces, config)
        self._stop = asyncio.Event()
        self._last_start: float | None = None

    def stop(self) -> None:
        self._stop.set()

    def objects(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return self.kube.list(API_VERSION, KIND)
        return [o for ns in self.namespaces for o in self.kube.list(API_VERSION, KIND, ns)]

    def cycle(self) -> None:
        start = time.monotonic()
        gap = None if self._last_start is None else start - self._last_start
        self._last_start = start
        objs = self.objects()
        try:
            self.controller.run(objs)
        except Exception:  # the resync below still runs; the next cycle retries
            log.exception("metrics control failed")
        if self.engine is not None:
            self.engine.resync(objs, self.resync_period)
        else:
            for obj in objs:
                md = obj["metadata"]
                try:
                    self.reconciler.reconcile(md["namespace"], md["name"])
                except Exception:
                    log.exception("resync of %s/%s failed", md["namespace"], md["name"])
        observability.control_cycle(time.monotonic() - start, gap)

    async def run_forever(self) -> None:
        try:
            if self.engine is not None:
                while not await asyncio.to_thread(self.engine.wait_synced, 5.0):
                    if self._stop.is_set():
                        return
                    log.info("waiting for the watch cache to sync")
            next_start = time.monotonic()
            while not self._stop.is_set():
                try:
                    await asyncio.to_thread(self.cycle)
                except Exception:
                    log.exception("control cycle failed")
                # Fixed rate: one interval after the previous start; a cycle that
                # overran starts the next at once (never a burst to catch up).
                next_start = max(next_start + self.interval, time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), timeout=max(0.0, next_start - time.monotonic())
                    )
        finally:
            self.controller.close()
