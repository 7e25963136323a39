"""`/verify-email/{token}`: the page behind an address-verification link. Opening it shows
a button; only the POST (with its CSRF token) uses the link, so link scanners in mail
filters cannot confirm an address on the user's behalf."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.models import User
from app.accounts.services.audit import Actor, CurrentActor
from app.accounts.services.verification import (
    VerificationInvalid,
    find_verification,
    send_address_verification,
    verify_address,
)
from app.core.db import DbSession
from app.core.runtime import AppRuntime, Runtime
from app.core.templating import absolute_url, redirect, render

TEMPLATE = "accounts/verify_email.html"


def verify_link_url(request: Request, token: str) -> str:
    """The absolute address of a verification link, on the site's address (`site_base`)."""
    return absolute_url(request, "accounts:verify_email", token=token)


async def mail_verification_link(
    request: Request,
    runtime: Runtime,
    db_session: DbSession,
    actor: Actor,
    user: User,
    *,
    asked_again: bool = False,
) -> int:
    """Enqueue the e-mail with a link that confirms `user`'s current address (`asked_again`:
    the user's own request, limited per account: `send_address_verification`)."""
    return await send_address_verification(
        db_session,
        runtime.store,
        actor,
        user,
        lambda token: verify_link_url(request, token),
        asked_again=asked_again,
    )


def _invalid(request: Request) -> Response[str]:
    return render(request, TEMPLATE, {"state": "invalid"}, status_code=404)


class VerifyEmailController(Controller):
    path = "/verify-email"
    include_in_schema = False
    guards = [roles.public]
    cache_control = CacheControlHeader(no_store=True)

    @get("/{token:str}", name="accounts:verify_email")
    async def verify_form(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        token: FromPath[str],
        done: FromQuery[bool] = False,
    ) -> Response[str]:
        if done:
            return render(request, TEMPLATE, {"state": "done"})
        try:
            user = await find_verification(db_session, runtime.store, token)
        except VerificationInvalid:
            return _invalid(request)
        return render(request, TEMPLATE, {"state": "ask", "token": token, "email": user.email})

    @post("/{token:str}", name="accounts:verify_email_submit")
    async def verify_submit(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        token: FromPath[str],
    ) -> Response[Any]:
        try:
            await verify_address(db_session, runtime.store, actor, token)
        except VerificationInvalid:
            return _invalid(request)
        await db_session.commit()
        return redirect(request.url.path + "?done=true")
