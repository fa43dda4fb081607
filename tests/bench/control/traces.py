"""Traffic traces: a request rate over time and the Poisson arrivals it gives.

A :class:`Trace` is a piecewise-constant rate on a 1 s grid (``rate[i]`` is
the mean arrival rate in requests per second during second ``i``) plus the
times of the events after which recovery is measured (burst onsets, steps).
Arrivals are a non-homogeneous Poisson process drawn second by second, all at
once with numpy, from a seeded generator: every policy of one run sees the
very same requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Trace:
    name: str
    rate: np.ndarray  # req/s for each second of the trace
    events: tuple[float, ...] = ()  # burst onsets and steps (seconds)
    note: str = ""

    @property
    def duration(self) -> float:
        return float(len(self.rate))

    def rate_at(self, t: float) -> float:
        i = int(t)
        return float(self.rate[min(max(i, 0), len(self.rate) - 1)])

    def peak(self, t0: float, t1: float) -> float:
        """Highest rate over [t0, t1] (clamped to the trace)."""
        n = len(self.rate)
        a = min(max(math.floor(t0), 0), n - 1)
        b = min(max(math.ceil(t1), a + 1), n)
        return float(self.rate[a:b].max())

    def arrivals(self, rng: np.random.Generator) -> np.ndarray:
        """Sorted arrival times (s) of one Poisson realisation of the trace."""
        counts = rng.poisson(self.rate)
        starts = np.repeat(np.arange(len(self.rate), dtype=np.float64), counts)
        t = starts + rng.random(starts.size)
        # Within each second the offsets are uniform; sort them per second.
        t.sort(kind="stable")
        return t


@dataclass(frozen=True)
class TraceSpec:
    """A named recipe: capacity-relative traces need the per-replica capacity."""

    name: str
    build: Callable[[float, np.random.Generator], Trace]
    tags: tuple[str, ...] = field(default=())


def diurnal(lo: float, hi: float, period: float, duration: float | None = None) -> Trace:
    """A compressed day: lo at the start, hi at the middle, lo again at the end."""
    n = int(duration or period)
    t = np.arange(n, dtype=np.float64)
    rate = lo + (hi - lo) * (1 - np.cos(2 * math.pi * t / period)) / 2
    return Trace("diurnal", rate, (), f"{lo:g} -> {hi:g} -> {lo:g} req/s over {period / 60:g} min")


def bursts(
    base: float, factor: float, starts: tuple[float, ...], length: float, duration: float
) -> Trace:
    """Flat ``base`` with sudden bursts to ``factor * base`` lasting ``length`` seconds."""
    rate = np.full(int(duration), float(base))
    for s in starts:
        rate[int(s) : int(s + length)] = base * factor
    return Trace(
        "bursts",
        rate,
        tuple(float(s) for s in starts),
        f"{base:g} req/s with {len(starts)} x {factor:g}x bursts of {length / 60:g} min",
    )


def steps(levels: tuple[float, ...], at: tuple[float, ...], duration: float) -> Trace:
    """``levels[0]`` until ``at[0]``, then ``levels[1]`` until ``at[1]``, ..."""
    rate = np.full(int(duration), float(levels[0]))
    for lv, s in zip(levels[1:], at, strict=True):
        rate[int(s) :] = lv
    desc = " -> ".join(f"{x:g}" for x in levels)
    return Trace("steps", rate, tuple(float(s) for s in at), f"steps {desc} req/s")


def noisy_flat(
    mean: float, rel_sigma: float, tau: float, duration: float, rng: np.random.Generator
) -> Trace:
    """A flat mean with an Ornstein-Uhlenbeck wobble of the log-rate (std ``rel_sigma``,
    correlation time ``tau`` s) on top of Poisson noise."""
    n = int(duration)
    a = math.exp(-1.0 / tau)
    eps = rng.normal(0.0, rel_sigma * math.sqrt(1 - a * a), n)
    x = np.empty(n)
    x[0] = 0.0
    for i in range(1, n):  # 1 s steps, a few thousand: cheap
        x[i] = a * x[i - 1] + eps[i]
    rate = mean * np.exp(x - rel_sigma**2 / 2)
    return Trace("noisy-flat", rate, (), f"{mean:g} req/s +- {rel_sigma:.0%} (OU, tau {tau:g} s)")


def standard(capacity: float, quick: bool = False) -> list[TraceSpec]:
    """The benchmark's traces, sized from the load-tested per-replica capacity
    ``capacity`` (req/s one replica serves within the SLO), so that they span
    about 2 to 9 replicas whatever the service model is."""
    c = capacity
    k = 0.5 if quick else 1.0

    def _d(cap: float, rng: np.random.Generator) -> Trace:
        return diurnal(1.5 * cap, 8.5 * cap, 5400 * k)

    def _b(cap: float, rng: np.random.Generator) -> Trace:
        dur = 4800 * k
        return bursts(2.6 * cap, 3.0, (1200 * k, 3000 * k), 300, dur)

    def _s(cap: float, rng: np.random.Generator) -> Trace:
        dur = 4800 * k
        return steps((1.1 * cap, 4.9 * cap, 1.1 * cap), (900 * k, 2700 * k), dur)

    def _n(cap: float, rng: np.random.Generator) -> Trace:
        # Mean at a replica boundary: 4 replicas at capacity; wobble crosses 3.x and 4.x.
        return noisy_flat(4.0 * cap, 0.06, 120, 3600 * k, rng)

    del c
    return [
        TraceSpec("diurnal", _d, ("smooth",)),
        TraceSpec("bursts", _b, ("events",)),
        TraceSpec("steps", _s, ("events",)),
        TraceSpec("noisy-flat", _n, ("smooth",)),
    ]
