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


# ------------------------------------------------------------------ unseen
# Traffic that is not in the standard set, for checking that the policy is good
# rather than fitted to the standard traces (``make bench-control ARGS=--unseen``).
# Shapes and ranges are fixed up front; their randomness is the seed's.


def flash_crowds(base: float, duration: float, rng: np.random.Generator) -> Trace:
    """Flat ``base`` with flash crowds at random times: each 2-5x the base (uniform)
    for 2-10 minutes (uniform), at least 10 minutes apart."""
    rate = np.full(int(duration), float(base))
    starts: list[float] = []
    t = float(rng.uniform(600, 1200))
    while t < duration - 900:
        height = float(rng.uniform(2.0, 5.0))
        length = float(rng.uniform(120, 600))
        rate[int(t) : int(t + length)] = base * height
        starts.append(t)
        t += length + float(rng.uniform(600, 1500))
    return Trace(
        "flash-crowds",
        rate,
        tuple(starts),
        f"{base:g} req/s with {len(starts)} flash crowds of 2-5x for 2-10 min at random times",
    )


def ramps(lo: float, hi: float, ramp_s: float, hold_s: float, duration: float) -> Trace:
    """``lo``, a linear ramp to ``hi`` over ``ramp_s``, hold, a ramp back down; repeated."""
    n = int(duration)
    rate = np.full(n, float(lo))
    starts: list[float] = []
    t = 600.0
    while t + 2 * ramp_s + hold_s < n - 300:
        a = int(t)
        up = np.linspace(lo, hi, int(ramp_s))
        rate[a : a + len(up)] = up
        rate[a + len(up) : a + len(up) + int(hold_s)] = hi
        b = a + len(up) + int(hold_s)
        rate[b : b + len(up)] = up[::-1]
        starts.append(t)
        t = b + len(up) + 900.0
    return Trace(
        "ramps",
        rate,
        tuple(starts),
        f"{lo:g} -> {hi:g} req/s ramps over {ramp_s / 60:g} min, held {hold_s / 60:g} min",
    )


def sawtooth(lo: float, hi: float, period: float, duration: float) -> Trace:
    """A slow linear rise from ``lo`` to ``hi`` over ``period``, then a sudden drop."""
    t = np.arange(int(duration), dtype=np.float64)
    rate = lo + (hi - lo) * ((t % period) / period)
    return Trace("sawtooth", rate, (), f"{lo:g} -> {hi:g} req/s rising over {period / 60:g} min")


def unseen(capacity: float) -> list[TraceSpec]:
    """Traces not in :func:`standard`, sized from the capacity the same way."""

    def _f(cap: float, rng: np.random.Generator) -> Trace:
        return flash_crowds(2.0 * cap, 5400, rng)

    def _r(cap: float, rng: np.random.Generator) -> Trace:
        return ramps(1.5 * cap, 7.0 * cap, 300, 600, 4800)

    def _s(cap: float, rng: np.random.Generator) -> Trace:
        return sawtooth(2.0 * cap, 6.0 * cap, 1200, 4800)

    del capacity
    return [
        TraceSpec("flash-crowds", _f, ("events",)),
        TraceSpec("ramps", _r, ("events",)),
        TraceSpec("sawtooth", _s, ("smooth",)),
    ]
