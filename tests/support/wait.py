"""Wait on conditions with timeouts: the only way tests synchronise."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(
    fn: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.2,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call ``fn`` until it returns something truthy; return that, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except ignore as e:  # a transient error is an answer of "not yet"
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)  # polling interval between checks of the condition


def never(fn: Callable[[], object], duration: float, what: str, interval: float = 0.2) -> None:
    """Assert ``fn`` stays falsy for ``duration`` seconds (a bounded observation window)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        value = fn()
        assert not value, f"{what} happened: {value!r}"
        time.sleep(interval)  # polling interval within the observation window
