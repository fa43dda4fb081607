"""kopf handlers: read the world, call the reconciler and the control loop, nothing else.

Only ``on.event`` handlers and a startup task are used, so kopf writes
nothing to the user's objects: no finalizer, no last-handled annotation. The
InferenceService's spec stays exactly what the user (or git) says; the
operator writes its status and its own children only.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from .api.v1alpha1 import GROUP, KIND, PLURAL, VERSION
from .reconcile.isvc import Reconciler
from .reconcile.kube import Kube
from .reconcile.loop import ControlLoop
from .render import MANAGED_BY

log = logging.getLogger("sluice.handlers")

CHILD_LABELS = {"app.kubernetes.io/managed-by": MANAGED_BY}


class State:
    """Process-wide singletons, set at startup (kopf handlers are module functions)."""

    reconciler: Reconciler | None = None
    loop: ControlLoop | None = None
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
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    kube = Kube()
    State.reconciler = Reconciler(kube)
    State.loop = ControlLoop(kube, State.reconciler, State.namespaces, State.config)
    asyncio.get_running_loop().create_task(State.loop.run_forever())


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    if State.loop is not None:
        State.loop.stop()


def _reconcile(namespace: str, name: str) -> None:
    assert State.reconciler is not None
    try:
        State.reconciler.reconcile(namespace, name)
    except Exception:  # the periodic resync retries; never crash the worker
        log.exception("reconcile of %s/%s failed", namespace, name)


@kopf.on.event(GROUP, VERSION, PLURAL)
def inferenceservice_event(namespace: str, name: str, **kwargs: Any) -> None:
    if kwargs.get("type") == "DELETED":
        return
    _reconcile(namespace, name)


def _owner(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and ref.get("apiVersion", "").startswith(GROUP + "/"):
            return str(ref["name"])
    return None


def _child_event(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    owner = _owner(body)
    if owner and namespace:
        _reconcile(namespace, owner)


for _group, _version, _plural in (
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
    ("monitoring.coreos.com", "v1", "podmonitors"),
):
    kopf.on.event(_group, _version, _plural, labels=CHILD_LABELS, id=f"child-{_plural}")(
        _child_event
    )
