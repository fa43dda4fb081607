"""Malformed InferenceServices that are not in the bad-input table.

Each one is a valid, feature-rich object (the table's first accepted edge case)
with one field replaced by a value from a pool of known troublemakers (dot
segments, whitespace, control characters, out-of-range numbers, wrong types,
flags Sluice owns), removed, or joined by an unknown field. Seeded, so that a
failure names a reproducible case. tests/unit/test_api_fuzz.py checks the
parser never fails any other way than with SpecError and that what it accepts
renders; tests/integration/test_api_fuzz.py checks the apiserver agrees with
the parser on each, and accepts what Sluice renders from the ones both accept.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .invalid_specs import ACCEPTED

JUNK: tuple[Any, ...] = (
    "",
    " ",
    ".",
    "..",
    "a b",
    "x\n",
    "tab\there",
    "nul\x00",
    "UPPER",
    "-x",
    "x-",
    "x.",
    "a.b",
    "1abc",
    "a" * 64,
    "a" * 300,
    "/../etc",
    "//x",
    "/a/./b",
    "%2F",
    "s3://b/../x",
    "pvc://c/./x",
    "gs://b/a b",
    "img:tag with space",
    "Registry/Img:1",
    "1m",
    "0",
    "-1",
    "99999999999999h",
    "0s",
    "25h",
    "1e3",
    "--model-control-mode=poll",
    "--http-port",
    "--metrics-config=summary_latencies=false",
    "SLUICE_MODEL",
    "key/with/two/slashes",
    "é",
    -1,
    0,
    1,
    1001,
    10**20,
    1.5,
    True,
    [],
    ["x"],
    [{"a": 1}],
    {},
    {"nested": "x"},
)


@dataclass(frozen=True)
class Mutant:
    id: str
    obj: dict[str, Any]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> None:
    for p in path[:-1]:
        obj = obj[p]
    if value is _REMOVE:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


_REMOVE = object()


def mutants(n: int, seed: int) -> list[Mutant]:
    rng = random.Random(seed)
    base = ACCEPTED[0].obj()
    base["metadata"]["name"] = "fuzz"
    spec_paths = [("spec", *p) for p in _paths(base["spec"])]
    out: list[Mutant] = []
    for i in range(n):
        obj = copy.deepcopy(base)
        path = rng.choice(spec_paths)
        roll = rng.random()
        if roll < 0.08:
            value: Any = _REMOVE
            what = "removed"
        elif roll < 0.12:
            parent = path[:-1] if path[:-1] else ("spec",)
            target = obj
            for p in parent:
                target = target[p]
            if not isinstance(target, dict):
                target, parent = obj["spec"], ("spec",)
            path = (*parent, "unknownField")
            value, what = "x", "unknown field"
        else:
            value = rng.choice(JUNK)
            what = repr(value)[:40]
        _set(obj, path, value)
        out.append(Mutant(f"{i}:{'.'.join(map(str, path))}={what}", obj))
    return out
