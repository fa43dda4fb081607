"""The periodic loop: run the control cycle, then resync every InferenceService.

Each interval, the metrics-driven control (:mod:`sluice.reconcile.control`:
Prometheus, autoscaling, canary steps) runs once for all objects together and
records its decisions in status; then every object is reconciled, so the
children follow those decisions at once. The resync is also the
level-triggered safety net: whatever watch events were missed, every object
converges each interval. The whole cycle runs in a worker thread, off kopf's
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..api.v1alpha1 import API_VERSION, KIND
from .control import Controller
from .isvc import Reconciler
from .kube import Kube

log = logging.getLogger("sluice.loop")


class ControlLoop:
    def __init__(
        self, kube: Kube, reconciler: Reconciler, namespaces: list[str], config: dict[str, Any]
    ) -> None:
        self.kube = kube
        self.reconciler = reconciler
        self.namespaces = namespaces
        self.interval = float(config.get("control_interval") or 15.0)
        self.controller = Controller(kube, reconciler, namespaces, config)
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def objects(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return self.kube.list(API_VERSION, KIND)
        return [o for ns in self.namespaces for o in self.kube.list(API_VERSION, KIND, ns)]

    def cycle(self) -> None:
        objs = self.objects()
        try:
            self.controller.run(objs)
        except Exception:  # the resync below still runs; the next cycle retries
            log.exception("metrics control failed")
        for obj in objs:
            md = obj["metadata"]
            try:
                self.reconciler.reconcile(md["namespace"], md["name"])
            except Exception:
                log.exception("resync of %s/%s failed", md["namespace"], md["name"])

    async def run_forever(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    await asyncio.to_thread(self.cycle)
                except Exception:
                    log.exception("control cycle failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
        finally:
            self.controller.close()
