"""`/admin/users`: user management pages. Viewers read; editors and admins change.

Every rule (who may manage whom, the last active admin) lives in the services; these
handlers parse the form, call one service and answer a redirect or the form again.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import CacheControlHeader
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.models import ASSIGNABLE_ROLES, Role, User
from app.accounts.pages.reset import reset_link_url
from app.accounts.pages.sign_in import account_form
from app.accounts.services.audit import CurrentActor
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.passwords import RESET_LINK_SECONDS, create_password_reset
from app.accounts.services.users import (
    USER_STATUSES,
    AccountError,
    AccountForbidden,
    can_manage,
    create_user,
    delete_user,
    get_user,
    list_users,
    update_user,
)
from app.core.db import DbSession
from app.core.errors import Forbidden, NotFound, field_errors
from app.core.pagination import PageNumber, PageRequest
from app.core.runtime import AppRuntime
from app.core.templating import Form, redirect, render, render_list

PER_PAGE = 25
DEFAULT_SORT = "username"
SORT_COLUMNS = (
    ("username", "Username"),
    ("email", "E-mail"),
    ("role", "Role"),
    ("created_at", "Created"),
    ("last_login_at", "Last sign-in"),
)
NOTICES = {
    "created": "The account was created.",
    "saved": "Your changes were saved.",
    "deactivated": "The account was deactivated and its sessions ended.",
    "reactivated": "The account was reactivated.",
    "deleted": "The account was deleted.",
}
FORM_TEMPLATE = "accounts/users/form.html"


def _edit_url(request: Request, user_id: FromPath[UUID], notice: str | None = None) -> str:
    url = request.app.route_reverse("admin:user_edit", user_id=user_id)
    return f"{url}?notice={notice}" if notice else url


def _user_values(user: User) -> dict[str, str]:
    return {
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
    }


def _user_page(
    request: Request,
    user: User | None,
    data: dict[str, str],
    errors: dict[str, str],
    *,
    status_code: int = 200,
    notice: str | None = None,
) -> Response[str]:
    """The new-user form (`user` None) or one user's page: a form for those who may change
    the account, its facts for everyone else. Passwords are never sent back."""
    caller = request.scope["user"]
    may_change = caller.role >= Role.editor and (
        user is None or caller.id == user.id or can_manage(caller.role, user.role_level)
    )
    context = {
        "user": user,
        "form": {k: v for k, v in data.items() if "password" not in k},
        "errors": errors,
        "roles": [role.name for role in ASSIGNABLE_ROLES if role <= caller.role],
        "may_change": may_change,
        "is_self": user is not None and caller.id == user.id,
        "notice": NOTICES.get(notice or ""),
    }
    return render(request, FORM_TEMPLATE, context, status_code=status_code)


def _form_status(exc: AccountError) -> int:
    """A field's mistake is a 400; a conflict about the whole account keeps its status."""
    return 400 if exc.field else exc.status


class UsersAdminController(Controller):
    path = "/users"
    include_in_schema = False

    @get("/", name="admin:users", guards=[roles.viewer])
    async def index(
        self,
        request: Request,
        db_session: DbSession,
        q: FromQuery[str] = "",
        role: FromQuery[str] = "",
        status: FromQuery[str] = "",
        sort: FromQuery[str] = DEFAULT_SORT,
        page: FromQuery[PageNumber] = 1,
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The list; htmx requests (filters, sorting, pages) get only the results block."""
        params = {
            "q": q,
            "role": role,
            "status": status,
            "sort": "" if sort == DEFAULT_SORT else sort,
        }
        found, error = None, None
        try:
            found = await list_users(
                db_session, q, role or None, status or None, sort, PageRequest.of(page, PER_PAGE)
            )
        except AccountError as exc:  # only a hand-made URL gets here: the form offers valid values
            error = exc.message
        context = {
            "page": found,
            "error": error,
            "params": params,
            "sort": sort,
            "columns": SORT_COLUMNS,
            "roles": [r.name for r in ASSIGNABLE_ROLES],
            "statuses": USER_STATUSES,
            "notice": NOTICES.get(notice or ""),
        }
        return render_list(
            request,
            "accounts/users/list.html",
            context,
            params=params,
            page=found.page if found else None,
            invalid=bool(error),
        )

    @get("/new", name="admin:user_new", guards=[roles.editor])
    async def new(self, request: Request) -> Response[str]:
        return _user_page(request, None, {"role": Role.viewer.name}, {})

    @post("/", name="admin:user_create", guards=[roles.editor])
    async def create(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Form,
    ) -> Response[Any]:
        new_user, errors = account_form(data)
        new_user.role = data.get("role", Role.viewer.name)
        if not errors:
            try:
                user = await create_user(
                    db_session,
                    runtime.service(PasswordHashing),
                    actor,
                    caller.role,
                    new_user,
                )
            except AccountError as exc:
                if isinstance(exc, Forbidden | NotFound):
                    raise
                errors.update(field_errors(exc))
            else:
                return redirect(_edit_url(request, user.id, "created"))
        return _user_page(request, None, data, errors, status_code=400)

    @get("/{user_id:uuid}", name="admin:user_edit", guards=[roles.viewer])
    async def edit(
        self,
        request: Request,
        db_session: DbSession,
        user_id: FromPath[UUID],
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        user = await get_user(db_session, user_id)
        return _user_page(request, user, _user_values(user), {}, notice=notice)

    @post("/{user_id:uuid}", name="admin:user_update", guards=[roles.editor])
    async def update(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
        data: Form,
    ) -> Response[Any]:
        """E-mail, username, display name and role (changing the role is part of editing)."""
        user = await get_user(db_session, user_id)
        try:
            await update_user(
                db_session,
                actor,
                caller.role,
                user,
                email=data.get("email"),
                username=data.get("username"),
                display_name=data.get("display_name"),
                role=data.get("role") or None,
            )
        except AccountError as exc:  # update_user changed nothing
            if isinstance(exc, Forbidden | NotFound):
                raise
            errors = field_errors(exc)
            return _user_page(request, user, data, errors, status_code=_form_status(exc))
        return redirect(_edit_url(request, user_id, "saved"))

    @post("/{user_id:uuid}/deactivate", name="admin:user_deactivate", guards=[roles.editor])
    async def deactivate(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
    ) -> Response[bytes]:
        """Deactivating ends every session and token of the user at once."""
        user = await get_user(db_session, user_id)
        await update_user(db_session, actor, caller.role, user, is_active=False)
        return redirect(_edit_url(request, user_id, "deactivated"))

    @post("/{user_id:uuid}/reactivate", name="admin:user_reactivate", guards=[roles.editor])
    async def reactivate(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
    ) -> Response[bytes]:
        user = await get_user(db_session, user_id)
        await update_user(db_session, actor, caller.role, user, is_active=True)
        return redirect(_edit_url(request, user_id, "reactivated"))

    @post(
        "/{user_id:uuid}/reset-link",
        name="admin:user_reset_link",
        guards=[roles.editor],
        cache_control=CacheControlHeader(no_store=True),
    )
    async def reset_link(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
    ) -> Response[str]:
        """Show a new one-time reset link, once: Keel keeps only its hash, so this page
        is rendered directly instead of redirecting to it."""
        user = await get_user(db_session, user_id)
        token = await create_password_reset(db_session, runtime.store, actor, caller.role, user)
        context = {
            "user": user,
            "reset_url": reset_link_url(request, token),
            "expires_minutes": RESET_LINK_SECONDS // 60,
        }
        return render(request, "accounts/users/reset_link.html", context)

    @get("/{user_id:uuid}/delete", name="admin:user_delete_confirm", guards=[roles.editor])
    async def delete_confirm(
        self, request: Request, db_session: DbSession, caller: Caller, user_id: FromPath[UUID]
    ) -> Response[str]:
        user = await get_user(db_session, user_id)
        if not can_manage(caller.role, user.role_level):
            raise AccountForbidden("You cannot delete this account.")
        return render(request, "accounts/users/confirm_delete.html", {"user": user})

    @post("/{user_id:uuid}/delete", name="admin:user_delete", guards=[roles.editor])
    async def delete(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        user_id: FromPath[UUID],
    ) -> Response[bytes]:
        user = await get_user(db_session, user_id)
        await delete_user(db_session, actor, caller.role, user)
        return redirect(request.app.route_reverse("admin:users") + "?notice=deleted")
