"""Run every benchmark and write docs/bench/results.json plus plots."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tests.bench import prometheus_bench, reconcile_bench, render_bench, scale_bench
from tests.bench.control import bench as control_bench

OUT = Path(__file__).resolve().parents[2] / "docs" / "bench"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "render": render_bench.run(OUT),
        "reconcile": reconcile_bench.run(OUT),
        "prometheus": prometheus_bench.run(OUT),
        "scale": scale_bench.run(OUT),
        # Full results in control.json; here the per-trace summary.
        "control": control_bench.run(OUT)["summary"],
    }
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
