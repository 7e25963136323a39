"""The time as Keel reads it where a window or a tick depends on it: the system's clock,
or one a test sets and moves (`Clock` is all such code asks of it)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """The system's clock: `now()` in UTC, `time()` in seconds since the epoch."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = Clock()
