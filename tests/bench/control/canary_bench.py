"""The canary and A/B rows of ``make bench-control``: every scenario of
:mod:`.canary`, 100 seeds each; docs/bench/control-canary.json and the table
between the ``canary:begin``/``canary:end`` markers of docs/bench/README.md.

``--unseen --only-canary`` runs :func:`.canary.unseen_cases` instead (other service-time
distributions, rates, regression sizes, pod spreads and seeds, none of them in
the table above): docs/bench/control-canary-unseen.json and the
``canary-unseen:begin``/``canary-unseen:end`` block.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from . import canary, report

OUT = Path(__file__).resolve().parents[3] / "docs" / "bench"
BEGIN, END = "<!-- canary:begin -->", "<!-- canary:end -->"
UNSEEN_BEGIN, UNSEEN_END = "<!-- canary-unseen:begin -->", "<!-- canary-unseen:end -->"


def run_all(
    seeds: int = 100, write: bool = True, out: Path = OUT, unseen: bool = False
) -> dict[str, Any]:
    started = time.time()
    cases = canary.unseen_cases() if unseen else canary.cases()
    base = canary.UNSEEN_SEED_BASE if unseen else 0
    rows = []
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = {
            c.name: [pool.submit(canary.run, c, base + s) for s in range(seeds)] for c in cases
        }
        for c in cases:
            outs = [f.result() for f in futures[c.name]]
            row = canary.summarise(outs, c)
            row["examples"] = [o.events[-3:] for o in outs if _odd(o, c)][:2]
            rows.append(row)
            print(f"  {c.name}: {json.dumps({k: v for k, v in row.items() if k != 'examples'})}")
    result = {
        "seeds": seeds,
        "first_seed": base,
        "unseen": unseen,
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
        name = "control-canary-unseen.json" if unseen else "control-canary.json"
        (out / name).write_text(json.dumps(result, indent=1) + "\n")
        b, e = (UNSEEN_BEGIN, UNSEEN_END) if unseen else (BEGIN, END)
        heading = "Canary and A/B verdicts" + (" on unseen scenarios" if unseen else "")
        report.update_readme(out / "README.md", table(result), b, e, heading)
    return result


def _odd(o: canary.Outcome, c: canary.Case) -> bool:
    if c.kind == "ab":
        return (o.winner_ever is not None) != (c.slowdown != 1.0)
    return (o.result != "rolled back") if c.bad else (o.result != "promoted")


Column = tuple[str, Callable[[dict[str, Any]], str]]
CANARY_COLUMNS: tuple[Column, ...] = (
    ("canary scenario", lambda r: r["scenario"]),
    ("rolled back", lambda r: report.pct(r["rolled_back"])),
    ("promoted", lambda r: report.pct(r["promoted"])),
    ("undecided (paused at the deadline)", lambda r: report.pct(r["undecided"])),
    (
        "intervals to rollback (mean / max)",
        lambda r: f"{report.num(r['intervals_mean'])} / {report.num(r['intervals_max'])}",
    ),
    ("minutes to decision (mean)", lambda r: report.num(r["minutes_to_decision_mean"])),
)
AB_COLUMNS: tuple[Column, ...] = (
    ("A/B scenario", lambda r: r["scenario"]),
    ("b named better", lambda r: report.pct(r["winner_b"])),
    ("main named better", lambda r: report.pct(r["winner_main"])),
    ("no winner at the end", lambda r: report.pct(r["no_winner"])),
    ("a winner declared at any time", lambda r: report.pct(r["winner_ever_declared"])),
    ("a wrong winner at any time", lambda r: report.pct(r["wrong_winner_ever"])),
)


def _rows(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> list[str]:
    return report.rows([h for h, _ in columns], [[f(r) for _, f in columns] for r in rows])


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"{result['seeds']} seeds per row (from seed {result.get('first_seed', 0)}); steps "
        f"{s['steps']}, interval {s['interval']}, rate window {s['rate_window']}, control "
        f"every {s['control_interval_s']:g} s, scrape every {s['scrape_interval_s']:g} s, "
        f"model load {s['load_time_s']:g} s; {result['seconds']:.0f} s for the whole table "
        "(2 processes).",
        "",
    ]
    lines += _rows(CANARY_COLUMNS, [r for r in result["rows"] if "rolled_back" in r])
    ab = [r for r in result["rows"] if "winner_b" in r]
    if ab:
        lines += ["", *_rows(AB_COLUMNS, ab)]
    return "\n".join(lines) + "\n"
