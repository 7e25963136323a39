"""Login throttling and the API rate limit, shared across processes through the store.

When the store is down or slow: login throttling falls back to a per-process memory store
(still enforced, per process), and the API rate limit fails open with a logged warning;
the store counts each failed command (`keel_store_failures_total`). Neither ever answers
500 or waits longer than the store timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from app.core.errors import TooManyRequests
from app.core.store import MemoryStore, Store, StoreUnavailable
from app.settings import AuthSettings

log = logging.getLogger("keel.throttle")
WINDOW_TTL = 61
"""Seconds a rate-limit window's counter lives after its first request (a window is 60)."""


class Throttled(TooManyRequests):
    """Too many attempts: 429 with Retry-After."""

    def __init__(self, retry_after: int, message: str) -> None:
        super().__init__(message, retry_after)


class LoginThrottle:
    def __init__(self, store: Store, settings: AuthSettings) -> None:
        self.store = store
        self.fallback = MemoryStore()
        self.window = settings.login_lockout_minutes * 60
        self.max_account = settings.login_max_failures
        self.max_ip = settings.login_max_failures_per_ip

    async def _get(self, key: str) -> int:
        try:
            raw = await self.store.get(key)
        except StoreUnavailable:
            log.warning("login throttle store unavailable; using this process's counters")
            raw = await self.fallback.get(key)
        return int(raw or 0)

    async def _incr(self, key: str) -> None:
        try:
            await self.store.incr(key, ttl=self.window)
        except StoreUnavailable:
            await self.fallback.incr(key, ttl=self.window)

    async def check(self, account: str, ip: str | None) -> None:
        """Raise Throttled when the account or the address failed too often lately."""
        if await self._get(f"login-fail:account:{account.lower()}") >= self.max_account:
            raise Throttled(
                self.window, "Too many failed sign-ins for this account. Try again later."
            )
        if ip and await self._get(f"login-fail:ip:{ip}") >= self.max_ip:
            raise Throttled(
                self.window, "Too many failed sign-ins from your address. Try again later."
            )

    async def record_failure(self, account: str, ip: str | None) -> None:
        await self._incr(f"login-fail:account:{account.lower()}")
        if ip:
            await self._incr(f"login-fail:ip:{ip}")

    async def reset(self, account: str) -> None:
        for store in (self.store, self.fallback):
            with contextlib.suppress(*StoreUnavailable):  # else it expires with its window
                await store.delete(f"login-fail:account:{account.lower()}")


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class RateCounts:
    """The API rate limit's counters: a fixed one-minute window per identity, in the store.

    Requests of one identity that arrive while its count is on the way to the store are
    counted together by the next command (`INCRBY n`), and each is handed its own number
    of that total: the same numbers, in arrival order, as one command per request would
    give, with one store round trip per batch instead of one per request (one API client
    with many connections open was a round trip per request; docs/performance.md).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, list[asyncio.Future[int]]] = {}
        """Keys with a count on the way, and the requests that arrived since."""
        self._batches: set[asyncio.Task[None]] = set()

    async def take(self, identity: str, limit: int, now: float) -> RateDecision:
        """Count one request of `identity` in the window `now` (epoch seconds) falls in;
        fails open when the store does not answer."""
        window = int(now // 60)
        reset = int(60 - now % 60) or 1
        try:
            used = await self._count(f"ratelimit:{identity}:{window}")
        except StoreUnavailable as exc:
            log.warning("rate limit store unavailable; request allowed", extra={"error": repr(exc)})
            return RateDecision(True, limit, limit, reset)
        return RateDecision(used <= limit, limit, max(limit - used, 0), reset)

    async def _count(self, key: str) -> int:
        waiting = self._waiting.get(key)
        if waiting is not None:  # a count is on the way: join the next one
            joined: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            waiting.append(joined)
            return await joined
        self._waiting[key] = []
        try:
            return await self.store.incr(key, ttl=WINDOW_TTL)
        finally:
            self._send_next(key)

    def _send_next(self, key: str) -> None:
        waiting = self._waiting.pop(key)
        if waiting:
            self._waiting[key] = []
            batch = asyncio.create_task(self._count_batch(key, waiting))
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)

    async def _count_batch(self, key: str, waiting: list[asyncio.Future[int]]) -> None:
        try:
            total = await self.store.incr(key, len(waiting), ttl=WINDOW_TTL)
        except BaseException as exc:
            for joined in waiting:
                if not joined.done():
                    joined.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            first = total - len(waiting)
            for number, joined in enumerate(waiting, start=1):
                if not joined.done():  # a request given up on still counted, as it would be
                    joined.set_result(first + number)
        finally:
            self._send_next(key)
