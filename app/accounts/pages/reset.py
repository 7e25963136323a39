"""`/reset/{token}`: the public page behind a one-time password-reset link, and
`/forgot-password`, where a user asks for such a link by e-mail."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.pages.sign_in import PASSWORDS_DIFFER
from app.accounts.services.audit import CurrentActor
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.passwords import (
    PasswordResetInvalid,
    consume_password_reset,
    find_password_reset,
    request_password_reset,
    reset_link,
)
from app.accounts.services.throttle import Throttled
from app.accounts.services.users import AccountError
from app.core.db import DbSession
from app.core.errors import field_errors
from app.core.runtime import AppRuntime
from app.core.store import StoreUnavailable
from app.core.templating import Form, redirect, render, site_base

TEMPLATE = "accounts/reset.html"


def reset_link_url(request: Request, token: str) -> str:
    """The absolute address of a reset link, on the site's address (`site_base`)."""
    return reset_link(site_base(request), token)


def _link_invalid(request: Request) -> Response[str]:
    return render(request, TEMPLATE, {"invalid": True, "errors": {}}, status_code=404)


class PasswordResetController(Controller):
    path = "/reset"
    include_in_schema = False
    guards = [roles.public]
    cache_control = CacheControlHeader(no_store=True)

    @get("/{token:str}", name="accounts:reset")
    async def reset_form(
        self, request: Request, runtime: AppRuntime, db_session: DbSession, token: FromPath[str]
    ) -> Response[str]:
        """Ask for the new password; looking at the link does not use it up."""
        try:
            user = await find_password_reset(db_session, runtime.store, token)
        except PasswordResetInvalid:
            return _link_invalid(request)
        context = {"invalid": False, "token": token, "account": user.username, "errors": {}}
        return render(request, TEMPLATE, context)

    @post("/{token:str}", name="accounts:reset_submit")
    async def reset_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        token: FromPath[str],
        data: Form,
    ) -> Response[Any]:
        """Set the new password, use the link up, end the user's sessions, go to sign-in."""
        try:
            user = await find_password_reset(db_session, runtime.store, token)
        except PasswordResetInvalid:
            return _link_invalid(request)
        account = user.username
        errors: dict[str, str] = {}
        if data.get("new_password", "") != data.get("new_password_confirm", ""):
            errors["new_password_confirm"] = PASSWORDS_DIFFER
        else:
            try:
                await consume_password_reset(
                    db_session,
                    runtime.store,
                    runtime.service(PasswordHashing),
                    actor,
                    token,
                    data.get("new_password", ""),
                )
            except PasswordResetInvalid:
                return _link_invalid(request)
            except AccountError as exc:
                errors.update(field_errors(exc))
            else:
                return redirect("/login")
        context = {"invalid": False, "token": token, "account": account, "errors": errors}
        return render(request, TEMPLATE, context, status_code=400)


FORGOT_TEMPLATE = "accounts/forgot_password.html"


class ForgotPasswordController(Controller):
    path = "/forgot-password"
    include_in_schema = False
    guards = [roles.public]
    cache_control = CacheControlHeader(no_store=True)

    @get("/", name="accounts:forgot_password")
    async def forgot_form(self, request: Request, sent: FromQuery[bool] = False) -> Response[str]:
        """Ask for the address; after a request, the same answer whoever asked."""
        return render(request, FORGOT_TEMPLATE, {"sent": sent, "form": {}, "errors": {}})

    @post("/", name="accounts:forgot_password_submit")
    async def forgot_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: Form,
    ) -> Response[Any]:
        """E-mail a reset link when the address belongs to an active account; answer alike."""
        email = data.get("email", "").strip()[:320]
        form = {"email": email}
        if "@" not in email:
            errors = {"email": "Enter the e-mail address of your account."}
            context = {"sent": False, "form": form, "errors": errors}
            return render(request, FORGOT_TEMPLATE, context, status_code=400)
        try:
            await request_password_reset(
                db_session,
                runtime.store,
                actor,
                email,
                lambda token: reset_link_url(request, token),
            )
        except Throttled as exc:
            context = {"sent": False, "form": form, "errors": {"form": exc.message}}
            headers = {"Retry-After": str(exc.retry_after)}
            return render(request, FORGOT_TEMPLATE, context, status_code=429, headers=headers)
        except StoreUnavailable:
            errors = {"form": "Password reset is unavailable right now. Try again in a minute."}
            context = {"sent": False, "form": form, "errors": errors}
            return render(request, FORGOT_TEMPLATE, context, status_code=503)
        await db_session.commit()
        return redirect(request.app.route_reverse("accounts:forgot_password") + "?sent=true")
