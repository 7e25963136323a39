"""Admin pages for API keys: the list, the create form, the one-time secret, revoking."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.models import ASSIGNABLE_ROLES
from app.accounts.services.api_keys import (
    ApiKeyError,
    create_api_key,
    get_api_key,
    key_status,
    list_api_keys,
    revoke_api_key,
)
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.errors import field_errors
from app.core.pagination import PageNumber, PageRequest
from app.core.templating import Form, redirect, render
from app.core.times import InvalidTime, parse_day
from app.core.zones import zone_of

NEVER_CACHE = {"Cache-Control": "no-store"}


def parse_expiry(value: str, zone: ZoneInfo) -> datetime | None:
    """The form's date: the key works through that day in the site's time zone `zone`, so
    it expires at the next midnight there (stored in UTC).

    Raises InvalidTime for anything but an empty value or a YYYY-MM-DD date in range.
    """
    value = value.strip()
    if not value:
        return None
    day = parse_day(value, "expires_at")
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)


def _form_context(request: Request, form: dict[str, str], errors: dict[str, str]) -> dict[str, Any]:
    user = request.scope["user"]
    roles = [role.name for role in ASSIGNABLE_ROLES if role <= user.role]
    return {
        "form": form,
        "errors": errors,
        "roles": roles,
        "today": datetime.now(zone_of(request.state)).date(),
    }


class ApiKeysAdminController(Controller):
    path = "/api-keys"
    guards = [roles.admin]
    include_in_schema = False

    @get("/", name="admin:api_keys")
    async def list_keys(
        self,
        request: Request,
        db_session: DbSession,
        page: FromQuery[PageNumber] = 1,
        revoked: FromQuery[bool] = False,
    ) -> Response[str]:
        """Every key with its status; revoked keys only when asked for."""
        found = await list_api_keys(db_session, revoked, PageRequest.of(page, None))
        params = {"revoked": "1" if revoked else None}
        context = {"keys": found, "params": params, "revoked": revoked}
        return render(request, "accounts/api_keys/list.html", context, block="results")

    @get("/new", name="admin:api_keys:new")
    async def new_key(self, request: Request) -> Response[str]:
        context = _form_context(request, {"role": "viewer"}, {})
        return render(request, "accounts/api_keys/new.html", context)

    @post("/", name="admin:api_keys:create")
    async def create_key(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Form,
    ) -> Response[str]:
        """Create the key and show its secret on this response only; it is never stored."""
        form = {k: data.get(k, "") for k in ("name", "role", "expires_at")}
        try:
            key, secret = await create_api_key(
                db_session,
                actor,
                caller.role,
                caller.id,
                form["name"],
                form["role"],
                parse_expiry(form["expires_at"], zone_of(request.state)),
            )
        except (ApiKeyError, InvalidTime) as exc:
            errors = field_errors(exc)
            return render(
                request,
                "accounts/api_keys/new.html",
                _form_context(request, form, errors),
                status_code=400,
            )
        # Commit before the secret leaves: a secret for a key that was never saved is useless.
        await db_session.commit()
        return render(
            request,
            "accounts/api_keys/created.html",
            {"key": key, "secret": secret},
            headers=NEVER_CACHE,
        )

    @get("/{key_id:uuid}/revoke", name="admin:api_keys:revoke")
    async def confirm_revoke(
        self, request: Request, db_session: DbSession, key_id: FromPath[UUID]
    ) -> Response[str]:
        """Ask before revoking: programs using the key stop working at once."""
        key = await get_api_key(db_session, key_id)
        return render(
            request, "accounts/api_keys/revoke.html", {"key": key, "status": key_status(key)}
        )

    @post("/{key_id:uuid}/revoke", name="admin:api_keys:revoke_submit")
    async def revoke_key(
        self, request: Request, db_session: DbSession, actor: CurrentActor, key_id: FromPath[UUID]
    ) -> Response[bytes]:
        await revoke_api_key(db_session, actor, key_id)
        location = request.app.route_reverse("admin:api_keys")
        return redirect(location)
