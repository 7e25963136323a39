"""`/account`: a signed-in user's own profile, password and browser sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller, CurrentUser
from app.accounts.models import User
from app.accounts.pages.sign_in import PASSWORDS_DIFFER, signed_out, start_session
from app.accounts.pages.verify import mail_verification_link
from app.accounts.services.audit import CurrentActor, record
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.passwords import change_password
from app.accounts.services.sessions import BrowserSession, SessionStore
from app.accounts.services.sign_in import sign_out_everywhere
from app.accounts.services.throttle import Throttled
from app.accounts.services.users import AccountError, get_user, update_user
from app.accounts.services.verification import verification_sent_at
from app.core.db import DbSession
from app.core.errors import Forbidden, NotFound, field_errors
from app.core.runtime import AppRuntime, Runtime
from app.core.store import StoreUnavailable
from app.core.templating import Form, redirect, render

SAVED_MESSAGES = {
    "profile": "Your profile was saved.",
    "password": "Password changed; other sessions were signed out.",
    "session": "That session was signed out.",
    "verification": "A confirmation link is on its way to your address; it works for 24 hours.",
}
"""The confirmation for each `?saved=` flag the POST handlers redirect to."""


@dataclass(frozen=True)
class SessionRow:
    """One signed-in browser as the sessions table shows it."""

    short_id: str
    ip_address: str | None
    user_agent: str | None
    started: datetime
    last_seen: datetime
    current: bool

    @classmethod
    def of(cls, session: BrowserSession, current_digest: str | None) -> SessionRow:
        return cls(
            short_id=session.short_id,
            ip_address=session.ip_address,
            user_agent=session.user_agent,
            started=datetime.fromtimestamp(session.created_at, UTC),
            last_seen=datetime.fromtimestamp(session.last_seen, UTC),
            current=session.digest == current_digest,
        )


def _my_id(caller: CurrentUser) -> UUID:
    """The signed-in person's id; an API key is a service and has no account page."""
    if caller.id is None:
        raise Forbidden("An API key has no account page.")
    return caller.id


def _account_url(request: Request, saved: str | None = None) -> str:
    url = request.app.route_reverse("accounts:account")
    return f"{url}?saved={saved}" if saved else url


async def _page(
    request: Request,
    runtime: Runtime,
    db_session: DbSession,
    user: User,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    """The account page; `form` keeps what the user typed (never a password)."""
    current_digest = request.scope["user"].session_digest
    sessions = [
        SessionRow.of(session, current_digest)
        for session in await runtime.service(SessionStore).list_for_user(user.id)
        if session.auth_version == user.auth_version  # older ones are already dead
    ]
    typed = {k: v for k, v in (form or {}).items() if "password" not in k}
    context = {
        "account": user,
        "form": {"display_name": user.display_name, "email": user.email, **typed},
        "errors": errors or {},
        "message": message,
        "sessions": sessions,
        "verification_sent_at": await verification_sent_at(db_session, user),
    }
    return render(
        request, "accounts/account.html", context, status_code=status_code, headers=headers
    )


class AccountController(Controller):
    path = "/account"
    guards = [roles.viewer]
    include_in_schema = False

    @get("/", name="accounts:account")
    async def account(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        caller: Caller,
        saved: FromQuery[str | None] = None,
    ) -> Response[str]:
        """Profile, password and sessions of whoever is signed in."""
        user = await get_user(db_session, _my_id(caller))
        return await _page(
            request, runtime, db_session, user, message=SAVED_MESSAGES.get(saved or "")
        )

    @post("/profile", name="accounts:profile_update")
    async def profile_update(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Form,
    ) -> Response[Any]:
        user = await get_user(db_session, _my_id(caller))
        old_email = user.email
        try:
            await update_user(
                db_session,
                actor,
                caller.role,
                user,
                email=data.get("email", ""),
                display_name=data.get("display_name", ""),
            )
        except AccountError as exc:  # update_user changed nothing
            errors = field_errors(exc)
            return await _page(
                request, runtime, db_session, user, form=data, errors=errors, status_code=400
            )
        if user.email != old_email:
            await mail_verification_link(request, runtime, db_session, actor, user)
        return redirect(_account_url(request, "profile"))

    @post("/verification", name="accounts:verification_resend")
    async def verification_resend(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
    ) -> Response[Any]:
        """E-mail a new link that confirms the account's address (a few an hour)."""
        user = await get_user(db_session, _my_id(caller))
        try:
            await mail_verification_link(
                request, runtime, db_session, actor, user, asked_again=True
            )
        except (AccountError, Throttled) as exc:
            errors = {"verification": exc.message}
            return await _page(
                request,
                runtime,
                db_session,
                user,
                errors=errors,
                status_code=exc.status,
                headers=exc.headers,
            )
        except StoreUnavailable:
            errors = {"verification": "Links cannot be sent right now. Try again in a minute."}
            return await _page(request, runtime, db_session, user, errors=errors, status_code=503)
        return redirect(_account_url(request, "verification"))

    @post("/password", name="accounts:password_change")
    async def password_change(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Form,
    ) -> Response[Any]:
        """A new password ends every session; this browser gets a fresh one at once."""
        user = await get_user(db_session, _my_id(caller))
        errors: dict[str, str] = {}
        if data.get("new_password", "") != data.get("new_password_confirm", ""):
            errors["new_password_confirm"] = PASSWORDS_DIFFER
        else:
            try:
                await change_password(
                    db_session,
                    runtime.service(PasswordHashing),
                    actor,
                    user,
                    data.get("current_password", ""),
                    data.get("new_password", ""),
                )
            except AccountError as exc:
                errors.update(field_errors(exc))
        if errors:  # change_password changed nothing
            return await _page(request, runtime, db_session, user, errors=errors, status_code=400)
        await db_session.commit()
        await runtime.service(SessionStore).revoke_all(
            user.id
        )  # dead already (auth_version); tidy the list
        return await start_session(request, runtime, actor, user, _account_url(request, "password"))

    @post("/sessions/{short_id:str}/revoke", name="accounts:session_revoke")
    async def session_revoke(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        short_id: FromPath[str],
    ) -> Response[bytes]:
        """End one of the user's own sessions (another browser's, or this one)."""
        my_id = _my_id(caller)
        if not await runtime.service(SessionStore).revoke_by_short_id(my_id, short_id):
            raise NotFound("No such session; it may have ended already.")
        record(
            db_session,
            actor,
            "auth.session_revoked",
            "user",
            my_id,
            browser_session=short_id,
        )
        if caller.session_digest and caller.session_digest.startswith(short_id):
            return signed_out(runtime, "/login")
        return redirect(_account_url(request, "session"))

    @post("/sign-out-everywhere", name="accounts:sign_out_everywhere")
    async def sign_out_everywhere(
        self, runtime: AppRuntime, db_session: DbSession, actor: CurrentActor, caller: Caller
    ) -> Response[bytes]:
        """End every session and API token of the user, this one included."""
        user = await get_user(db_session, _my_id(caller))
        await sign_out_everywhere(db_session, runtime.service(SessionStore), actor, user)
        return signed_out(runtime, "/login")
