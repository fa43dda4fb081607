"""The canary and A/B rows of ``make bench-control``: every scenario of
:mod:`.canary`, 100 seeds each; docs/bench/control-canary.json and the table
between the ``canary:begin``/``canary:end`` markers of docs/bench/README.md."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from . import canary

OUT = Path(__file__).resolve().parents[3] / "docs" / "bench"
BEGIN, END = "<!-- canary:begin -->", "<!-- canary:end -->"


def run_all(seeds: int = 100, write: bool = True, out: Path = OUT) -> dict[str, Any]:
    started = time.time()
    rows = []
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = {
            c.name: [pool.submit(canary.run, c, s) for s in range(seeds)] for c in canary.cases()
        }
    for c in canary.cases():
        outs = [f.result() for f in futures[c.name]]
        row = canary.summarise(outs, c)
        row["examples"] = [o.events[-3:] for o in outs if _odd(o, c)][:2]
        rows.append(row)
        print(f"  {c.name}: {json.dumps({k: v for k, v in row.items() if k != 'examples'})}")
    result = {
        "seeds": seeds,
        "seconds": round(time.time() - started, 1),
        "settings": {
            "steps": list(canary.STEPS),
            "interval": canary.INTERVAL,
            "rate_window": canary.RATE_WINDOW,
            "control_interval_s": canary.CONTROL_S,
            "scrape_interval_s": canary.SCRAPE_S,
            "load_time_s": canary.LOAD_TIME_S,
        },
        "rows": rows,
    }
    if write:
        (out / "control-canary.json").write_text(json.dumps(result, indent=1) + "\n")
        update_readme(out / "README.md", table(result))
    return result


def _odd(o: canary.Outcome, c: canary.Case) -> bool:
    if c.kind == "ab":
        return (o.winner_ever is not None) != (c.slowdown != 1.0)
    return (o.result == "rolled back") != c.bad


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"{result['seeds']} seeds per row; steps {s['steps']}, interval {s['interval']}, rate "
        f"window {s['rate_window']}, control every {s['control_interval_s']:g} s, scrape every "
        f"{s['scrape_interval_s']:g} s, model load {s['load_time_s']:g} s; "
        f"{result['seconds']:.0f} s of CPU for the whole table.",
        "",
        "| canary scenario | rolled back | promoted | undecided | intervals to rollback "
        "(mean / max) | minutes to decision (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "rolled_back" not in r:
            continue
        lines.append(
            f"| {r['scenario']} | {_pct(r['rolled_back'])} | {_pct(r['promoted'])} | "
            f"{_pct(r['undecided'])} | {_num(r['intervals_mean'])} / {_num(r['intervals_max'])} "
            f"| {_num(r['minutes_to_decision_mean'])} |"
        )
    lines += [
        "",
        "| A/B scenario | b named better | main named better | no winner at the end "
        "| a winner declared at any time | a wrong winner at any time |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        if "winner_b" not in r:
            continue
        lines.append(
            f"| {r['scenario']} | {_pct(r['winner_b'])} | {_pct(r['winner_main'])} | "
            f"{_pct(r['no_winner'])} | {_pct(r['winner_ever_declared'])} | "
            f"{_pct(r['wrong_winner_ever'])} |"
        )
    return "\n".join(lines) + "\n"


def update_readme(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text:
        a, rest = text.split(BEGIN, 1)
        _, b = rest.split(END, 1)
        text = a + block + b
    else:
        text = (
            text.rstrip("\n")
            + "\n\n## Canary and A/B verdicts (`make bench-control`)\n\n"
            + block
            + "\n"
        )
    path.write_text(text)
