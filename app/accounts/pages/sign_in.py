"""Sign-in pages: first-run set-up, sign in, sign out, registration."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.params import FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import FirstRun, expired_session_cookie, session_cookie
from app.accounts.models import User
from app.accounts.pages.verify import mail_verification_link
from app.accounts.services.audit import Actor, CurrentActor, record
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.sessions import SessionStore, cookie_name
from app.accounts.services.sign_in import create_first_admin, sign_in_with_password
from app.accounts.services.throttle import Throttled
from app.accounts.services.users import (
    REGISTRATION_OPEN,
    AccountError,
    NewUser,
    check_new_user,
    register_user,
    users_exist,
)
from app.core.db import DbSession
from app.core.errors import Conflict, NotFound, field_errors
from app.core.redirects import safe_next
from app.core.runtime import AppRuntime, Runtime
from app.core.templating import Form, redirect, render

NOT_FOUND = "Not Found"
"""What a page that is off (set-up once done, registration closed) says: its status's name."""


async def start_session(
    request: Request, runtime: Runtime, actor: Actor, user: User, location: str
) -> Response[bytes]:
    """Sign `user` in: a fresh session id (any old one is deleted), then go to `location`;
    the session notes the address and browser of `actor`, who asked for it."""
    old = request.scope.get("state", {}).get("session_id")
    if old:
        await runtime.service(SessionStore).revoke(old)
    session_id = await runtime.service(SessionStore).create(
        user.id, user.auth_version, user.role, actor.ip_address, actor.user_agent
    )
    name = cookie_name(runtime.settings.app.is_production)
    return redirect(location, session_cookie(name, session_id, runtime.settings))


FORGET_THIS_SITE = {"Clear-Site-Data": '"cache", "storage"'}
"""What a browser must drop when its session ends: its cache and the tab's storage, where
htmx keeps pages for Back (cookies stay: other sites on localhost share them)."""


def signed_out(runtime: Runtime, location: str) -> Response[bytes]:
    """This browser's session has ended: drop the cookie, make the browser forget the pages
    it kept, and go to `location`."""
    production = runtime.settings.app.is_production
    response = redirect(location, expired_session_cookie(cookie_name(production), production))
    response.headers.update(FORGET_THIS_SITE)
    return response


PASSWORDS_DIFFER = "The two passwords differ."


def account_form(data: dict[str, str]) -> tuple[NewUser, dict[str, str]]:
    """The account a sign-up form describes, and every error its fields show on their own
    (the account's rules and the confirmation), so the form reports them all at once."""
    new_user = NewUser(
        email=data.get("email", ""),
        username=data.get("username", ""),
        password=data.get("password", ""),
        display_name=data.get("display_name", ""),
    )
    _, problems = check_new_user(new_user)
    errors = {name: text for problem in problems for name, text in field_errors(problem).items()}
    if data.get("password", "") != data.get("password_confirm", ""):
        errors["password_confirm"] = PASSWORDS_DIFFER
    return new_user, errors


def form_again(
    request: Request, template: str, data: dict[str, str], errors: dict[str, str]
) -> Response[str]:
    """Re-render a form with its errors and the user's input, passwords left out."""
    form = {k: v for k, v in data.items() if "password" not in k}
    return render(request, template, {"form": form, "errors": errors}, status_code=400)


class SignInController(Controller):
    path = "/"
    include_in_schema = False
    guards = [roles.public]

    @get("/setup", name="accounts:setup")
    async def setup_form(self, request: Request, db_session: DbSession) -> Response[str]:
        """The first run's page; it disappears once an account exists."""
        if await users_exist(db_session):
            raise NotFound(NOT_FOUND)
        return render(request, "accounts/setup.html", {"form": {}, "errors": {}})

    @post("/setup", name="accounts:setup_submit")
    async def setup_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: Form,
    ) -> Response[Any]:
        if await users_exist(db_session):
            raise NotFound(NOT_FOUND)
        new_user, errors = account_form(data)
        if not errors:
            try:
                user = await create_first_admin(
                    db_session,
                    runtime.service(PasswordHashing),
                    actor,
                    new_user,
                )
            except AccountError as exc:
                if isinstance(exc, Conflict):
                    return redirect("/login")
                errors.update(field_errors(exc))
            else:
                await db_session.commit()
                runtime.service(FirstRun).has_users = True
                return await start_session(request, runtime, actor, user, "/admin")
        return form_again(request, "accounts/setup.html", data, errors)

    @get("/login", name="accounts:login")
    async def login_form(
        self, request: Request, next: FromQuery[str | None] = None
    ) -> Response[Any]:
        if request.scope.get("user") is not None:
            return redirect(safe_next(next))
        return render(
            request, "accounts/login.html", {"form": {}, "error": None, "next": safe_next(next, "")}
        )

    @post("/login", name="accounts:login_submit")
    async def login_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: Form,
    ) -> Response[Any]:
        login = data.get("login", "")
        target = safe_next(data.get("next"), "")
        try:
            user = await sign_in_with_password(
                db_session, runtime, actor, login, data.get("password", "")
            )
        except (AccountError, Throttled) as exc:
            status = 429 if isinstance(exc, Throttled) else 400
            headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Throttled) else None
            return render(
                request,
                "accounts/login.html",
                {"form": {"login": login}, "error": exc.message, "next": target},
                status_code=status,
                headers=headers,
            )
        await db_session.commit()
        default = "/admin" if user.role_level.value >= 1 else "/"
        return await start_session(request, runtime, actor, user, target or default)

    @post("/logout", name="accounts:logout")
    async def logout(
        self, request: Request, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor
    ) -> Response[bytes]:
        session_id = request.scope.get("state", {}).get("session_id")
        if session_id:
            await runtime.service(SessionStore).revoke(session_id)
            record(db_session, actor, "auth.logout", "user", actor.user_id)
        return signed_out(runtime, "/")

    @get("/register", name="accounts:register")
    async def register_form(self, request: Request, db_session: DbSession) -> Response[str]:
        if not await REGISTRATION_OPEN.read(db_session):
            raise NotFound(NOT_FOUND)
        return render(request, "accounts/register.html", {"form": {}, "errors": {}})

    @post("/register", name="accounts:register_submit")
    async def register_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: Form,
    ) -> Response[Any]:
        if not await REGISTRATION_OPEN.read(db_session):
            raise NotFound(NOT_FOUND)
        new_user, errors = account_form(data)
        if not errors:
            try:
                user = await register_user(
                    db_session,
                    runtime.service(PasswordHashing),
                    actor,
                    new_user,
                )
            except AccountError as exc:
                errors.update(field_errors(exc))
            else:
                await mail_verification_link(request, runtime, db_session, actor, user)
                await db_session.commit()
                return await start_session(request, runtime, actor, user, "/")
        return form_again(request, "accounts/register.html", data, errors)
