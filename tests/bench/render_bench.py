"""Rendering cost: how long `render_all` takes per InferenceService, by number of variants."""

from __future__ import annotations

import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sluice.api.v1alpha1 import parse_spec
from sluice.policy.plan import plan
from sluice.render import Meta, render_all


def spec(variants: int) -> Any:
    body: dict[str, Any] = {
        "model": {"name": "m", "repository": "s3://b/p", "version": 1},
        "gpu": {"count": 1, "products": ["NVIDIA-H100-80GB-HBM3"]},
    }
    if variants > 1:
        body["router"] = {"gateway": {"name": "gw"}}
        body["variants"] = [
            {"name": f"v{i}", "weight": 100 // variants, "model": {"version": i + 2}}
            for i in range(variants - 1)
        ]
    return parse_spec(body)


def run(out: Path) -> dict[str, Any]:
    meta = Meta("bench", "ns", "uid")
    rows = []
    for n in (1, 2, 4, 8):
        s = spec(n)
        vs = plan(s)
        render_all(meta, s, vs)  # warm the template cache
        times = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(50):
                render_all(meta, s, vs)
            times.append((time.perf_counter() - t0) / 50)
        tracemalloc.start()
        render_all(meta, s, vs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(
            {"variants": n, "median_ms": statistics.median(times) * 1000, "peak_kib": peak / 1024}
        )
    base = rows[0]["median_ms"]
    for r in rows:
        r["ratio_to_one_variant"] = r["median_ms"] / base
    _plot(out, rows)
    return {"per_isvc": rows}


def _plot(out: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["variants"] for r in rows], [r["median_ms"] for r in rows], marker="o")
    ax.set_xlabel("variants per InferenceService")
    ax.set_ylabel("render_all, ms (median)")
    ax.set_title("Rendering cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "render.png", dpi=110)
    plt.close(fig)
