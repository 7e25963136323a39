"""Login throttling and the API rate limit, shared across processes through the store.

When the store is down or slow: login throttling falls back to a per-process memory store
(still enforced, per process), and the API rate limit fails open with a logged warning;
the store counts each failed command (`keel_store_failures_total`). Neither ever answers
500 or waits longer than the store timeout.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

from app.core.errors import TooManyRequests
from app.core.store import MemoryStore, Store, StoreUnavailable
from app.settings import AuthSettings

log = logging.getLogger("keel.throttle")


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


async def take_rate_limit(store: Store, identity: str, limit: int, now: float) -> RateDecision:
    """A fixed one-minute window per identity (the one `now`, in epoch seconds, falls in);
    fails open when the store does not answer."""
    window = int(now // 60)
    reset = int(60 - now % 60) or 1
    key = f"ratelimit:{identity}:{window}"
    try:
        used = await store.incr(key, ttl=61)
    except StoreUnavailable as exc:
        log.warning("rate limit store unavailable; request allowed", extra={"error": repr(exc)})
        return RateDecision(True, limit, limit, reset)
    return RateDecision(used <= limit, limit, max(limit - used, 0), reset)
