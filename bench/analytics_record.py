"""What recording a request costs: `RequestTally.record_request` (the `/metrics` row plus
the per-minute turn of analytics, with the clock read the middleware does) against the
same row without the per-minute part, each as a ratio to a ceiling measured in the same
run: a bare dict increment in the same loop. The budget is 1 µs per request.

    .venv/bin/python bench/analytics_record.py [calls]

Folding rows into per-minute counts happens once per minute and per flush (every 2 s), not
per request; its cost per request is printed too, for 1000 requests per flush.
"""

from __future__ import annotations

import asyncio
import sys
import time
from bisect import bisect_left
from collections.abc import Callable

from app.core.clock import SYSTEM_CLOCK
from app.core.metrics import _BUCKET_ROW, _METHODS, HTTP_DURATION, RequestTally
from app.core.store import MemoryStore

ROUTES = [f"/route/{n}" for n in range(20)] + ["/", "/blog/{slug:str}", "/api/v1/content"]
STATUSES = (200, 200, 200, 304, 404, 500)


def _requests(calls: int) -> list[tuple[str, str, int, float]]:
    return [
        ("GET", ROUTES[i % len(ROUTES)], STATUSES[i % len(STATUSES)], (i % 97) / 1000)
        for i in range(calls)
    ]


class WithoutMinutes(RequestTally):
    """`record_request` as it was before analytics: the `/metrics` row only."""

    def record_without_minutes(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "other"
        row = self.requests.get((method, route, status))
        if row is None:
            row = self.requests[(method, route, status)] = [0] * len(_BUCKET_ROW)
        row[bisect_left(HTTP_DURATION.buckets, seconds)] += 1
        row[-1] += seconds


def _best_of(runs: dict[str, Callable[[], None]], rounds: int = 15) -> dict[str, float]:
    """The fastest of `rounds` timings of each run, taken in turn round after round, so a
    burst of load elsewhere on the machine weighs on all of them alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = time.perf_counter_ns()
            run()
            best[name] = min(best[name], time.perf_counter_ns() - started)
    return best


def main(calls: int) -> None:
    requests = _requests(calls)
    counts: dict[tuple[str, str, int], int] = {}

    def ceiling() -> None:
        for method, route, status, _seconds in requests:
            key = (method, route, status)
            counts[key] = counts.get(key, 0) + 1

    tally = WithoutMinutes(MemoryStore())

    def without_minutes() -> None:
        record = tally.record_without_minutes
        for method, route, status, seconds in requests:
            record(method, route, status, seconds)

    clock = SYSTEM_CLOCK

    def with_minutes() -> None:
        record = tally.record_request
        for method, route, status, seconds in requests:
            record(method, route, status, seconds, clock.time())

    fold_tally = RequestTally(MemoryStore())

    def fold_per_flush() -> None:
        at = time.time()
        for start in range(0, len(requests), 1000):
            for method, route, status, seconds in requests[start : start + 1000]:
                fold_tally.record_request(method, route, status, seconds, at)
            fold_tally.fold()
            fold_tally.take_minutes()

    best = _best_of(
        {
            "ceiling": ceiling,
            "old": without_minutes,
            "new": with_minutes,
            "folded": fold_per_flush,
        }
    )
    base, old, new = best["ceiling"] / calls, best["old"] / calls, best["new"] / calls
    folded = best["folded"] / calls - new
    print(f"calls: {calls}")
    print(f"ceiling (bare dict increment):        {base:7.1f} ns  ratio 1.00")
    print(f"record_request without per-minute:    {old:7.1f} ns  ratio {old / base:.2f}")
    print(f"record_request with per-minute+clock: {new:7.1f} ns  ratio {new / base:.2f}")
    part = new - old
    print(f"per-minute part alone:                {part:7.1f} ns  ratio {part / base:.2f}")
    print(f"fold per request (1000 per flush):     {folded:7.1f} ns  ratio {folded / base:.2f}")
    total = new + max(folded, 0)
    print(f"record + fold per request: {total:.0f} ns against a budget of 1000 ns")
    print("(absolute figures follow the machine's load; the ratios are what to compare)")
    asyncio.run(tally.store.close())


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
