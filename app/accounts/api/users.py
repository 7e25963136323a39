"""`/api/v1/users`: user management for API clients, under the same rules as the admin pages."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.schemas import PasswordResetOut, UserCreate, UserOut, UserPageOut, UserUpdate
from app.accounts.services.audit import CurrentActor
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.passwords import RESET_LINK_SECONDS, create_password_reset, reset_link
from app.accounts.services.users import (
    NewUser,
    create_user,
    delete_user,
    get_user,
    list_users,
    update_user,
)
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, Selected, selected, selected_each
from app.core.pagination import PageNumber, PageRequest, PerPage
from app.core.runtime import AppRuntime
from app.core.templating import site_base


class UsersController(Controller):
    path = "/users"
    tags = ["users"]

    @get("/", name="api:users:list", guards=[roles.viewer])
    async def index(
        self,
        db_session: DbSession,
        q: FromQuery[str] = "",
        role: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        sort: FromQuery[str] = "username",
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = 20,
        fields: FieldNames = None,
    ) -> UserPageOut | Selected:
        """Users matching `q` (e-mail, username, display name), `role` and `status`
        (active|inactive), sorted by `sort` (username, email, role, created_at,
        last_login_at; prefix `-` for descending)."""
        chosen = Fields.parse(fields, UserOut)
        found = await list_users(db_session, q, role, status, sort, PageRequest.of(page, per_page))
        users = msgspec.convert(found.items, list[UserOut], from_attributes=True)
        if chosen is not None:
            return found.envelope(selected_each(users, chosen))
        return UserPageOut(users, found.total, found.page, found.per_page)

    @get("/{user_id:uuid}", name="api:users:get", guards=[roles.viewer])
    async def show(
        self, db_session: DbSession, user_id: FromPath[UUID], fields: FieldNames = None
    ) -> UserOut | Selected:
        chosen = Fields.parse(fields, UserOut)
        user = msgspec.convert(await get_user(db_session, user_id), UserOut, from_attributes=True)
        return selected(user, chosen)

    @post("/", name="api:users:create", guards=[roles.editor], status_code=201)
    async def create(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: JSONBody[UserCreate],
    ) -> UserOut:
        """Create an account; editors may create viewers and editors, admins anyone."""
        new_user = NewUser(data.email, data.username, data.password, data.role, data.display_name)
        user = await create_user(
            db_session,
            runtime.service(PasswordHashing),
            actor,
            caller.role,
            new_user,
        )
        return msgspec.convert(user, UserOut, from_attributes=True)

    @patch("/{user_id:uuid}", name="api:users:update", guards=[roles.editor])
    async def update(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
        data: JSONBody[UserUpdate],
    ) -> UserOut:
        """Change the fields given; `is_active: false` ends the user's sessions and tokens."""
        user = await update_user(
            db_session,
            actor,
            caller.role,
            await get_user(db_session, user_id),
            email=data.email,
            username=data.username,
            display_name=data.display_name,
            role=data.role,
            is_active=data.is_active,
        )
        return msgspec.convert(user, UserOut, from_attributes=True)

    @post(
        "/{user_id:uuid}/password-reset",
        name="api:users:password_reset",
        guards=[roles.editor],
        status_code=200,
        cache_control=CacheControlHeader(no_store=True),
    )
    async def password_reset(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
    ) -> PasswordResetOut:
        """A one-time link with which the user sets a new password within an hour."""
        token = await create_password_reset(
            db_session,
            runtime.store,
            actor,
            caller.role,
            await get_user(db_session, user_id),
        )
        return PasswordResetOut(reset_link(site_base(request), token), RESET_LINK_SECONDS)

    @delete("/{user_id:uuid}", name="api:users:delete", guards=[roles.editor], status_code=204)
    async def remove(
        self, db_session: DbSession, actor: CurrentActor, caller: Caller, user_id: FromPath[UUID]
    ) -> None:
        await delete_user(
            db_session,
            actor,
            caller.role,
            await get_user(db_session, user_id),
        )
