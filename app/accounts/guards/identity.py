"""Who is calling: one middleware resolves the session cookie, access token or API key.

The JSON API (`/api/...`) authenticates only with `Authorization: Bearer` (a JWT or an API
key) or `X-API-Key`, never with cookies, which is why it needs no CSRF token. Pages use
only the session cookie: credentials in headers are not read there. `/metrics` takes
either (METRICS_TOKEN, an admin's token or key, or an admin's session). Headers such as
X-User-Id are never read. A session's request reloads the user (one query,
app/core/reads.py), so a role change or deactivation takes effect on the next request; for
an access token the same query says whether it was signed out (the database keeps that,
not the store). What that query (or an API key's) answered is kept per process for at most
two seconds, and forgotten at once on any change of an account, token or key
(app/accounts/services/callers.py): on the next request in the process that made it, within
milliseconds in the others, within `KEEP_SECONDS` when the store's message is lost.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

from litestar import Request
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.di import NamedDependency
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState
from sqlalchemy import ColumnElement, and_, bindparam, false, select, update
from sqlalchemy.orm import QueryableAttribute

from app.accounts.models import ApiKey, RevokedAccessToken, Role, TokenFamily, User
from app.accounts.services.api_keys import acting_name, acting_role, key_status
from app.accounts.services.callers import CallerCache
from app.accounts.services.sessions import BrowserSession, SessionStore, cookie_name, digest_of
from app.accounts.services.tokens import (
    AccessClaims,
    AccessTokens,
    InvalidToken,
    hash_secret,
    looks_like_jwt,
)
from app.core.csrf import PUBLIC_PAGE_OPT, session_csrf_token
from app.core.paths import API, MACHINE, METRICS_PATH, PathPrefixes
from app.core.reads import ReadQuery, Reads
from app.core.runtime import Runtime, runtime_of
from app.core.store import StoreRefused, StoreUnavailable
from app.settings import Settings

log = logging.getLogger("keel.auth")
UNAUTHENTICATED = PathPrefixes("/static", "/health", "/favicon.ico")
LAST_USED_RESOLUTION = timedelta(minutes=1)
CREDENTIAL_PATHS = PathPrefixes("/api", METRICS_PATH)
"""The machine paths: only there do `Authorization` and `X-API-Key` say who is calling.
Everywhere else (the pages) the caller is the session cookie's, else nobody."""


@dataclass(frozen=True)
class CurrentUser:
    """The caller of this request. `id` is None for an API key (a service, not a person)."""

    id: UUID | None
    username: str
    email: str
    display_name: str
    role: Role
    via: str
    """`session`, `token`, `api_key` or `metrics_token`."""
    session_digest: str | None = None
    session_csrf: str | None = None
    """The browser session's CSRF secret: its CSRF token derives from it (app/core/csrf.py)."""
    token: AccessClaims | None = None
    """The verified claims of the access token the caller sent (`via` is `token`)."""
    api_key_id: UUID | None = None

    def has(self, role: Role) -> bool:
        return self.role >= role

    @property
    def name(self) -> str:
        return self.display_name or self.username


def provide_caller(scope: Scope) -> CurrentUser:
    """The `caller` dependency of handlers (`caller: Caller`): who is signed in. Their route's
    role guard has let them in; a route open to anonymous visitors that asks for a caller
    answers an anonymous one 401, as a role guard would."""
    caller = scope.get("user")
    if not isinstance(caller, CurrentUser):
        raise _unauthorized("Sign in to continue.")
    return caller


Caller = NamedDependency[CurrentUser]
"""A handler's `caller` parameter: the signed-in CurrentUser (`create_app` provides it)."""


def created_by(
    user: CurrentUser,
    user_column: ColumnElement[Any] | QueryableAttribute[Any],
    api_key_column: ColumnElement[Any] | QueryableAttribute[Any],
) -> ColumnElement[bool]:
    """The SQL condition "this row was made by `user`": its user id, or for an API key the
    key's id. Never a comparison with None, which SQL renders `IS NULL` and which would match
    every row whose maker is an API key, the system or a deleted user; a caller with
    neither id made nothing."""
    if user.api_key_id is not None:
        return api_key_column == user.api_key_id
    if user.id is not None:
        return user_column == user.id
    return false()


@dataclass(frozen=True, slots=True)
class _Caller:
    """The columns of a user that identify a caller, read without the ORM on every request."""

    id: UUID
    username: str
    email: str
    display_name: str
    role: str
    is_active: bool
    auth_version: int


_CALLER_COLUMNS = (
    User.id,
    User.username,
    User.email,
    User.display_name,
    User.role,
    User.is_active,
    User.auth_version,
)
CALLER = ReadQuery(select(*_CALLER_COLUMNS).where(User.id == bindparam("user_id")))
TOKEN_CALLER = ReadQuery(
    select(
        *_CALLER_COLUMNS,
        and_(TokenFamily.id.is_not(None), TokenFamily.revoked_at.is_(None)).label("family_live"),
        RevokedAccessToken.jti.is_not(None).label("signed_out"),
    )
    .select_from(User)
    .outerjoin(
        TokenFamily,
        and_(TokenFamily.id == bindparam("family_id"), TokenFamily.user_id == User.id),
    )
    .outerjoin(RevokedAccessToken, RevokedAccessToken.jti == bindparam("jti"))
    .where(User.id == bindparam("user_id"))
)
"""The caller of an access token and whether the token is signed out, in one read: its
family (the sign-in it came from) must exist, be the user's and not be revoked, its jti
not listed."""


@dataclass(frozen=True, slots=True)
class _KeyCaller:
    """An API key's caller as last read, with what may end it without a change of a row:
    its expiry, and the minute after which `last_used_at` must be written again."""

    caller: CurrentUser
    last_used_at: datetime
    expires_at: datetime | None

    def holds_at(self, now: datetime) -> bool:
        return (self.expires_at is None or now < self.expires_at) and (
            now - self.last_used_at <= LAST_USED_RESOLUTION
        )


async def _load_caller(reads: Reads, user_id: UUID) -> _Caller | None:
    row = await reads.one(CALLER, user_id=user_id)
    return _Caller(**row) if row is not None else None


async def _load_token_caller(reads: Reads, claims: AccessClaims) -> tuple[_Caller | None, bool]:
    """The token's user, and whether the token is still signed in (not revoked)."""
    row = await reads.one(
        TOKEN_CALLER, user_id=claims.user_id, family_id=claims.family, jti=claims.jti
    )
    if row is None:
        return None, False
    family_live, signed_out = row.pop("family_live"), row.pop("signed_out")
    return _Caller(**row), bool(family_live) and not signed_out


def _as_current(
    user: _Caller,
    via: str,
    *,
    session_digest: str | None = None,
    session_csrf: str | None = None,
    token: AccessClaims | None = None,
) -> CurrentUser:
    return CurrentUser(
        id=user.id,
        username=user.username,
        email=user.email,
        display_name=user.display_name,
        role=Role[user.role],
        via=via,
        session_digest=session_digest,
        session_csrf=session_csrf,
        token=token,
    )


class IdentityMiddleware(ASGIMiddleware):
    """Sets `scope["user"]` to a CurrentUser or None; invalid API credentials are a 401."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = None
        path = scope["path"]
        if UNAUTHENTICATED.matches(path):
            await next_app(scope, receive, send)
            return
        runtime = runtime_of(scope["litestar_app"].state)
        headers = MutableScopeHeaders(scope)
        set_cookie: Cookie | None = None
        machine = CREDENTIAL_PATHS.matches(path)
        authorization = headers.get("authorization", "") if machine else ""
        api_key = headers.get("x-api-key", "") if machine else ""
        if authorization or api_key:
            scope["user"] = await self._from_credentials(scope, authorization, api_key)
        elif not API.matches(path):
            try:
                scope["user"], set_cookie = await self._from_session(scope, runtime)
            except (*StoreUnavailable, *StoreRefused):
                if not _is_public_read(scope):
                    raise
                # The session cannot be read or kept (the store is away, or refuses writes):
                # a public page is still readable, as a visitor sees it; anything signed-in
                # answers 503.
                scope["user"] = None
        if set_cookie is None:
            await next_app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableScopeHeaders.from_message(message).add(
                    "set-cookie", set_cookie.to_header(header="")
                )
            await send(message)

        await next_app(scope, receive, send_with_cookie)

    async def _from_credentials(
        self, scope: Scope, authorization: str, api_key: str
    ) -> CurrentUser:
        runtime = runtime_of(scope["litestar_app"].state)
        scheme, _, credential = authorization.partition(" ")
        if authorization and scheme.lower() != "bearer":
            raise _unauthorized("Use `Authorization: Bearer <token>`.")
        secret = api_key or credential.strip()
        if not secret:
            raise _unauthorized("The credentials are empty.")
        if scope["path"] == METRICS_PATH and _is_metrics_token(runtime.settings, secret):
            return METRICS_SCRAPER
        if looks_like_jwt(secret) and not api_key:
            return await self._from_access_token(scope, secret)
        return await self._from_api_key(runtime, secret)

    async def _from_access_token(self, scope: Scope, token: str) -> CurrentUser:
        runtime = runtime_of(scope["litestar_app"].state)
        tokens = runtime.service(AccessTokens)
        try:
            claims = tokens.verify(token)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from None
        cache = runtime.service(CallerCache)
        key = ("token", claims.user_id, claims.family, claims.jti)
        found = cache.get(key)
        if found is None:
            generation = cache.generation
            found = await _load_token_caller(runtime.reads, claims)
            cache.keep(key, found, generation)
        user, live = found
        if user is not None and not live:
            raise _unauthorized("The access token has been revoked.")
        if user is None or not user.is_active or user.auth_version != claims.auth_version:
            raise _unauthorized("The access token is no longer valid.")
        return _as_current(user, "token", token=claims)

    async def _from_api_key(self, runtime: Runtime, secret: str) -> CurrentUser:
        now = datetime.now(UTC)
        cache = runtime.service(CallerCache)
        key_hash = hash_secret(secret)
        found: _KeyCaller | None = cache.get(("api_key", key_hash))
        if found is not None and found.holds_at(now):
            return found.caller
        generation = cache.generation
        async with runtime.sessionmaker() as session:
            key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
            if key is None or key_status(key, now) != "active":
                raise _unauthorized("The API key is not valid.")
            creator = await session.get(User, key.created_by_id) if key.created_by_id else None
            role = acting_role(key, creator, now)
            if role is None:
                raise _unauthorized("The API key's owner is no longer active.")
            caller = CurrentUser(
                id=None,
                username=acting_name(key),
                email="",
                display_name=key.name,
                role=role,
                via="api_key",
                api_key_id=key.id,
            )
            last_used_at, expires_at = key.last_used_at, key.expires_at
            if last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == caller.api_key_id).values(last_used_at=now)
                )
                await session.commit()
                last_used_at = now
        cache.keep(("api_key", key_hash), _KeyCaller(caller, last_used_at, expires_at), generation)
        return caller

    async def _from_session(
        self, scope: Scope, runtime: Runtime
    ) -> tuple[CurrentUser | None, Cookie | None]:
        settings = runtime.settings
        name = cookie_name(settings.app.is_production)
        session_id = _cookie(scope, name)
        if not session_id:
            return None, None
        sessions = runtime.service(SessionStore)
        browser_session = await sessions.load(session_id)
        user = await _session_user(runtime, browser_session)
        if browser_session is None or user is None:
            if browser_session is not None:
                await sessions.revoke(session_id)
            return None, expired_session_cookie(name, settings.app.is_production)
        csrf = browser_session.csrf_secret
        if browser_session.role != user.role:
            new_id = await sessions.rotate(session_id, role=user.role)
            if new_id:
                scope.setdefault("state", {})["session_id"] = new_id
                return _as_current(
                    user, "session", session_digest=digest_of(new_id), session_csrf=csrf
                ), session_cookie(name, new_id, settings)
        scope.setdefault("state", {})["session_id"] = session_id
        current = _as_current(
            user, "session", session_digest=browser_session.digest, session_csrf=csrf
        )
        return current, None


async def _session_user(runtime: Runtime, browser_session: BrowserSession | None) -> _Caller | None:
    """The account a live browser session stands for, if it may still act: active, and
    its credentials unchanged since the session began."""
    if browser_session is None:
        return None
    user = await _load_caller(runtime.reads, UUID(browser_session.user_id))
    if user is None or not user.is_active or user.auth_version != browser_session.auth_version:
        return None
    return user


async def error_page_identity(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Who is signed in, for an error page no middleware saw (a path no route matches, under
    /admin too): read from the session cookie, changing nothing (no rotation, no revocation),
    with the CSRF token of the session so its sign-out form works. Part of the error page's
    layout (app/core/errors.py ErrorPageLayout)."""
    scope = request.scope
    identified = "user" in cast("dict[str, Any]", scope)  # IdentityMiddleware ran
    if identified or UNAUTHENTICATED.matches(scope["path"]) or API.matches(scope["path"]):
        return {}
    runtime = runtime_of(request.app.state)
    session_id = _cookie(scope, cookie_name(runtime.settings.app.is_production))
    if not session_id:
        return {}
    browser_session = await runtime.service(SessionStore).load(session_id)
    user = await _session_user(runtime, browser_session)
    if browser_session is None or user is None:
        return {}
    csrf = browser_session.csrf_secret
    scope["user"] = _as_current(
        user, "session", session_digest=browser_session.digest, session_csrf=csrf
    )
    ScopeState.from_scope(scope).csrf_token = session_csrf_token(
        runtime.settings.app.secret_key, csrf
    )
    return {}


METRICS_SCRAPER = CurrentUser(
    id=None,
    username="metrics-scraper",
    email="",
    display_name="Metrics scraper",
    role=Role.guest,
    via="metrics_token",
)
"""The caller holding METRICS_TOKEN: a guest anywhere else, let in by the /metrics guard."""


def _is_metrics_token(settings: Settings, secret: str) -> bool:
    token = settings.metrics.token
    return bool(token) and hmac.compare_digest(secret.encode(), token.encode())


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                cookie_key, _, cookie_value = part.strip().partition("=")
                if cookie_key == name:
                    return cookie_value
    return None


def _is_public_read(scope: Scope) -> bool:
    """A GET or HEAD of a public page (a route marked `public_cache`)."""
    handler = scope.get("route_handler")
    return (
        scope["type"] == ScopeType.HTTP
        and scope["method"] in ("GET", "HEAD")
        and handler is not None
        and bool(handler.opt.get(PUBLIC_PAGE_OPT))
    )


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(
        detail=detail, headers={"WWW-Authenticate": 'Bearer realm="keel"'}
    )


def session_cookie(name: str, session_id: str, settings: Settings) -> Cookie:
    """The session cookie: HttpOnly, SameSite=Lax, Secure in production, no Max-Age."""
    production = settings.app.is_production
    return Cookie(
        key=name, value=session_id, path="/", httponly=True, secure=production, samesite="lax"
    )


def expired_session_cookie(name: str, production: bool) -> Cookie:
    return Cookie(
        key=name,
        value="",
        path="/",
        httponly=True,
        secure=production,
        samesite="lax",
        max_age=0,
        expires=0,
    )


@dataclass
class FirstRun:
    """Whether an account exists yet: checked on each request until one does."""

    has_users: bool = False


FIRST_RUN_OPEN = PathPrefixes("/setup", "/static", "/favicon.ico", *MACHINE.prefixes)


class FirstRunMiddleware(ASGIMiddleware):
    """While no account exists, every page leads to /setup (checked until one exists)."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        runtime = runtime_of(scope["litestar_app"].state)
        first_run = runtime.service(FirstRun)
        if first_run.has_users or FIRST_RUN_OPEN.matches(scope["path"]):
            await next_app(scope, receive, send)
            return
        from app.accounts.services.users import users_exist

        async with runtime.sessionmaker() as session:
            first_run.has_users = await users_exist(session)
        if first_run.has_users:
            await next_app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [(b"location", b"/setup"), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b"", "more_body": False})
