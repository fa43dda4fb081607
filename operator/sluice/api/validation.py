"""The vocabulary of input validation shared by the spec types.

Every pattern here is read by two regex engines: Python's ``re`` (the parser,
with ``fullmatch``) and Go's RE2 (the apiserver, for ``pattern`` and CEL
``matches``). They are written in the subset both agree on: no lookaround, no
``\\s``/``\\S`` (Unicode in Python, ASCII in Go), explicit character classes.

What Kubernetes itself would refuse in a rendered child (a Service name, a
label, a toleration) is refused here first, at ``kubectl apply``, with a
message naming the InferenceService's own field; what Triton or the launcher
would silently reinterpret (a ``..`` path segment, a flag given twice) too.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from .schema import Rule

# ------------------------------------------------------------------ names

# RFC 1035 label: what Service names must be (lowercase, starts with a letter).
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain: names of ServiceAccounts, Secrets, PriorityClasses.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A label or annotation key: an optional DNS subdomain prefix (at most 253
# characters, checked by KEY_PREFIX_RULE) and '/', then a name of at most 63.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
# A label value: empty, or at most 63 characters starting and ending alphanumeric.
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
NONEMPTY_LABEL_VALUE = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"


def qualified_name_ok(key: str) -> bool:
    return re.fullmatch(QUALIFIED_NAME, key) is not None and (
        "/" not in key or key.index("/") <= 253
    )


def map_keys_rule() -> Rule:
    """Every key of a map is a valid label/annotation key (as Kubernetes checks them)."""
    return Rule(
        cel=f"self.all(k, k.matches(r'{QUALIFIED_NAME}') && "
        "(!k.contains('/') || k.indexOf('/') <= 253))",
        message="keys must be valid Kubernetes label keys: an optional DNS "
        "subdomain prefix and '/', then at most 63 characters [A-Za-z0-9-_.] starting "
        "and ending with a letter or digit",
        check=lambda m: all(qualified_name_ok(k) for k in m),
        detail=lambda m: ", ".join(repr(k) for k in m if not qualified_name_ok(k)),
    )


# ------------------------------------------------------------ paths, URIs

MODEL_NAME = r"^[A-Za-z0-9_.-]+$"

MODEL_NAME_RULE = Rule(
    cel="self != '.' && self != '..'",
    message="must not be '.' or '..': the model name is a directory of the repository "
    "and a segment of Triton's URL paths",
    check=lambda n: n not in (".", ".."),
)

# RFC 3986 characters only: no whitespace, no control characters, no quotes.
URI_CHARS = r"[-A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%]"
REPOSITORY = rf"^(s3|gs|as|pvc)://{URI_CHARS}+$"
_DOT_SEGMENT = r"(^|/)[.][.]?(/|$)"

REPOSITORY_RULE = Rule(
    cel=f"!self.matches(r'{_DOT_SEGMENT}')",
    message="must not contain '.' or '..' path segments",
    check=lambda r: re.search(_DOT_SEGMENT, r) is None,
)

S3_ENDPOINT = r"^https?://([-A-Za-z0-9.]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$"

# An image reference as the container runtimes parse it (distribution/reference:
# [domain[:port]/]path[:tag][@digest], path components lowercase), IPv6 hosts aside.
_DOMAIN_PART = r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*"
IMAGE = (
    rf"^({_DOMAIN_PART}(\.{_DOMAIN_PART})*(:[0-9]+)?/)?{_PATH_PART}(/{_PATH_PART})*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(@[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)

# Gateway API HTTPPathMatch (PathPrefix): its character set and its CEL rules.
PATH_PREFIX = r"^/(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})*$"
_BAD_PATH_PARTS = ("//", "/./", "/../", "%2f", "%2F")
_BAD_PATH_ENDS = ("/.", "/..")

PATH_PREFIX_RULE = Rule(
    cel=" && ".join(
        [f"!self.contains('{p}')" for p in _BAD_PATH_PARTS]
        + [f"!self.endsWith('{p}')" for p in _BAD_PATH_ENDS]
    ),
    message="must not contain '//', '/./', '/../', '%2f' or '%2F' and must not end "
    "with '/.' or '/..' (the Gateway API refuses such HTTPRoute paths)",
    check=lambda p: not any(b in p for b in _BAD_PATH_PARTS) and not p.endswith(_BAD_PATH_ENDS),
)

# No control characters (args are argv entries; a newline in one is a mistake).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

# ------------------------------------------------------- quantities, times

_QUANTITY_NUMBER = r"[0-9]+(\.[0-9]+)?"
CPU_QUANTITY = rf"^{_QUANTITY_NUMBER}(m|k|M|G|T)?$"
# Memory never takes the milli suffix: "1m" is a thousandth of a byte.
MEMORY_QUANTITY = rf"^{_QUANTITY_NUMBER}(k|Ki|M|Mi|G|Gi|T|Ti|P|Pi)?$"

_SUFFIX: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def quantity(q: str) -> Decimal:
    """A quantity of the forms the patterns above allow, as a number."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", q)
    if m is None or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a quantity: {q!r}")
    return Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2)])


def quantity_range(low: str, high: str) -> Rule:
    """CEL's Kubernetes quantity library and its Python twin (int-or-string field)."""

    def ok(v: str) -> bool:
        try:
            return quantity(low) <= quantity(str(v)) <= quantity(high)
        except ValueError:
            return True  # the pattern reports it

    return Rule(
        cel=f"!isQuantity(string(self)) || "
        f"(quantity(string(self)).compareTo(quantity('{low}')) >= 0 && "
        f"quantity(string(self)).compareTo(quantity('{high}')) <= 0)",
        message=f"must be between {low} and {high}",
        check=ok,
    )


# Go's time.ParseDuration accepts every string of this form; at most six digits
# per number and 20 characters keep the sum far below its 290-year limit.
DURATION = r"^([0-9]{1,6}(ms|s|m|h))+$"
DURATION_MAX_LENGTH = 20
_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    """``"1m30s"`` -> 90.0. The pattern :data:`DURATION` guarantees the form."""
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(duration))


def duration_range(low: str, high: str) -> Rule:
    def ok(v: str) -> bool:
        return seconds(low) <= seconds(v) <= seconds(high)

    return Rule(
        cel=f"!self.matches(r'{DURATION}') || "
        f"(duration(self) >= duration('{low}') && duration(self) <= duration('{high}'))",
        message=f"must be between {low} and {high}",
        check=ok,
    )


# --------------------------------------------------- flags Sluice renders


def _prefix_regex(words: tuple[str, ...]) -> str:
    """A regex (no anchors) matching every non-empty prefix of each word.

    tritonserver parses its flags with getopt_long, which accepts any
    unambiguous abbreviation: ``--model-control=poll`` is ``--model-control-mode``.
    """
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})

    def emit(node: dict[str, Any]) -> str:
        parts = [ch + (f"({emit(child)})?" if child else "") for ch, child in sorted(node.items())]
        return parts[0] if len(parts) == 1 else "(" + "|".join(parts) + ")"

    return emit(trie)


# Every flag Sluice renders is Sluice's: repository, model control (the version
# pinning), readiness and exit behaviour the probes and launcher rely on, ports
# the Services, probes and PodMonitor name, and the metrics the autoscaler reads.
OWNED_FLAGS = (
    "model-repository",
    "model-store",
    "model-control-mode",
    "load-model",
    "strict-readiness",
    "exit-on-error",
    "http-port",
    "grpc-port",
    "metrics-port",
    "allow-http",
    "allow-metrics",
)
# --metrics-config is shared: its summary_* keys are Sluice's, other keys the user's.
OWNED_METRICS_CONFIG = ("summary_latencies", "summary_quantiles")

OWNED_ARG = rf"^--{_prefix_regex(OWNED_FLAGS)}(=.*)?$"
OWNED_METRICS_ARG = rf"^--{_prefix_regex(('metrics-config',))}(=summary_.*)?$"


def owned_arg(arg: str) -> bool:
    return (
        re.fullmatch(OWNED_ARG, arg) is not None or re.fullmatch(OWNED_METRICS_ARG, arg) is not None
    )


def _owned_flag_of(arg: str) -> str:
    name = arg[2:].partition("=")[0]
    flags = [f for f in (*OWNED_FLAGS, "metrics-config") if name and f.startswith(name)]
    return f"{arg!r} sets --{'/--'.join(flags)}"


ARGS_RULE = Rule(
    cel=f"self.all(a, !a.matches(r'{OWNED_ARG}') && !a.matches(r'{OWNED_METRICS_ARG}'))",
    message="must not set flags Sluice renders itself, nor abbreviations of them: "
    + ", ".join(f"--{f}" for f in OWNED_FLAGS)
    + ", and the --metrics-config keys "
    + ", ".join(OWNED_METRICS_CONFIG)
    + " (give other --metrics-config keys as --metrics-config=<key>=<value>)",
    check=lambda args: not any(owned_arg(a) for a in args),
    detail=lambda args: "; ".join(_owned_flag_of(a) for a in args if owned_arg(a)),
)

# Environment variables the launcher reads and Sluice always sets.
OWNED_ENV = ("SLUICE_MODEL", "SLUICE_MODEL_VERSION")

ENV_RULE = Rule(
    cel="self.all(e, " + " && ".join(f"e.name != '{n}'" for n in OWNED_ENV) + ")",
    message="must not set "
    + " or ".join(OWNED_ENV)
    + ": Sluice sets them from spec.model (the model and the pinned version)",
    check=lambda env: not any(e.name in OWNED_ENV for e in env),
    detail=lambda env: ", ".join(e.name for e in env if e.name in OWNED_ENV),
)
