"""The per-identity API rate limit: a budget of requests per minute, shared through the store.

Callers are counted by who they are (`user:<id>`, `api-key:<id>`), else by the client
address as RequestContextMiddleware resolved it (X-Forwarded-For only from TRUSTED_PROXIES).
Every API response carries RateLimit-Limit/-Remaining/-Reset; an exhausted budget is a 429
problem body with Retry-After. When the store does not answer, requests are let through
(see `RateCounts.take`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts.services.throttle import RateCounts, RateDecision
from app.core.errors import TooManyRequests, log_failure
from app.core.paths import API
from app.core.runtime import Runtime, runtime_of
from app.site_settings.services import SettingDefinition, define

API_RATE_LIMIT = define(
    SettingDefinition(
        "api_rate_limit_per_minute",
        int,
        600,
        "API requests one identity may make per minute.",
        label="API requests per identity per minute",
        minimum=1,
        maximum=1_000_000,
    )
)

log = logging.getLogger("keel.throttle")
LIMIT_REFRESH_SECONDS = 5.0
"""How long a process keeps the `api_rate_limit_per_minute` value before reading it again."""


class RateLimited(TooManyRequests):
    """The caller spent this minute's budget: 429 with Retry-After and the RateLimit headers."""

    def __init__(self, decision: RateDecision) -> None:
        super().__init__(
            f"Too many requests: the limit is {decision.limit} per minute. "
            f"Try again in {decision.reset_seconds} s.",
            decision.reset_seconds,
            rate_limit_headers(decision),
        )
        self.decision = decision


def rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_seconds),
    }


def identity_key(scope: Scope) -> str:
    """Who the budget belongs to: the signed-in user or API key, else the client address."""
    user = scope.get("user")
    if user is not None and getattr(user, "api_key_id", None) is not None:
        return f"api-key:{user.api_key_id}"
    if user is not None and getattr(user, "id", None) is not None:
        return f"user:{user.id}"
    return f"ip:{scope.get('state', {}).get('client_ip') or 'unknown'}"


@dataclass
class LimitCache:
    """The API rate limit last read from the database, and when (a monotonic time)."""

    cached: tuple[int, float] | None = None


async def current_limit(runtime: Runtime) -> int:
    """The configured limit, read from the database at most every LIMIT_REFRESH_SECONDS.

    The cache lives in the runtime, so each process reads it on its own. A failed read
    keeps the last value (or the default) and waits for the next refresh instead of failing.
    """
    memo = runtime.service(LimitCache)
    cached = memo.cached
    now = time.monotonic()
    if cached is not None and now - cached[1] < LIMIT_REFRESH_SECONDS:
        return cached[0]
    value = cached[0] if cached is not None else int(API_RATE_LIMIT.default)
    memo.cached = (value, now)  # concurrent requests use it meanwhile
    try:
        async with runtime.sessionmaker() as session:
            value = await API_RATE_LIMIT.read(session)
    except Exception as exc:  # the limit must never be why a request fails
        log_failure(
            log, f"could not read the API rate limit; keeping {value}", exc, logging.WARNING
        )
    memo.cached = (value, time.monotonic())
    return value


async def _take(scope: Scope) -> RateDecision:
    runtime = runtime_of(scope["litestar_app"].state)
    limit = await current_limit(runtime)
    now = runtime.clock.time()
    try:
        return await runtime.service(RateCounts).take(identity_key(scope), limit, now)
    except Exception as exc:  # an odd store error (auth, read-only replica) is no 500 either
        log.warning("rate limit store failed; request allowed", exc_info=exc)
        return RateDecision(True, limit, limit, 60 - int(now % 60))


class ApiRateLimitMiddleware(ASGIMiddleware):
    """Counts every request under /api/ against its caller's budget for the current minute."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not API.matches(scope["path"]):
            await next_app(scope, receive, send)
            return
        decision = await _take(scope)
        if not decision.allowed:
            raise RateLimited(decision)
        extra = [(k.lower().encode(), v.encode()) for k, v in rate_limit_headers(decision).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await next_app(scope, receive, send_with_headers)
