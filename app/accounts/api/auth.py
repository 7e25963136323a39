"""`/api/v1/auth`: tokens for API clients, and signing out everywhere. No answer here is
stored by any cache (`Cache-Control: no-store`, RFC 6749 §5.1): they hold tokens or say
who holds one."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import JSONBody

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.schemas import LoginRequest, LogoutRequest, MeOut, RefreshRequest, TokenPair
from app.accounts.services.audit import CurrentActor, record
from app.accounts.services.sessions import SessionStore
from app.accounts.services.sign_in import sign_in_with_password, sign_out_everywhere
from app.accounts.services.tokens import AccessTokens, InvalidToken, RefreshTokens
from app.accounts.services.users import get_user
from app.core.db import DbSession
from app.core.errors import Forbidden, NotSignedIn
from app.core.runtime import AppRuntime, Runtime


def _pair(runtime: Runtime, access: str, refresh: str) -> TokenPair:
    return TokenPair(access, refresh, "Bearer", runtime.service(AccessTokens).lifetime)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    cache_control = CacheControlHeader(no_store=True)

    @post("/login", name="api:auth:login", guards=[roles.public], status_code=200)
    async def login(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: JSONBody[LoginRequest],
    ) -> TokenPair:
        """Exchange a login and password for an access token (30 min) and a refresh token."""
        user = await sign_in_with_password(db_session, runtime, actor, data.login, data.password)
        family, refresh = await runtime.service(RefreshTokens).start(
            db_session, user.id, user.auth_version
        )
        access = runtime.service(AccessTokens).issue(user.id, user.role, user.auth_version, family)
        return _pair(runtime, access, refresh)

    @post("/refresh", name="api:auth:refresh", guards=[roles.public], status_code=200)
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

    @post("/logout", name="api:auth:logout", guards=[roles.viewer], status_code=204)
    async def logout(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: JSONBody[LogoutRequest | None] = None,
    ) -> None:
        """Sign out: the access token in use and every token of its sign-in are refused from
        now on (and the given refresh token's family, when it is another one)."""
        if caller.token is not None:
            await runtime.service(RefreshTokens).sign_out(db_session, caller.token)
        if data is not None and data.refresh_token:
            await runtime.service(RefreshTokens).revoke(db_session, data.refresh_token)
        record(db_session, actor, "auth.logout", "user", caller.id)

    @post(
        "/sign-out-everywhere",
        name="api:auth:sign_out_everywhere",
        guards=[roles.viewer],
        status_code=204,
    )
    async def sign_out_everywhere(
        self, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor, caller: Caller
    ) -> None:
        """Sign the caller out everywhere: every browser session and every access and refresh
        token of theirs is refused from now on, the token in use included. An API key has no
        sign-ins of its own (403)."""
        if caller.id is None:
            raise Forbidden("An API key has no sign-ins to end.")
        user = await get_user(db_session, caller.id)
        await sign_out_everywhere(db_session, runtime.service(SessionStore), actor, user)

    @get("/me", name="api:auth:me", guards=[roles.viewer])
    async def me(self, caller: Caller) -> MeOut:
        """The caller as Keel sees them."""
        return MeOut(
            caller.id,
            caller.username,
            caller.email,
            caller.display_name,
            caller.role.name,
            caller.via,
        )
