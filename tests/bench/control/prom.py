"""Prometheus as the operator reads it: scrapes, staleness, and a PromQL subset.

Every ``scrape_interval`` each pod that is serving (ready, or draining after
removal) is scraped: one sample per series (Triton's counters, the pending
gauge, the summary's quantiles, ``_sum`` and ``_count``). A pod that is gone
gets a staleness marker at the next scrape, as Prometheus writes when a target
disappears. Queries are evaluated by a small PromQL interpreter over that
store, for exactly the expression shapes the operator's templates use
(:data:`sluice.policy.signals.BUILTIN_QUERIES`): ``sum/max/min/avg/count by
(...) (...)``, ``rate()`` and ``increase()`` with Prometheus' extrapolation,
instant selectors with the 5-minute lookback and staleness, label matchers
(``=``, ``!=``, ``=~``, ``!~``), ``deriv()``, ``irate()``, ``offset``,
``+ - * /`` with one-to-one matching, comparison filters, ``or``,
and number literals. The operator's own code then turns the answers into
readings (:func:`sluice.policy.signals.group`), so the policy sees exactly
what it would see from a real Prometheus.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.policy import signals as sig

from .fleet import GAUGES, QUANTILES, Fleet

LOOKBACK = 300.0  # Prometheus' default query.lookback-delta
Labels = tuple[tuple[str, str], ...]
Vector = dict[Labels, float]


@dataclass
class Series:
    labels: dict[str, str]
    t: list[float] = field(default_factory=list)
    v: list[float] = field(default_factory=list)
    stale_at: float | None = None


class Prometheus:
    def __init__(
        self,
        namespace: str = "bench",
        service: str = "svc",
        scrape_interval: float = 15.0,
        keep: float = 900.0,
    ) -> None:
        self.namespace, self.service = namespace, service
        self.scrape_interval = scrape_interval
        self.keep = keep
        self.series: dict[tuple[int, str, str], Series] = {}
        self._by_name: dict[str, list[Series]] = {}
        self._cache: dict[str, Any] = {}
        self._memo_t: float | None = None
        self._memo: dict[Any, Vector | float] = {}

    # ------------------------------------------------------------------ scrape

    def scrape(self, fleet: Fleet, s: float) -> None:
        self._memo_t = None
        seen: set[int] = set()
        for p in fleet.pods:
            if p.ready_at > s or p.gone_at <= s:
                continue
            seen.add(p.uid)
            values = p.collect(s)
            base = {
                "namespace": self.namespace,
                "inferenceservice": self.service,
                "variant": p.variant,
                "pod": p.name,
                "model": "model",
                "version": "1",
            }
            for name, val in values.items():
                if name.startswith("q"):
                    key = (p.uid, "nv_inference_request_summary_us", name[1:])
                    labels = {**base, "quantile": name[1:]}
                    metric = "nv_inference_request_summary_us"
                else:
                    key = (p.uid, name, "")
                    labels = base
                    metric = name
                ser = self.series.get(key)
                if ser is None:
                    ser = Series({"__name__": metric, **labels})
                    self.series[key] = ser
                    self._by_name.setdefault(metric, []).append(ser)
                ser.t.append(s)
                ser.v.append(val)
        # Targets that disappeared: a staleness marker; old series dropped.
        for key, ser in list(self.series.items()):
            if key[0] not in seen and ser.stale_at is None:
                ser.stale_at = s
            while ser.t and ser.t[0] < s - self.keep:
                ser.t.pop(0)
                ser.v.pop(0)
            if not ser.t and ser.stale_at is not None:
                del self.series[key]
                self._by_name[ser.labels["__name__"]].remove(ser)

    # ------------------------------------------------------------------- query

    def query(self, expr: str, t: float) -> Vector | float:
        ast = self._cache.get(expr)
        if ast is None:
            ast = _Parser(expr).parse()
            self._cache[expr] = ast
        return self._eval(ast, t)

    def answer(self, expr: str, t: float) -> sig.QueryAnswer:
        """The query's result in the shape the operator's Prometheus client returns."""
        try:
            got = self.query(expr, t)
        except ValueError as e:
            return sig.QueryAnswer(error=str(e))
        if isinstance(got, float):
            return sig.QueryAnswer(result=({"metric": {}, "value": [t, _fmt(got)]},))
        return sig.QueryAnswer(
            result=tuple({"metric": dict(k), "value": [t, _fmt(v)]} for k, v in got.items())
        )

    def _select(self, name: str, matchers: tuple[tuple[str, str, str], ...]) -> Iterable[Series]:
        for ser in self._by_name.get(name, ()):
            if all(_match(ser.labels.get(lbl, ""), op, val) for lbl, op, val in matchers):
                yield ser

    def _eval(self, node: Any, t: float) -> Vector | float:
        # Queries of one cycle share sub-expressions (rate of the success counter):
        # evaluate each once per evaluation time.
        if self._memo_t != t:
            self._memo_t, self._memo = t, {}
        hit = self._memo.get(node)
        if hit is None:
            hit = self._memo[node] = self._eval_node(node, t)
        return hit

    def _eval_node(self, node: Any, t: float) -> Vector | float:
        kind = node[0]
        if kind == "num":
            return float(node[1])
        if kind == "sel":
            _, name, matchers = node
            out: Vector = {}
            for ser in self._select(name, matchers):
                v = _instant(ser, t)
                if v is not None:
                    out[_key(ser.labels)] = v
            return out
        if kind == "range_fn":
            _, fn, name, matchers, window, offset = node
            out = {}
            at = t - offset
            for ser in self._select(name, matchers):
                if fn == "deriv":
                    v = _deriv(ser, at, window)
                elif fn == "irate":
                    v = _irate(ser, at, window)
                else:
                    v = _extrapolated(ser, at, window, is_rate=fn == "rate")
                if v is not None:
                    out[_key(ser.labels, drop_name=True)] = v
            return out
        if kind == "agg":
            _, op, by, inner = node
            vec = self._eval(inner, t)
            if isinstance(vec, float):
                raise ValueError("aggregation over a scalar")
            groups: dict[Labels, list[float]] = {}
            for k, v in vec.items():
                d = dict(k)
                g = tuple((lbl, d[lbl]) for lbl in sorted(by) if lbl in d)
                groups.setdefault(g, []).append(v)
            return {g: _aggregate(op, vs) for g, vs in groups.items()}
        if kind == "cmp":
            # A filter (no bool modifier): keep the elements for which it holds.
            _, op, lhs, rhs = node
            a, b = self._eval(lhs, t), self._eval(rhs, t)
            if not isinstance(a, dict) or not isinstance(b, float):
                raise ValueError("only vector <op> scalar comparisons are supported")
            test = {
                ">=": lambda x: x >= b,
                "<=": lambda x: x <= b,
                ">": lambda x: x > b,
                "<": lambda x: x < b,
                "==": lambda x: x == b,
            }[op]
            return {k: v for k, v in a.items() if test(v)}
        if kind == "bin":
            _, op, lhs, rhs = node
            a, b = self._eval(lhs, t), self._eval(rhs, t)
            if op == "or":
                if isinstance(a, float) or isinstance(b, float):
                    raise ValueError("or needs vectors")
                out = dict(a)
                for k, v in b.items():
                    out.setdefault(k, v)
                return out
            if isinstance(a, float) and isinstance(b, float):
                return _arith(op, a, b)
            if isinstance(a, float):
                assert isinstance(b, dict)
                return {k: _arith(op, a, v) for k, v in b.items()}
            if isinstance(b, float):
                return {k: _arith(op, v, b) for k, v in a.items()}
            return {k: _arith(op, v, b[k]) for k, v in a.items() if k in b}
        raise ValueError(f"unsupported node {kind}")

    # ----------------------------------------------------------------- signals

    def observations(
        self, t: float, window: str = "1m", queries: Mapping[str, str] | None = None
    ) -> sig.Observations:
        """What the operator's observe() builds from one fleet-wide query per signal."""
        templates = dict(sig.BUILTIN_QUERIES if queries is None else queries)
        sel = sig.fleet_selector(())
        by: dict[str, dict[sig.Key, sig.Reading] | sig.Reading] = {}
        for s, tmpl in templates.items():
            by[s] = sig.group(self.answer(sig.render_query(tmpl, sel, window), t))
        return sig.Observations(by)

    def readings(
        self, t: float, variant: str, window: str = "1m", queries: Mapping[str, str] | None = None
    ) -> dict[str, sig.Reading]:
        obs = self.observations(t, window, queries)
        key = (self.namespace, self.service, variant)
        names = list(sig.BUILTIN_QUERIES if queries is None else queries)
        return {s: obs.reading(key, s) for s in names}


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _key(labels: Mapping[str, str], drop_name: bool = False) -> Labels:
    return tuple(sorted((k, v) for k, v in labels.items() if not (drop_name and k == "__name__")))


def _match(have: str, op: str, want: str) -> bool:
    if op == "=":
        return have == want
    if op == "!=":
        return have != want
    if op == "=~":
        return re.fullmatch(want, have) is not None
    if op == "!~":
        return re.fullmatch(want, have) is None
    raise ValueError(op)


def _instant(ser: Series, t: float) -> float | None:
    # Latest sample in [t - lookback, t], unless a staleness marker follows it.
    i = _bisect_right(ser.t, t) - 1
    if i < 0 or ser.t[i] < t - LOOKBACK:
        return None
    if ser.stale_at is not None and ser.t[i] < ser.stale_at <= t:
        return None
    return ser.v[i]


def _bisect_right(a: list[float], x: float) -> int:
    lo, hi = 0, len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _extrapolated(ser: Series, t: float, window: float, is_rate: bool) -> float | None:
    """Prometheus' extrapolatedRate (promql/functions.go) for a counter."""
    lo = t - window
    hi_i = _bisect_right(ser.t, t)
    i = hi_i - 1
    pts_t: list[float] = []
    pts_v: list[float] = []
    while i >= 0 and ser.t[i] >= lo:
        pts_t.append(ser.t[i])
        pts_v.append(ser.v[i])
        i -= 1
    if len(pts_t) < 2:
        return None
    pts_t.reverse()
    pts_v.reverse()
    result = pts_v[-1] - pts_v[0]
    prev = pts_v[0]
    for v in pts_v[1:]:  # counter resets
        if v < prev:
            result += prev
        prev = v
    first_t, last_t = pts_t[0], pts_t[-1]
    sampled = last_t - first_t
    avg = sampled / (len(pts_t) - 1)
    to_start = first_t - lo
    to_end = t - last_t
    if result > 0 and pts_v[0] >= 0:
        to_zero = sampled * (pts_v[0] / result)
        to_start = min(to_start, to_zero)
    threshold = avg * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else avg / 2
    interval += to_end if to_end < threshold else avg / 2
    result *= interval / sampled
    return result / window if is_rate else result


def _window(ser: Series, t: float, window: float) -> tuple[list[float], list[float]]:
    lo = t - window
    i = _bisect_right(ser.t, t) - 1
    ts: list[float] = []
    vs: list[float] = []
    while i >= 0 and ser.t[i] >= lo:
        if ser.stale_at is None or ser.t[i] < ser.stale_at:
            ts.append(ser.t[i])
            vs.append(ser.v[i])
        i -= 1
    ts.reverse()
    vs.reverse()
    return ts, vs


def _irate(ser: Series, t: float, window: float) -> float | None:
    """Prometheus' irate(): the last two samples of the window."""
    ts, vs = _window(ser, t, window)
    if len(ts) < 2:
        return None
    dv = vs[-1] - vs[-2]
    if dv < 0:  # counter reset
        dv = vs[-1]
    return dv / (ts[-1] - ts[-2])


def _deriv(ser: Series, t: float, window: float) -> float | None:
    """Prometheus' deriv(): the least-squares slope per second, at least 2 samples."""
    ts, vs = _window(ser, t, window)
    if len(ts) < 2:
        return None
    n = len(ts)
    mt = sum(ts) / n
    mv = sum(vs) / n
    den = sum((x - mt) ** 2 for x in ts)
    if den == 0:
        return None
    return sum((x - mt) * (y - mv) for x, y in zip(ts, vs, strict=True)) / den


def _aggregate(op: str, vs: list[float]) -> float:
    if op == "sum":
        return float(sum(vs))
    if op == "count":
        return float(len(vs))
    if op == "avg":
        return float(sum(vs) / len(vs))
    if op in ("max", "min"):
        real = [v for v in vs if not math.isnan(v)]
        if not real:
            return math.nan
        return max(real) if op == "max" else min(real)
    raise ValueError(f"unsupported aggregation {op}")


def _arith(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            if a == 0 or math.isnan(a):
                return math.nan
            return math.copysign(math.inf, a)
        return a / b
    raise ValueError(op)


# ---------------------------------------------------------------------- parser

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?![a-zA-Z0-9.])|(?P<dur>\d+[smhd])"
    r"|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)|(?P<str>\"(?:[^\"\\]|\\.)*\")"
    r"|(?P<op>=~|!~|!=|>=|<=|==|=|[-+*/(){}\[\],<>]))"
)
_AGGS = {"sum", "max", "min", "avg", "count"}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise ValueError(f"cannot parse PromQL at {text[pos : pos + 20]!r}")
            kind = m.lastgroup
            assert kind is not None
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ValueError(f"expected {value!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.expr_or()
        if self.peek() is not None:
            raise ValueError(f"trailing tokens {self.toks[self.i :]}")
        return node

    def expr_or(self) -> Any:
        node = self.expr_cmp()
        while (tok := self.peek()) and tok == ("id", "or"):
            self.take()
            node = ("bin", "or", node, self.expr_cmp())
        return node

    def expr_cmp(self) -> Any:
        node = self.expr_add()
        while (tok := self.peek()) and tok[0] == "op" and tok[1] in (">=", "<=", ">", "<", "=="):
            self.take()
            node = ("cmp", tok[1], node, self.expr_add())
        return node

    def expr_add(self) -> Any:
        node = self.expr_mul()
        while (tok := self.peek()) and tok[1] in ("+", "-") and tok[0] == "op":
            self.take()
            node = ("bin", tok[1], node, self.expr_mul())
        return node

    def expr_mul(self) -> Any:
        node = self.atom()
        while (tok := self.peek()) and tok[1] in ("*", "/") and tok[0] == "op":
            self.take()
            node = ("bin", tok[1], node, self.atom())
        return node

    def atom(self) -> Any:
        tok = self.take()
        kind, val = tok
        if kind == "num":
            return ("num", float(val))
        if val == "(":
            node = self.expr_or()
            self.take(")")
            return node
        if kind == "id" and val in _AGGS:
            by: list[str] = []
            if self.peek() == ("id", "by"):
                self.take()
                by = self.labels()
            self.take("(")
            inner = self.expr_or()
            self.take(")")
            if self.peek() == ("id", "by"):
                self.take()
                by = self.labels()
            return ("agg", val, tuple(by), inner)
        if kind == "id" and val in ("rate", "irate", "increase", "deriv"):
            self.take("(")
            name, matchers = self.selector()
            self.take("[")
            d = self.take()
            if d[0] != "dur":
                raise ValueError(f"expected a duration, got {d[1]!r}")
            self.take("]")
            offset = 0.0
            if self.peek() == ("id", "offset"):
                self.take()
                o = self.take()
                if o[0] != "dur":
                    raise ValueError(f"expected a duration, got {o[1]!r}")
                offset = float(o[1][:-1]) * _UNITS[o[1][-1]]
            self.take(")")
            window = float(d[1][:-1]) * _UNITS[d[1][-1]]
            return ("range_fn", val, name, matchers, window, offset)
        if kind == "id":
            self.i -= 1
            name, matchers = self.selector()
            return ("sel", name, matchers)
        raise ValueError(f"unexpected token {val!r}")

    def labels(self) -> list[str]:
        self.take("(")
        out = []
        while self.peek() and self.peek() != ("op", ")"):
            out.append(self.take()[1])
            if self.peek() == ("op", ","):
                self.take()
        self.take(")")
        return out

    def selector(self) -> tuple[str, tuple[tuple[str, str, str], ...]]:
        name = self.take()[1]
        matchers: list[tuple[str, str, str]] = []
        if self.peek() == ("op", "{"):
            self.take()
            while self.peek() and self.peek() != ("op", "}"):
                lbl = self.take()[1]
                op = self.take()[1]
                raw = self.take()[1]
                matchers.append((lbl, op, _unquote(raw)))
                if self.peek() == ("op", ","):
                    self.take()
            self.take("}")
        return name, tuple(matchers)


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


__all__ = ["GAUGES", "QUANTILES", "Prometheus"]
