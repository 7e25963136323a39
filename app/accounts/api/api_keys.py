"""`/api/v1/api-keys`: list, create and revoke API keys (admins only)."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyOut, ApiKeyPageOut
from app.accounts.services.api_keys import create_api_key, list_api_keys, revoke_api_key
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, Selected, selected_each
from app.core.pagination import PageNumber, PageRequest, PerPage


class ApiKeysController(Controller):
    path = "/api-keys"
    tags = ["api-keys"]
    guards = [roles.admin]

    @get("/", name="api:api_keys:list")
    async def list_keys(
        self,
        db_session: DbSession,
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = 20,
        include_revoked: FromQuery[bool] = False,
        fields: FieldNames = None,
    ) -> ApiKeyPageOut | Selected:
        """Keys, newest first, without their secrets; revoked ones with `include_revoked`;
        `fields` picks the fields of each key (`fields=name,role,last_used_at`)."""
        chosen = Fields.parse(fields, ApiKeyOut)
        found = await list_api_keys(db_session, include_revoked, PageRequest.of(page, per_page))
        keys = [ApiKeyOut.of(item.key, item.created_by) for item in found.items]
        if chosen is not None:
            return found.envelope(selected_each(keys, chosen))
        return ApiKeyPageOut(keys, found.total, found.page, found.per_page)

    @post("/", name="api:api_keys:create", status_code=201)
    async def create_key(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: JSONBody[ApiKeyCreate],
    ) -> Response[ApiKeyCreated]:
        """Create a key. The response holds its `secret`, which is never shown again."""
        key, secret = await create_api_key(
            db_session,
            actor,
            caller.role,
            caller.id,
            data.name,
            data.role,
            data.expires_at,
        )
        shown = ApiKeyOut.of(key, caller.username)
        return Response(
            ApiKeyCreated(**msgspec.structs.asdict(shown), secret=secret),
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @delete("/{key_id:uuid}", name="api:api_keys:revoke", status_code=204)
    async def revoke_key(
        self, db_session: DbSession, actor: CurrentActor, key_id: FromPath[UUID]
    ) -> None:
        """Revoke a key: it stops working with the next request."""
        await revoke_api_key(db_session, actor, key_id)
