"""`/api/v1/auth`: tokens for API clients. No answer here is stored by any cache
(`Cache-Control: no-store`, RFC 6749 §5.1): they hold tokens or say who holds one."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody

from app.accounts import guards
from app.accounts.audit import Actor, record
from app.accounts.schemas import LoginRequest, LogoutRequest, MeOut, RefreshRequest, TokenPair
from app.accounts.services import sign_in_with_password
from app.accounts.tokens import AccessTokens, InvalidToken, RefreshTokens
from app.core.db import DbSession
from app.core.errors import NotSignedIn
from app.core.runtime import AppRuntime, Runtime


def _pair(runtime: Runtime, access: str, refresh: str) -> TokenPair:
    return TokenPair(access, refresh, "Bearer", runtime.service(AccessTokens).lifetime)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    cache_control = CacheControlHeader(no_store=True)

    @post("/login", name="api:auth:login", guards=[guards.public], status_code=200)
    async def login(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        data: JSONBody[LoginRequest],
    ) -> TokenPair:
        """Exchange a login and password for an access token (30 min) and a refresh token."""
        user = await sign_in_with_password(
            db_session, runtime, Actor.from_connection(request), data.login, data.password
        )
        family, refresh = await runtime.service(RefreshTokens).start(
            db_session, user.id, user.auth_version
        )
        access = runtime.service(AccessTokens).issue(user.id, user.role, user.auth_version, family)
        return _pair(runtime, access, refresh)

    @post("/refresh", name="api:auth:refresh", guards=[guards.public], status_code=200)
    async def refresh(
        self, runtime: AppRuntime, db_session: DbSession, data: JSONBody[RefreshRequest]
    ) -> TokenPair:
        """Rotate a refresh token: the old one stops working; reusing it revokes its family."""
        try:
            spent = await runtime.service(RefreshTokens).rotate(db_session, data.refresh_token)
        except InvalidToken as exc:
            raise NotSignedIn(str(exc)) from None
        user = spent.user
        access = runtime.service(AccessTokens).issue(
            user.id, user.role, user.auth_version, spent.family
        )
        return _pair(runtime, access, spent.refresh_token)

    @post("/logout", name="api:auth:logout", guards=[guards.viewer], status_code=204)
    async def logout(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        data: JSONBody[LogoutRequest | None] = None,
    ) -> None:
        """Sign out: the access token in use and every token of its sign-in are refused from
        now on (and the given refresh token's family, when it is another one)."""
        user = request.scope["user"]
        if user.token is not None:
            await runtime.service(RefreshTokens).sign_out(db_session, user.token)
        if data is not None and data.refresh_token:
            await runtime.service(RefreshTokens).revoke(db_session, data.refresh_token)
        record(db_session, Actor.from_connection(request), "auth.logout", "user", user.id)

    @get("/me", name="api:auth:me", guards=[guards.viewer])
    async def me(self, request: Request) -> MeOut:
        """The caller as Keel sees them."""
        user = request.scope["user"]
        return MeOut(
            user.id, user.username, user.email, user.display_name, user.role.name, user.via
        )
