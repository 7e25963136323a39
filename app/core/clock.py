"""The time as Keel reads it where a window, a tick or a publication depends on it: the
system's clock, or one a test sets and moves (`Clock` is all such code asks of it).

A runtime holds one (`runtime.clock`). A request runs under its runtime's clock
(`RequestContextMiddleware` sets it), so code far from the runtime, such as the content
rules deciding what is public now, asks `current_clock()`; outside a request that is the
system's clock unless a caller set another with `clock_in_use`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime


class Clock:
    """The system's clock: `now()` in UTC, `time()` in seconds since the epoch."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = Clock()
_CURRENT: ContextVar[Clock] = ContextVar("keel_clock", default=SYSTEM_CLOCK)


def current_clock() -> Clock:
    """The clock of the request (or task) running now."""
    return _CURRENT.get()


def use_clock(clock: Clock) -> Token[Clock]:
    """Run what follows in this context (and the tasks it starts) under `clock`, until
    `release_clock(token)`."""
    return _CURRENT.set(clock)


def release_clock(token: Token[Clock]) -> None:
    _CURRENT.reset(token)


@contextmanager
def clock_in_use(clock: Clock) -> Iterator[Clock]:
    """Run the block (and the tasks it starts) under `clock`."""
    token = use_clock(clock)
    try:
        yield clock
    finally:
        release_clock(token)
