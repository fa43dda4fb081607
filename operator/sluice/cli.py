"""The ``sluice`` command: ``crd``, ``render``, ``run``, the rollout controls and ``get``.

Also installed as the kubectl plugin ``kubectl-sluice`` (``kubectl sluice get NAME``).

Rollout controls (docs/control.md, "Rollout controls"):

* ``pause`` / ``resume`` set and clear ``spec.rollout.paused``: a declarative
  state, kept in git under GitOps (commit it there, or the GitOps tool puts the
  spec back).
* ``abort``, ``promote`` and ``retry`` are one-shot requests: each writes a new
  token into an annotation (``sluice.dev/abort`` ...); the operator acts once per
  token and acknowledges it in ``status.rollout.handled``. An annotation a
  GitOps tool did not write is not drift, and a token in git never re-fires.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REQUEST_ANNOTATIONS = {
    "abort": "sluice.dev/abort",
    "promote": "sluice.dev/promote",
    "retry": "sluice.dev/retry",
}


def _cmd_crd(_args: argparse.Namespace) -> int:
    from .api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .api.schema import SpecError
    from .reconcile.desired import render_documents

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        objs = render_documents(text, namespace=args.namespace)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False, width=100))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from .operator_main import run

    return run(
        namespaces=args.namespace,
        prometheus_url=args.prometheus_url,
        prometheus_token_file=args.prometheus_token_file,
        prometheus_ca_file=args.prometheus_ca_file,
        query_timeout=args.query_timeout,
        rate_window=args.rate_window,
        signals_refresh=args.signals_refresh,
        control_interval=args.control_interval,
        metrics_port=args.metrics_port,
        health_port=args.health_port,
        log_level=args.log_level,
        standalone=args.standalone,
    )


# --------------------------------------------------------------- controls


def _client() -> Any:
    from .reconcile.kube import Kube

    return Kube()


def _patch(kube: Any, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    from .api.v1alpha1 import API_VERSION, KIND

    res = kube.resource(API_VERSION, KIND)
    out = res.patch(
        body=dict(body),
        name=name,
        namespace=namespace,
        content_type="application/merge-patch+json",
    )
    return out.to_dict() if hasattr(out, "to_dict") else dict(out)


def control_patch(action: str, token: str) -> dict[str, Any]:
    """The merge patch a control subcommand sends."""
    if action == "pause":
        return {"spec": {"rollout": {"paused": True}}}
    if action == "resume":
        return {"spec": {"rollout": {"paused": None}}}
    return {"metadata": {"annotations": {REQUEST_ANNOTATIONS[action]: token}}}


def _cmd_control(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    token = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    kube = _client()
    try:
        _patch(kube, args.namespace, args.name, control_patch(args.action, token))
    except ApiException as e:
        print(f"error: {e.status} {e.reason}: {(e.body or '')[:300]}", file=sys.stderr)
        return 1
    what = {
        "pause": "paused (spec.rollout.paused: true)",
        "resume": "resumed (spec.rollout.paused removed)",
        "abort": f"abort requested (token {token})",
        "promote": f"promotion requested (token {token})",
        "retry": f"retry requested (token {token})",
    }[args.action]
    print(f"inferenceservice {args.namespace}/{args.name} {what}")
    return 0


# -------------------------------------------------------------------- get


def _age(ts: Any, now: float) -> str:
    if not ts:
        return "-"
    if hasattr(ts, "timestamp"):
        t = float(ts.timestamp())
    else:
        try:
            t = dt.datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()
        except ValueError:
            return "-"
    s = max(0, int(now - t))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _table(rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in cells
    ]


def _judgement_rows(signals: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        ["SIGNAL", "CANDIDATE", "BASELINE", "EFFECT", "INTERVAL", "TOLERANCE", "SAMPLES",
         "BATCHES", "VERDICT", "BETTER"]
    ]  # fmt: skip
    for j in signals:
        kind = j.get("kind") or ("proportion" if j.get("signal") == "errorRate" else "ratio")

        def num(k: str, kind: str = kind, j: Mapping[str, Any] = j) -> str:
            v = j.get(k)
            if v is None:
                return "-"
            return f"{float(v):.2%}" if kind == "proportion" else f"{float(v):.4g}"

        tol = j.get("tolerance")
        if tol is None:
            tol_s = "-"
        elif kind == "proportion":
            tol_s = f"+{tol:.2%}"
        elif kind == "difference":
            tol_s = f"{'-' if j.get('direction') == 'higher' else '+'}{tol:g}"
        else:
            tol_s = f"+{tol:.0%}"
        interval = (
            f"{num('lower')}..{num('upper')}"
            if j.get("lower") is not None and j.get("upper") is not None
            else "-"
        )
        rows.append(
            [j.get("signal", "?"), num("candidate"), num("baseline"), num("effect"), interval,
             tol_s, j.get("samples", 0), j.get("batches", 0), j.get("verdict", "?"),
             j.get("better") or "-"]
        )  # fmt: skip
    return rows


def format_get(
    obj: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    now: float,
) -> str:
    """The ``sluice get`` view (pure): variants, pods, weights, verdicts, last decisions."""
    md = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    ro = st.get("rollout") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    ready = conds.get("Ready") or {}
    lines = [
        f"Name:        {md.get('name')}",
        f"Namespace:   {md.get('namespace')}",
        f"Model:       {(spec.get('model') or {}).get('name')} version "
        f"{(spec.get('model') or {}).get('version')}",
        f"Ready:       {st.get('ready', '-')} ({ready.get('reason', '-')})",
    ]
    strategy = (spec.get("rollout") or {}).get("strategy", "Rolling")
    lines.append(f"Strategy:    {strategy}")
    if (spec.get("rollout") or {}).get("paused"):
        lines.append("Paused:      yes (spec.rollout.paused)")
    if ro:
        steps = (spec.get("rollout") or {}).get("steps") or [10, 25, 50]
        step = int(ro.get("step", -1))
        lines.append(f"  Phase:     {ro.get('phase')}")
        lines.append(f"  Step:      {step + 1}/{len(steps)}")
        lines.append(f"  Weight:    {ro.get('canaryWeight', 0)}%")
        for k in ("stable", "canary"):
            r = ro.get(k)
            if r:
                label = k.capitalize() + ":"
                lines.append(f"  {label:<10} version {r.get('version')} ({r.get('image')})")
        if ro.get("awaitingDecision"):
            lines.append(
                "  Decision:  awaited: inconclusive at the progress deadline "
                "(sluice promote | sluice abort, or more evidence)"
            )
        if ro.get("message"):
            lines.append(f"  Message:   {ro.get('message')}")
        an = ro.get("analysis") or {}
        if an.get("signals"):
            conf = an["signals"][0].get("confidence")
            head = f"Analysis: {an.get('verdict', '?')}"
            if conf is not None:
                head += f" ({float(conf):.0%} confidence, canary vs baseline)"
            lines += ["", head, *_table(_judgement_rows(an["signals"]))]
    ex = st.get("experiment") or {}
    for v in ex.get("variants") or []:
        lines += [
            "",
            f"Experiment {v.get('variant')} vs main: {v.get('verdict', '?')}"
            + (f" ({v.get('message')})" if v.get("message") else ""),
            *_table(_judgement_rows(v.get("signals") or [])),
        ]
    if ex.get("winner"):
        lines.append(f"Winner: {ex['winner']}")

    vrows: list[list[Any]] = [["VARIANT", "VERSION", "WEIGHT", "READY", "DESIRED"]]
    for v in st.get("variants") or []:
        vrows.append(
            [v.get("name"), v.get("version", "-"), f"{v.get('weight', 0)}%",
             f"{v.get('readyReplicas', 0)}/{v.get('replicas', 0)}", v.get("desiredReplicas", "-")]
        )  # fmt: skip
    lines += ["", "Variants:", *_table(vrows)]

    prows: list[list[Any]] = [["POD", "VARIANT", "STATUS", "READY", "AGE"]]
    for p in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        pmd = p.get("metadata") or {}
        pst = p.get("status") or {}
        is_ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in pst.get("conditions") or []
        )
        prows.append(
            [pmd.get("name"), (pmd.get("labels") or {}).get("sluice.dev/variant", "-"),
             pst.get("phase", "-"), "yes" if is_ready else "no",
             _age(pmd.get("creationTimestamp"), now)]
        )  # fmt: skip
    lines += ["", "Pods:", *_table(prows)]

    def ev_time(e: Mapping[str, Any]) -> str:
        t = (
            e.get("lastTimestamp")
            or e.get("eventTime")
            or (e.get("metadata") or {}).get("creationTimestamp")
        )
        return str(t.isoformat() if hasattr(t, "isoformat") else t)

    erows: list[list[Any]] = [["AGE", "TYPE", "REASON", "MESSAGE"]]
    for e in sorted(events, key=ev_time)[-10:]:
        msg = str(e.get("message") or "")
        erows.append(
            [_age(e.get("lastTimestamp") or e.get("eventTime"), now), e.get("type", "-"),
             e.get("reason", "-"), msg if len(msg) <= 140 else msg[:137] + "..."]
        )  # fmt: skip
    lines += ["", "Last decisions:", *_table(erows)]
    return "\n".join(lines) + "\n"


def _cmd_get(args: argparse.Namespace) -> int:
    from .api.v1alpha1 import API_VERSION, KIND
    from .render import LABEL_ISVC

    kube = _client()
    while True:
        obj = kube.get(API_VERSION, KIND, args.namespace, args.name)
        if obj is None:
            where = f"{args.namespace}/{args.name}"
            print(f"error: inferenceservice {where} not found", file=sys.stderr)
            return 1
        pods = kube.list("v1", "Pod", args.namespace, f"{LABEL_ISVC}={args.name}")
        events = [
            e
            for e in kube.list("v1", "Event", args.namespace)
            if (e.get("involvedObject") or e.get("involved_object") or {}).get("name") == args.name
        ]
        text = format_get(obj, pods, events, time.time())
        if not args.watch:
            sys.stdout.write(text)
            return 0
        sys.stdout.write("\x1b[2J\x1b[H" + text)
        sys.stdout.flush()
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0


def _duration(text: str) -> str:
    import re

    from .api.v1alpha1 import DURATION

    if not re.fullmatch(DURATION, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 30s, 1m or 1m30s")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sluice",
        description="Sluice runs NVIDIA Triton Inference Server fleets on Kubernetes from one "
        "InferenceService resource.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("crd", help="print the InferenceService CRD generated from the spec types")
    c.set_defaults(fn=_cmd_crd)

    r = sub.add_parser(
        "render", help="print the manifests an InferenceService becomes, offline (no cluster)"
    )
    r.add_argument("-f", "--file", required=True, help="InferenceService YAML ('-' for stdin)")
    r.add_argument("-n", "--namespace", default=None, help="namespace when the file has none")
    r.set_defaults(fn=_cmd_render)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="namespace to watch (repeatable); default: all namespaces",
    )
    run.add_argument("--prometheus-url", default=None, help="Prometheus base URL")
    run.add_argument("--prometheus-token-file", default=None, help="bearer token file")
    run.add_argument("--prometheus-ca-file", default=None, help="CA bundle for Prometheus")
    run.add_argument("--query-timeout", type=float, default=10.0, help="seconds per query")
    run.add_argument(
        "--rate-window",
        type=_duration,
        default=None,
        help="the window of every rate() in the built-in queries, e.g. 1m (at least four "
        "scrape intervals); default: $SLUICE_RATE_WINDOW or 1m",
    )
    run.add_argument(
        "--signals-refresh",
        type=float,
        default=None,
        help="seconds after which changed observations are rewritten into status even "
        "when no decision changed; default: $SLUICE_SIGNALS_REFRESH or 60",
    )
    run.add_argument(
        "--control-interval",
        type=float,
        default=15.0,
        help="seconds between control cycles (metrics, scaling, canary steps)",
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="operator metrics; 0: off")
    run.add_argument("--health-port", type=int, default=8081, help="liveness endpoint; 0: off")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    run.add_argument(
        "--standalone",
        action="store_true",
        help="no leader election (for a single local process)",
    )
    run.set_defaults(fn=_cmd_run)

    helps = {
        "pause": "pause the rollout: hold the canary's weight (sets spec.rollout.paused)",
        "resume": "resume a paused rollout (clears spec.rollout.paused)",
        "abort": "roll the canary back now (one-shot request)",
        "promote": "promote the canary now, skipping the remaining steps and analysis "
        "(one-shot request)",
        "retry": "retry a rolled-back revision (one-shot request)",
    }
    for action, text in helps.items():
        c = sub.add_parser(action, help=text)
        c.add_argument("name", help="InferenceService name")
        c.add_argument("-n", "--namespace", default="default")
        c.set_defaults(fn=_cmd_control, action=action)

    g = sub.add_parser(
        "get", help="show an InferenceService: variants, pods, weights, verdicts, decisions"
    )
    g.add_argument("name", help="InferenceService name")
    g.add_argument("-n", "--namespace", default="default")
    g.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    g.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (-w)")
    g.set_defaults(fn=_cmd_get)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
