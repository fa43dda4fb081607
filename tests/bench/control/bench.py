"""``make bench-control``: every policy on every trace and model-load time, >= 5 seeds.

Writes docs/bench/control.json (every run's scores and the summary), one plot
per trace and load time (docs/bench/control-<trace>-L<L>.png: rate, replicas
and served p99 over time per policy, seed 0) and the table between the
``control:begin``/``control:end`` markers of docs/bench/README.md.

``--quick`` halves the traces and runs 2 seeds at L = 60 s and 180 s: for
iterating on a policy, not for the record (it writes control-quick.json only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import policies, report, sim, traces
from .fleet import ServiceModel, VariantSpec

OUT = Path(__file__).resolve().parents[3] / "docs" / "bench"
LOAD_TIMES = (30.0, 60.0, 180.0, 300.0)
BEGIN, END = "<!-- control:begin -->", "<!-- control:end -->"


def policy_set(capacity: float) -> list[Callable[[], policies.Policy]]:
    """Fresh instances of every policy compared (the order of the table's columns)."""
    return [
        policies.Oracle,
        policies.SluicePolicy,
        lambda: policies.SluicePolicy(name="sluice-prop", overrides={"policy": "Proportional"}),
        policies.HPA,
        lambda: policies.keda(capacity),
    ]


def scenarios(service: ServiceModel, quick: bool, seed: int = 0) -> list[sim.Scenario]:
    cap = sim.load_test(service, 100.0)
    out = []
    for spec in traces.standard(cap, quick):
        tr = spec.build(cap, np.random.default_rng([seed, 99]))
        out.append(sim.Scenario(spec.name, tr, (VariantSpec(service=service),), tags=spec.tags))
    return out


def run(
    out: Path = OUT,
    quick: bool = False,
    seeds: int | None = None,
    load_times: Sequence[float] | None = None,
    only: Sequence[str] = (),
    service: ServiceModel | None = None,
    write: bool = True,
) -> dict[str, Any]:
    service = service or ServiceModel()
    n_seeds = seeds or (2 if quick else 5)
    lts = tuple(load_times or ((60.0, 180.0) if quick else LOAD_TIMES))
    cap = sim.load_test(service, 100.0)
    started = time.time()
    runs: list[dict[str, Any]] = []
    plots: dict[tuple[str, float], dict[str, sim.Result]] = {}
    names: list[str] = []
    for sc0 in scenarios(service, quick):
        if only and sc0.name not in only:
            continue
        for lt in lts:
            sc = sc0.with_load_time(lt)
            for seed in range(n_seeds):
                for make in policy_set(cap):
                    pol = make()
                    if pol.name not in names:
                        names.append(pol.name)
                    t0 = time.time()
                    r = sim.run(sc, pol, seed)
                    runs.append(
                        {
                            "trace": sc.name,
                            "load_time": lt,
                            "seed": seed,
                            "policy": pol.name,
                            **r.scores(),
                            "seconds": round(time.time() - t0, 2),
                        }
                    )
                    if seed == 0:
                        plots.setdefault((sc.name, lt), {})[pol.name] = r
            print(f"{sc.name} L={lt:g}: {time.time() - started:.0f}s", file=sys.stderr)
    summary = summarise(runs, names)
    result = {
        "service": service.describe(),
        "capacity_rps_per_replica": round(cap, 3),
        "slo": "p99 <= 100 ms",
        "quick": quick,
        "seeds": n_seeds,
        "load_times": list(lts),
        "policies": names,
        "traces": {s.name: s.trace.note for s in scenarios(service, quick)},
        "elapsed_s": round(time.time() - started, 1),
        "summary": summary,
        "runs": runs,
    }
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / ("control-quick.json" if quick else "control.json")).write_text(
            json.dumps(result, indent=1) + "\n"
        )
        for (trace, lt), by in plots.items():
            # Quick runs never overwrite the record's plots.
            if lt in (60.0, 180.0) and not quick:
                plot(by, out / f"control-{trace}-L{int(lt)}.png", f"{trace}, L = {lt:g} s")
        if not quick:
            update_readme(out / "README.md", table(result))
    return result


def summarise(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    keys = sorted({(r["trace"], r["load_time"]) for r in runs}, key=lambda k: (k[0], k[1]))
    out = []
    for trace, lt in keys:
        rows = [r for r in runs if r["trace"] == trace and r["load_time"] == lt]
        oracle_rh = _mean([r["replica_hours"] for r in rows if r["policy"] == "oracle"])
        for name in names:
            mine = [r for r in rows if r["policy"] == name]
            if not mine:
                continue
            rec = [r["recovery_attainment"] for r in mine if r["recovery_attainment"] is not None]
            rh = _mean([r["replica_hours"] for r in mine])
            out.append(
                {
                    "trace": trace,
                    "load_time": lt,
                    "policy": name,
                    "attainment": _mean([r["attainment"] for r in mine]),
                    "attainment_min": min(r["attainment"] for r in mine),
                    "recovery_attainment": _mean(rec) if rec else None,
                    "replica_hours": rh,
                    "replica_hours_vs_oracle": rh / oracle_rh if oracle_rh else math.nan,
                    "actions": _mean([r["actions"] for r in mine]),
                    "seeds": len(mine),
                }
            )
    return out


_mean = report.mean


def table(result: dict[str, Any]) -> str:
    names = result["policies"]
    head = (
        "| trace | L (s) | SLO attainment: "
        + " / ".join(names)
        + " | in the 10 min after events | replica-hours ÷ oracle | scaling actions |"
    )
    lines = [head, "|---|---|---|---|---|---|"]
    by: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for row in result["summary"]:
        by.setdefault((row["trace"], row["load_time"]), {})[row["policy"]] = row
    for (trace, lt), rows in by.items():

        def col(key: str, fmt: str, rows: dict[str, dict[str, Any]] = rows) -> str:
            vals = []
            for n in names:
                v = rows.get(n, {}).get(key)
                vals.append(
                    "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)
                )
            return " / ".join(vals)

        lines.append(
            f"| {trace} | {lt:g} | {col('attainment', '.4f')} | "
            f"{col('recovery_attainment', '.3f')} | {col('replica_hours_vs_oracle', '.2f')} | "
            f"{col('actions', '.0f')} |"
        )
    meta = (
        f"\n{result['service']}; one replica serves {result['capacity_rps_per_replica']:g} req/s "
        f"within the SLO ({result['slo']}, load-tested); {result['seeds']} seeds per cell; "
        f"columns in the order {', '.join(names)}; whole run {result['elapsed_s']:.0f} s.\n"
    )
    return "\n".join(lines) + "\n" + meta


def update_readme(path: Path, body: str) -> None:
    report.update_readme(path, body, BEGIN, END, "Control quality (`make bench-control`)")


def plot(by: dict[str, sim.Result], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    first = next(iter(by.values()))
    tmin = [x / 60 for x in first.timeline.t]
    axes[0].plot(tmin, first.timeline.rate, color="black", lw=1)
    axes[0].set_ylabel("rate (req/s)")
    axes[0].set_title(title)
    for name, r in by.items():
        tl = r.timeline
        ts = [x / 60 for x in tl.t]
        v = next(iter(tl.replicas))
        axes[1].step(ts, tl.replicas[v], where="post", label=name, lw=1.2)
        p = r.latency_p99_per_cycle
        axes[2].plot([(i + 0.5) * 15 / 60 for i in range(len(p))], p, label=name, lw=0.8)
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper right", fontsize=8)
    axes[2].set_ylabel("served p99 per 15 s (ms)")
    axes[2].set_yscale("log")
    axes[2].axhline(100, color="grey", ls="--", lw=0.8)
    axes[2].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.control", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short traces, 2 seeds, L = 60 and 180 s")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--load-times", type=float, nargs="*", default=None)
    ap.add_argument("--trace", action="append", default=[], help="only this trace (repeatable)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument(
        "--canary-seeds", type=int, default=None, help="seeds per canary/A-B scenario (100)"
    )
    ap.add_argument("--only-canary", action="store_true", help="only the canary and A/B rows")
    ap.add_argument(
        "--unseen", action="store_true", help="only the canary/A-B scenarios not in the table"
    )
    a = ap.parse_args(argv)
    from . import canary_bench

    if a.unseen:
        unseen = canary_bench.run_all(seeds=a.canary_seeds or 50, write=not a.no_write, unseen=True)
        print(canary_bench.table(unseen))
        return 0

    canary_result = canary_bench.run_all(
        seeds=a.canary_seeds or (5 if a.quick else 100), write=not a.no_write
    )
    print(canary_bench.table(canary_result))
    if a.only_canary:
        return 0
    result = run(
        quick=a.quick,
        seeds=a.seeds,
        load_times=a.load_times,
        only=a.trace,
        write=not a.no_write,
    )
    print(table(result))
    return 0
