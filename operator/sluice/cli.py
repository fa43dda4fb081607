"""The ``sluice`` command: ``crd``, ``render`` and ``run``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
