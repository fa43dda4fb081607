"""The periodic loop: resync every InferenceService and run the control cycle.

Level-triggered safety net: whatever events were missed, every object is
reconciled each interval. The metrics-driven control (scaling, canary) hooks
in here as one cycle for all objects together.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..api.v1alpha1 import API_VERSION, KIND
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
        self.interval = float(config.get("control_interval", 15.0))
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def objects(self) -> list[dict[str, Any]]:
        if not self.namespaces:
            return self.kube.list(API_VERSION, KIND)
        return [o for ns in self.namespaces for o in self.kube.list(API_VERSION, KIND, ns)]

    def cycle(self) -> None:
        for obj in self.objects():
            md = obj["metadata"]
            try:
                self.reconciler.reconcile(md["namespace"], md["name"])
            except Exception:
                log.exception("resync of %s/%s failed", md["namespace"], md["name"])

    async def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.cycle)
            except Exception:
                log.exception("control cycle failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)
