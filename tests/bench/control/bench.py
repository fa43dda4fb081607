"""``make bench-control``: every policy on every trace and model-load time, >= 5 seeds.

Writes docs/bench/control.json (every run's scores and the summary), one plot
per trace and load time (docs/bench/control-<trace>-L<L>.png: rate, replicas
and served p99 over time per policy, seed 0), the table between the
``control:begin``/``control:end`` markers of docs/bench/README.md and the
attainment-versus-cost frontier between ``frontier:begin``/``frontier:end``.

``--quick`` halves the traces and runs 2 seeds at L = 60 s and 180 s: for
iterating on a policy, not for the record (it writes control-quick.json only).
``--unseen`` also runs traffic, service models and load times that are not in
the standard set (docs/bench/control-unseen.json, ``unseen:begin``/``unseen:end``).
``--jobs N`` runs N simulations at once.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from . import policies, report, sim, traces
from .fleet import Batching, ServiceModel, VariantSpec

OUT = Path(__file__).resolve().parents[3] / "docs" / "bench"
LOAD_TIMES = (30.0, 60.0, 180.0, 300.0)
PLOT_LOAD_TIMES = (60.0, 180.0)
BEGIN, END = "<!-- control:begin -->", "<!-- control:end -->"
FRONTIER_BEGIN, FRONTIER_END = "<!-- frontier:begin -->", "<!-- frontier:end -->"
TARGETS_BEGIN, TARGETS_END = "<!-- targets:begin -->", "<!-- targets:end -->"
UNSEEN_BEGIN, UNSEEN_END = "<!-- unseen:begin -->", "<!-- unseen:end -->"

# The table's columns, in order.
POLICIES = ("oracle", "reactive-bound", "sluice", "sluice-prop", "hpa-p99", "keda-rate")
# The frontier, on every trace at the plotted load times: the reactive bound
# with headroom, and Demand sized for a tighter p99 than the 100 ms SLO it is
# scored on (the user's headroom knob): what each attainment costs.
FRONTIER = (
    "reactive-x1.25",
    "reactive-x1.5",
    "reactive-x2",
    "sluice-t90",
    "sluice-t80",
    "sluice-t60",
)
FRONTIER_TRACES = ("diurnal", "bursts", "steps", "noisy-flat")


def make_policy(name: str, capacity: float) -> policies.Policy:
    """A fresh policy by its column name (names, not objects, cross process pools)."""
    if name == "oracle":
        return policies.Oracle()
    if name == "reactive-bound":
        return policies.ReactiveBound()
    if name.startswith("reactive-x"):
        return policies.ReactiveBound(headroom=float(name.removeprefix("reactive-x")))
    if name == "sluice":
        return policies.SluicePolicy()
    if name == "sluice-prop":
        return policies.SluicePolicy(name=name, overrides={"policy": "Proportional"})
    if name.startswith("sluice-t"):
        value = float(name.removeprefix("sluice-t"))
        return policies.SluicePolicy(
            name=name, overrides={"target": {"metric": "p99LatencyMs", "value": value}}
        )
    if name == "hpa-p99":
        return policies.HPA()
    if name == "keda-rate":
        return policies.keda(capacity)
    raise ValueError(f"unknown policy {name!r}")


def scenarios(service: ServiceModel, quick: bool, seed: int = 0) -> list[sim.Scenario]:
    cap = sim.load_test(service, 100.0)
    out = []
    for spec in traces.standard(cap, quick):
        tr = spec.build(cap, np.random.default_rng([seed, 99]))
        out.append(sim.Scenario(spec.name, tr, (VariantSpec(service=service),), tags=spec.tags))
    return out


# One simulation: the scenario, the seed, the policy's name, the load-tested
# capacity (KEDA's threshold) and whether to keep the timeline (for the plots).
Task = tuple[sim.Scenario, int, str, float, bool]


def _one(task: Task) -> tuple[dict[str, Any], sim.Result | None]:
    sc, seed, name, cap, keep = task
    pol = make_policy(name, cap)
    t0 = time.time()
    r = sim.run(sc, pol, seed)
    row = {
        "trace": sc.name,
        "load_time": sc.load_time,
        "seed": seed,
        "policy": pol.name,
        **r.scores(),
        "seconds": round(time.time() - t0, 2),
    }
    return row, (r if keep else None)


def run_tasks(tasks: list[Task], jobs: int = 1) -> list[tuple[dict[str, Any], sim.Result | None]]:
    """Every task, in order; ``jobs`` > 1 runs them in that many processes."""
    started = time.time()
    out: list[tuple[dict[str, Any], sim.Result | None]] = []
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    it: Iterator[tuple[dict[str, Any], sim.Result | None]] = (
        pool.map(_one, tasks) if pool is not None else map(_one, tasks)
    )
    try:
        for i, res in enumerate(it):
            out.append(res)
            cell = (res[0]["trace"], res[0]["load_time"])
            nxt = tasks[i + 1][0] if i + 1 < len(tasks) else None
            if nxt is None or (nxt.name, nxt.load_time) != cell:
                print(f"{cell[0]} L={cell[1]:g}: {time.time() - started:.0f}s", file=sys.stderr)
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def run(
    out: Path = OUT,
    quick: bool = False,
    seeds: int | None = None,
    load_times: Sequence[float] | None = None,
    only: Sequence[str] = (),
    service: ServiceModel | None = None,
    write: bool = True,
    jobs: int = 1,
    frontier: bool = True,
) -> dict[str, Any]:
    service = service or ServiceModel()
    n_seeds = seeds or (2 if quick else 5)
    lts = tuple(load_times or ((60.0, 180.0) if quick else LOAD_TIMES))
    cap = sim.load_test(service, 100.0)
    started = time.time()
    tasks: list[Task] = []
    for sc0 in scenarios(service, quick):
        if only and sc0.name not in only:
            continue
        for lt in lts:
            sc = sc0.with_load_time(lt)
            names = list(POLICIES)
            if frontier and sc.name in FRONTIER_TRACES and lt in PLOT_LOAD_TIMES:
                names += FRONTIER
            for seed in range(n_seeds):
                for name in names:
                    keep = seed == 0 and lt in PLOT_LOAD_TIMES and name in POLICIES
                    tasks.append((sc, seed, name, cap, keep))
    done = run_tasks(tasks, jobs)
    runs = [row for row, _ in done]
    plots: dict[tuple[str, float], dict[str, sim.Result]] = {}
    for row, r in done:
        if r is not None:
            plots.setdefault((row["trace"], row["load_time"]), {})[row["policy"]] = r
    ran = {r["policy"] for r in runs}
    front = [f for f in FRONTIER if f in ran]
    result = {
        "service": service.describe(),
        "capacity_rps_per_replica": round(cap, 3),
        "slo": "p99 <= 100 ms",
        "quick": quick,
        "seeds": n_seeds,
        "load_times": list(lts),
        "policies": list(POLICIES),
        "frontier": front,
        "traces": {s.name: s.trace.note for s in scenarios(service, quick)},
        "elapsed_s": round(time.time() - started, 1),
        "jobs": jobs,
        "summary": summarise(runs, list(POLICIES) + front),
        "runs": runs,
    }
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / ("control-quick.json" if quick else "control.json")).write_text(
            json.dumps(result, indent=1) + "\n"
        )
        if not quick:
            # Quick runs never overwrite the record's plots and tables.
            for (trace, lt), by in plots.items():
                plot(by, out / f"control-{trace}-L{int(lt)}.png", f"{trace}, L = {lt:g} s")
            update_readme(out / "README.md", table(result))
            if front:
                report.update_readme(
                    out / "README.md",
                    frontier_table(result),
                    FRONTIER_BEGIN,
                    FRONTIER_END,
                    "Attainment versus cost",
                )
            report.update_readme(
                out / "README.md",
                targets_table(result),
                TARGETS_BEGIN,
                TARGETS_END,
                "Against issue 9's targets",
            )
    return result


# Issue 9's "done when", per trace at L = 60 s and 180 s: the bound on
# replica-hours / oracle, the attainment floor (smooth traces) and the
# attainment floor in the 10 min after events (burst and step traces).
TARGET_LOAD_TIMES = (60.0, 180.0)
COST_BOUND = {"diurnal": 1.15, "noisy-flat": 1.15, "bursts": 1.3, "steps": 1.3}
ATTAINMENT_FLOOR = {"diurnal": 0.995, "noisy-flat": 0.995}
RECOVERY_FLOOR = {60.0: 0.90, 180.0: 0.75}


def target_checks(result: dict[str, Any], policy: str = "sluice") -> list[dict[str, Any]]:
    """Every target of issue 9 for ``policy`` on every trace at L = 60 and 180 s:
    one row per check with the measured value, the bar and whether it is met."""
    by: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for row in result["summary"]:
        by.setdefault((row["trace"], row["load_time"]), {})[row["policy"]] = row
    out: list[dict[str, Any]] = []
    for (trace, lt), rows in sorted(by.items()):
        me = rows.get(policy)
        if lt not in TARGET_LOAD_TIMES or me is None:
            continue

        def check(
            what: str, value: float, bar: float, higher: bool, strict: bool = False,
            trace: str = trace, lt: float = lt,
        ) -> None:
            if higher:
                met = value > bar if strict else value >= bar
            else:
                met = value < bar if strict else value <= bar
            out.append(
                {"trace": trace, "load_time": lt, "check": what, "value": value, "bar": bar,
                 "met": bool(met)}
            )  # fmt: skip

        for peer in ("hpa-p99", "keda-rate"):
            if peer in rows:
                check(f"attainment >= {peer}'s", me["attainment"], rows[peer]["attainment"], True)
        if "hpa-p99" in rows:
            hpa = rows["hpa-p99"]
            check("replica-hours < hpa-p99's", me["replica_hours"], hpa["replica_hours"], False,
                  strict=True)  # fmt: skip
            check("actions <= hpa-p99's", me["actions"], hpa["actions"], False)
        if trace in COST_BOUND:
            check("replica-hours / oracle", me["replica_hours_vs_oracle"], COST_BOUND[trace], False)
        if trace in ATTAINMENT_FLOOR:
            check("attainment", me["attainment"], ATTAINMENT_FLOOR[trace], True)
        rec = me.get("recovery_attainment")
        if rec is not None and not (isinstance(rec, float) and math.isnan(rec)):
            check("attainment in the 10 min after events", rec, RECOVERY_FLOOR[lt], True)
    return out


def targets_table(result: dict[str, Any], policy: str = "sluice") -> str:
    checks = target_checks(result, policy)
    head = ["trace", "L (s)", "target", policy, "bar", "met"]
    body = [
        [c["trace"], f"{c['load_time']:g}", c["check"], f"{c['value']:.4g}", f"{c['bar']:.4g}",
         "yes" if c["met"] else "**no**"]
        for c in checks
    ]  # fmt: skip
    met = sum(c["met"] for c in checks)
    lines = report.rows(head, body)
    return "\n".join(lines) + f"\n\n{met} of {len(checks)} checks met (policy {policy}).\n"


def frontier_table(result: dict[str, Any]) -> str:
    """Per trace and plotted load time: attainment, in the 10 min after
    events, and replica-hours / oracle of the reactive bounds and Demand's headroom."""
    names = ["reactive-bound", *[f for f in result["frontier"] if f.startswith("reactive")]]
    names += ["sluice", *[f for f in result["frontier"] if f.startswith("sluice")], "hpa-p99"]
    by: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for row in result["summary"]:
        by.setdefault((row["trace"], row["load_time"]), {})[row["policy"]] = row
    body = []
    for (trace, lt), rows in by.items():
        if not all(n in rows for n in names):
            continue
        for n in names:
            r = rows[n]
            body.append(
                [
                    trace,
                    f"{lt:g}",
                    n,
                    report.num(r["attainment"], ".4f"),
                    report.num(r["recovery_attainment"], ".3f"),
                    report.num(r["replica_hours_vs_oracle"]),
                ]
            )
    head = ["trace", "L (s)", "policy", "attainment", "10 min after events", "replica-h ÷ oracle"]
    lines = report.rows(head, body)
    meta = (
        f"\n{result['seeds']} seeds per row, the same runs as the table above; "
        "reactive-xH runs ceil(H x true rate / load-tested capacity); sluice-tN is policy "
        "Demand with target p99 N ms (scored against the 100 ms SLO).\n"
    )
    return "\n".join(lines) + "\n" + meta


# ----------------------------------------------------------------- unseen

# Service models and load times not in the standard set (that one is lognormal,
# mean 20 ms, cv 0.3, no batching, at L = 30/60/180/300 s).
UNSEEN_SERVICES = (
    ServiceModel(mean_s=0.030, cv=0.5, dist="gamma"),
    ServiceModel(mean_s=0.010, cv=1.0, dist="bimodal"),
    ServiceModel(
        mean_s=0.025, cv=0.3, batching=Batching(max_batch_size=8, max_queue_delay_s=0.002)
    ),
)
UNSEEN_LOAD_TIMES = (45.0, 120.0, 240.0)
UNSEEN_POLICIES = ("oracle", "reactive-bound", "sluice", "hpa-p99", "keda-rate")
UNSEEN_SEED_BASE = 1000  # seeds the standard set never uses


def unseen_cells() -> list[tuple[traces.TraceSpec, ServiceModel, float]]:
    """Every unseen trace with every unseen service model; the load time rotates so
    that each trace and each model meets every load time once."""
    out = []
    for i, spec in enumerate(traces.unseen(0.0)):
        for j, service in enumerate(UNSEEN_SERVICES):
            out.append((spec, service, UNSEEN_LOAD_TIMES[(i + j) % len(UNSEEN_LOAD_TIMES)]))
    return out


def run_unseen(
    out: Path = OUT, seeds: int = 3, write: bool = True, jobs: int = 1
) -> dict[str, Any]:
    started = time.time()
    tasks: list[Task] = []
    notes: dict[str, str] = {}
    for spec, service, lt in unseen_cells():
        cap = sim.load_test(service, 100.0)
        name = f"{spec.name}, {service.describe()}"
        for k in range(seeds):
            seed = UNSEEN_SEED_BASE + k
            # Random traces (the flash crowds) differ per seed, like the arrivals.
            tr = spec.build(cap, np.random.default_rng([seed, 99]))
            notes[name] = f"{tr.note}; one replica serves {cap:.3g} req/s within the SLO"
            sc = sim.Scenario(name, tr, (VariantSpec(service=service),), tags=spec.tags)
            for pol in UNSEEN_POLICIES:
                tasks.append((sc.with_load_time(lt), seed, pol, cap, False))
    runs = [row for row, _ in run_tasks(tasks, jobs)]
    result = {
        "service": "per row",
        "capacity_rps_per_replica": math.nan,
        "slo": "p99 <= 100 ms",
        "seeds": seeds,
        "first_seed": UNSEEN_SEED_BASE,
        "policies": list(UNSEEN_POLICIES),
        "cells": notes,
        "elapsed_s": round(time.time() - started, 1),
        "summary": summarise(runs, list(UNSEEN_POLICIES)),
        "runs": runs,
    }
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / "control-unseen.json").write_text(json.dumps(result, indent=1) + "\n")
        report.update_readme(
            out / "README.md", unseen_table(result), UNSEEN_BEGIN, UNSEEN_END, "Unseen traffic"
        )
    return result


def unseen_table(result: dict[str, Any]) -> str:
    t = table(result).split("\n\n", 1)[0]
    return (
        t.replace("| trace |", "| trace, service model |", 1)
        + f"\n\n{result['seeds']} seeds per cell (from seed {result['first_seed']}); columns in "
        f"the order {', '.join(result['policies'])}; whole run {result['elapsed_s']:.0f} s.\n"
    )


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
        "--unseen",
        action="store_true",
        help="only what is not in the tables: canary/A-B scenarios and scaling traffic",
    )
    ap.add_argument("--only-scaling", action="store_true", help="only the autoscaling rows")
    ap.add_argument("--no-frontier", action="store_true", help="no attainment/cost frontier")
    ap.add_argument("--jobs", type=int, default=1, help="autoscaling simulations run at once")
    a = ap.parse_args(argv)
    from . import canary_bench

    if a.unseen:
        if not a.only_scaling:
            unseen = canary_bench.run_all(
                seeds=a.canary_seeds or 50, write=not a.no_write, unseen=True
            )
            print(canary_bench.table(unseen))
        if not a.only_canary:
            u = run_unseen(seeds=a.seeds or 3, write=not a.no_write, jobs=a.jobs)
            print(unseen_table(u))
        return 0

    if not a.only_scaling:
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
        jobs=a.jobs,
        frontier=not a.no_frontier,
    )
    print(table(result))
    if result["frontier"]:
        print(frontier_table(result))
    return 0
