"""`/admin/outbox` (admins read the e-mails Keel made) and `/account/notifications` (a
signed-in user's in-app notifications, marked read one by one or all at once)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller, CurrentUser
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.errors import Forbidden
from app.core.pagination import PageNumber, PageRequest
from app.core.templating import redirect, render
from app.notifications.services import (
    get_message,
    list_messages,
    list_notifications,
    mark_read,
    unread_count,
)

PER_PAGE = 50


class OutboxAdminController(Controller):
    path = "/outbox"
    guards = [roles.admin]
    include_in_schema = False
    cache_control = CacheControlHeader(no_store=True)

    @get("/", name="admin:outbox")
    async def outbox(
        self, request: Request, db_session: DbSession, page: FromQuery[PageNumber] = 1
    ) -> Response[str]:
        """Every e-mail, newest first, 50 a page."""
        messages = await list_messages(db_session, PageRequest.of(page, PER_PAGE, PER_PAGE))
        return render(
            request,
            "notifications/outbox.html",
            {"messages": messages, "params": {}},
            block="results",
        )

    @get("/{message_id:uuid}", name="admin:outbox_message")
    async def message(
        self, request: Request, db_session: DbSession, message_id: FromPath[UUID]
    ) -> Response[str]:
        message = await get_message(db_session, message_id)
        return render(request, "notifications/message.html", {"message": message})


def _my_id(caller: CurrentUser) -> UUID:
    if caller.id is None:
        raise Forbidden("An API key has no notifications.")
    return caller.id


class NotificationsController(Controller):
    path = "/account/notifications"
    guards = [roles.viewer]
    include_in_schema = False
    cache_control = CacheControlHeader(no_store=True)

    @get("/", name="accounts:notifications")
    async def notifications(
        self,
        request: Request,
        db_session: DbSession,
        caller: Caller,
        page: FromQuery[PageNumber] = 1,
    ) -> Response[str]:
        """Unread first, then newest first."""
        user_id = _my_id(caller)
        items = await list_notifications(
            db_session, user_id, PageRequest.of(page, PER_PAGE, PER_PAGE)
        )
        context = {
            "notifications": items,
            "unread": await unread_count(db_session, user_id),
            "params": {},
        }
        return render(request, "notifications/list.html", context, block="results")

    @get("/count", name="accounts:notifications_count")
    async def count(self, db_session: DbSession, caller: Caller) -> Response[str]:
        """The header link's label, loaded by htmx on every page (plain text, escaped)."""
        unread = await unread_count(db_session, _my_id(caller))
        label = f"Notifications ({unread})" if unread else "Notifications"
        return Response(label, media_type="text/html", headers={"Vary": "HX-Request"})

    @post("/{notification_id:uuid}/read", name="accounts:notification_read")
    async def read_one(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        notification_id: FromPath[UUID],
    ) -> Response[Any]:
        await mark_read(db_session, actor, _my_id(caller), notification_id)
        await db_session.commit()
        return redirect(request.app.route_reverse("accounts:notifications"))

    @post("/read-all", name="accounts:notifications_read_all")
    async def read_all(
        self, request: Request, db_session: DbSession, actor: CurrentActor, caller: Caller
    ) -> Response[Any]:
        await mark_read(db_session, actor, _my_id(caller), None)
        await db_session.commit()
        return redirect(request.app.route_reverse("accounts:notifications"))
