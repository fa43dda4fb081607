"""What every table of ``make bench-control`` shares: cell formats, markdown rows and
the generated block between two markers of docs/bench/README.md."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path


def mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def pct(x: float | None) -> str:
    """A fraction as a whole percentage; '-' when there is none."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f} %"


def num(x: float | None, fmt: str = ".2f") -> str:
    """A number; '-' when there is none (None or NaN)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def rows(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table: the header, the rule and one line per row."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return out


def update_readme(path: Path, body: str, begin: str, end: str, heading: str) -> None:
    """Put ``body`` between the ``begin``/``end`` markers of ``path``; without them,
    append the block under ``heading``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body}{end}"
    if begin in text and end in text:
        a, rest = text.split(begin, 1)
        _, b = rest.split(end, 1)
        text = a + block + b
    else:
        text = text.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    path.write_text(text)
