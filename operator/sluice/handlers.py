"""kopf runs the process; the engine (reconcile/loop.py) does the watching.

kopf provides the operator's lifecycle: startup and cleanup, signal handling,
the liveness endpoint. It registers no resource handlers, so kopf itself
watches nothing and writes nothing to the user's objects (no finalizer, no
last-handled annotation): the InferenceService's spec stays exactly what the
user (or git) says; the operator writes its status and its own children only.

The InferenceServices and their children are watched by the engine's cache
with server-side label selectors (kopf's watches filter labels in the client,
so every Deployment and Pod of the cluster would reach the process), and
reconciled from it by a work queue. See reconcile/cache.py and loop.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from .reconcile.kube import Kube
from .reconcile.loop import Engine

log = logging.getLogger("sluice.handlers")


class State:
    """Process-wide singletons, set at startup (kopf handlers are module functions)."""

    engine: Engine | None = None
    namespaces: list[str] = []
    config: dict[str, Any] = {}


def configure(namespaces: list[str], config: dict[str, Any]) -> None:
    State.namespaces = namespaces
    State.config = config


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = int(State.config.get("max_workers", 8))
    settings.watching.inactivity_timeout = 600  # guards against silent watch freezes
    settings.watching.server_timeout = 300
    engine = Engine(Kube(), State.namespaces, State.config)
    State.engine = engine
    engine.start()
    asyncio.get_running_loop().create_task(engine.loop.run_forever())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if State.engine is not None:
        State.engine.stop()
