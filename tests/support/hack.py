"""Import a module of hack/ (scripts, not a package) by its file name."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

from tests.support.kube import REPO


def hack_module(name: str) -> Any:
    """``hack/<name>.py`` as a module, imported once (registered in sys.modules)."""
    if name in sys.modules and getattr(sys.modules[name], "__file__", "") == str(
        REPO / "hack" / f"{name}.py"
    ):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "hack" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
