"""The outermost ASGI middleware: request id, client address, one log line and the request
figures (`/metrics`) per request.

Client-supplied X-Request-ID and X-Forwarded-For are believed only from TRUSTED_PROXIES.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from ipaddress import IPv4Network, IPv6Network, ip_address

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from app.core.clock import release_clock, use_clock
from app.core.logging import request_id_var
from app.core.metrics import UNMATCHED
from app.core.runtime import Runtime

log = logging.getLogger("keel.request")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

Networks = tuple[IPv4Network | IPv6Network, ...]


def is_trusted(address: str | None, proxies: Networks) -> bool:
    if not address or not proxies:
        return False
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def resolve_client_ip(peer: str | None, forwarded_for: str | None, proxies: Networks) -> str | None:
    """The first address, from the right of X-Forwarded-For, that is not a trusted proxy."""
    if not forwarded_for or not is_trusted(peer, proxies):
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        if not is_trusted(hop, proxies):
            return hop if _is_ip(hop) else peer
    return peer


def request_id_for(peer: str | None, offered: str | None, proxies: Networks) -> str:
    """The id a trusted proxy gave the request, or a new random one: 32 hex digits, like
    uuid4().hex."""
    if offered and is_trusted(peer, proxies) and _REQUEST_ID.match(offered):
        return offered
    for request_id in _ids.fresh:
        return request_id
    return _ids.refill()


class _RequestIds:
    """New request ids, made 256 at a time: one system call, not one a request."""

    def __init__(self) -> None:
        self.fresh: Iterator[str] = iter(())

    def refill(self) -> str:
        digits = os.urandom(16 * 256).hex()
        self.fresh = iter([digits[i : i + 32] for i in range(0, len(digits), 32)])
        return next(self.fresh)

    def forget(self) -> None:
        self.fresh = iter(())


_ids = _RequestIds()
os.register_at_fork(after_in_child=_ids.forget)  # a forked worker makes its own


def log_request(
    scope: Scope,
    method: str,
    request_id: str,
    status: int,
    seconds: float,
    client_ip: str | None,
) -> None:
    """The request's one log line (at INFO: check `log.isEnabledFor` first, the fields
    cost more than the check)."""
    user = scope.get("user")
    log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": method,
            "path": scope["path"],
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "client_ip": client_ip,
            "user_id": str(getattr(user, "id", "")) or None,
            "error_id": scope.get("state", {}).get("error_id"),
        },
    )


def _is_ip(value: str) -> bool:
    try:
        ip_address(value)
    except ValueError:
        return False
    return True


class RequestContextMiddleware:
    """Assign the request id and client address, return X-Request-ID, log the outcome.

    HEAD requests are served as GET with the body dropped, so every page and endpoint
    answers HEAD as load balancers and link checkers expect.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_proxies: Networks,
        runtime: Runtime,
    ) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.runtime = runtime
        """Its figures count the request; its clock is the one the request runs under
        (`current_clock()`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        offered_id = forwarded_for = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                offered_id = value.decode("latin-1")
            elif key == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
        client = scope.get("client")
        peer = client[0] if client else None
        request_id = request_id_for(peer, offered_id, self.trusted_proxies)
        client_ip = resolve_client_ip(peer, forwarded_for, self.trusted_proxies)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_ip"] = client_ip
        token = request_id_var.set(request_id)
        runtime = self.runtime
        clock_token = use_clock(runtime.clock)
        status = 500
        started = time.perf_counter()
        method = scope["method"]
        if method == "HEAD":  # HEAD is GET without a body (RFC 9110 9.3.2), for every route
            scope["method"] = "GET"

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or UNMATCHED
            runtime.figures.record_request(method, route, status, seconds, runtime.clock.time())
            if log.isEnabledFor(logging.INFO):
                log_request(scope, method, request_id, status, seconds, client_ip)
            request_id_var.reset(token)
            release_clock(clock_token)
