"""API keys: app/accounts/services/api_keys.py, its admin page and its API (both storage legs)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select, text, update

from app.accounts.models import ApiKey, AuditEntry, Role, User
from app.accounts.services.api_keys import ApiKeyError, create_api_key
from app.accounts.services.audit import Actor
from tests.conftest import bearer, client_for, signed_in


async def create_key(
    client: httpx.AsyncClient, app: Litestar, user: User, **body: Any
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/api-keys", json={"name": "deploy", **body}, headers=await bearer(app, user)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def stored_keys(app: Litestar) -> list[ApiKey]:
    async with app.state.sessionmaker() as session:
        return list((await session.scalars(select(ApiKey))).all())


async def audit_entries(app: Litestar, action: str) -> list[AuditEntry]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry).where(AuditEntry.action == action)
        return list((await session.scalars(query)).all())


async def change(app: Litestar, statement: Any) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(statement)


async def test_the_secret_is_shown_once_and_only_its_hash_is_stored(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"], role="editor")
        listed = await client.get("/api/v1/api-keys", headers=await bearer(app, accounts["admin"]))

    secret = created["secret"]
    assert secret.startswith("keel_") and len(secret) > 40
    assert created["prefix"] == secret[: len(created["prefix"])]
    assert created["role"] == "editor" and created["status"] == "active"
    assert created["created_by"] == "admin"

    [stored] = await stored_keys(app)
    assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    async with app.state.sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0])

    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 1 and body["page"] == 1
    assert "secret" not in body["items"][0]
    assert secret not in listed.text

    [entry] = await audit_entries(app, "api_key.created")
    assert entry.resource_id == created["id"]
    assert secret not in str(entry.details)


@pytest.mark.parametrize("header", ["authorization", "x-api-key"])
async def test_a_key_authenticates_the_api_and_records_its_last_use(
    app: Litestar, accounts: dict[str, User], header: str
) -> None:
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"], role="editor")
        assert (await stored_keys(app))[0].last_used_at is None
        value = f"Bearer {created['secret']}" if header == "authorization" else created["secret"]
        response = await client.get("/api/v1/auth/me", headers={header: value})

    assert response.status_code == 200, response.text
    me = response.json()
    assert me["via"] == "api_key"
    assert me["role"] == "editor"
    assert me["id"] is None and me["display_name"] == "deploy"
    [stored] = await stored_keys(app)
    assert stored.last_used_at is not None
    assert datetime.now(UTC) - stored.last_used_at < timedelta(minutes=1)


async def test_a_revoked_key_is_refused_with_a_problem_body(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"])
        key_header = {"X-API-Key": created["secret"]}
        assert (await client.get("/api/v1/auth/me", headers=key_header)).status_code == 200

        revoked = await client.delete(
            f"/api/v1/api-keys/{created['id']}", headers=await bearer(app, accounts["admin"])
        )
        assert revoked.status_code == 204
        refused = await client.get("/api/v1/auth/me", headers=key_header)
        listed = await client.get("/api/v1/api-keys", headers=await bearer(app, accounts["admin"]))
        with_revoked = await client.get(
            "/api/v1/api-keys?include_revoked=true", headers=await bearer(app, accounts["admin"])
        )

    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 401 and refused.json()["error_id"]
    assert listed.json()["total"] == 0
    assert with_revoked.json()["items"][0]["status"] == "revoked"
    assert len(await audit_entries(app, "api_key.revoked")) == 1


async def test_revoking_an_unknown_key_is_a_404(app: Litestar, accounts: dict[str, User]) -> None:
    async with client_for(app) as client:
        response = await client.delete(
            "/api/v1/api-keys/00000000-0000-4000-8000-000000000000",
            headers=await bearer(app, accounts["admin"]),
        )
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_an_expired_key_is_refused(app: Litestar, accounts: dict[str, User]) -> None:
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"], expires_at=tomorrow.isoformat())
        assert created["expires_at"] is not None
        key_header = {"Authorization": f"Bearer {created['secret']}"}
        assert (await client.get("/api/v1/auth/me", headers=key_header)).status_code == 200

        an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
        await change(app, update(ApiKey).values(expires_at=an_hour_ago))
        refused = await client.get("/api/v1/auth/me", headers=key_header)

    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_a_key_cannot_be_created_already_expired(
    app: Litestar, accounts: dict[str, User]
) -> None:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    async with client_for(app) as client:
        response = await client.post(
            "/api/v1/api-keys",
            json={"name": "late", "expires_at": yesterday.isoformat()},
            headers=await bearer(app, accounts["admin"]),
        )
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "expires_at", "message": "The expiry must be in the future."}
    ]
    assert await stored_keys(app) == []


async def test_an_expiry_past_what_a_datetime_holds_is_a_400_on_the_api_and_the_form(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        api = await client.post(
            "/api/v1/api-keys",
            json={"name": "far", "expires_at": "9999-12-31T23:00:00-05:00"},
            headers=await bearer(app, accounts["admin"]),
        )
    async with signed_in(app, accounts["admin"]) as browser:
        form = await browser.post(
            "/admin/api-keys", data={"name": "far", "role": "viewer", "expires_at": "9999-12-31"}
        )
    assert api.status_code == 400, api.text
    assert api.json()["errors"][0]["field"] == "expires_at"
    assert form.status_code == 400, form.text
    assert 'id="e-expires_at">' in form.text and "between the years" in form.text
    assert await stored_keys(app) == []


INVALID_KEYS = [
    ({"name": "   "}, "name"),
    ({"name": "x" * 121}, "name"),
    ({"name": "ok", "role": "owner"}, "role"),
    ({"name": "ok", "role": "guest"}, "role"),
]


async def test_invalid_keys_are_refused_with_the_field_named(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        for body, field in INVALID_KEYS:  # one app for all: building it is what a test costs
            response = await client.post(
                "/api/v1/api-keys", json=body, headers=await bearer(app, accounts["admin"])
            )
            assert response.status_code == 400, body
            assert response.json()["errors"][0]["field"] == field, body
    assert await stored_keys(app) == []


async def test_nobody_creates_a_key_above_their_own_role(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """The rule lives in the service; editors cannot reach the page or API at all anyway."""
    editor = accounts["editor"]
    async with app.state.sessionmaker() as session:
        with pytest.raises(ApiKeyError) as refused:
            await create_api_key(
                session,
                Actor(editor.id, editor.username),
                Role.editor,
                editor.id,
                "k",
                "admin",
                None,
            )
        key, _ = await create_api_key(
            session, Actor(editor.id, editor.username), Role.editor, editor.id, "k", "editor", None
        )
    assert refused.value.field == "role" and refused.value.status == 403
    assert key.role == "editor"

    async with client_for(app) as client:
        as_editor = await bearer(app, editor)
        listed = await client.get("/api/v1/api-keys", headers=as_editor)
        created = await client.post("/api/v1/api-keys", json={"name": "x"}, headers=as_editor)
    assert listed.status_code == 403
    assert created.status_code == 403
    async with signed_in(app, editor) as browser:
        page = await browser.get("/admin/api-keys")
        form = await browser.post("/admin/api-keys", data={"name": "x", "role": "admin"})
    assert page.status_code == 403
    assert form.status_code == 403


async def test_a_key_acts_with_no_more_than_its_creators_current_role(
    app: Litestar, accounts: dict[str, User]
) -> None:
    admin = accounts["admin"]
    async with client_for(app) as client:
        created = await create_key(client, app, admin, role="admin")
        await change(app, update(User).where(User.id == admin.id).values(role="editor"))
        me = await client.get("/api/v1/auth/me", headers={"X-API-Key": created["secret"]})
    assert me.json()["role"] == "editor"


async def test_a_key_stops_working_when_its_creator_is_deactivated(
    app: Litestar, accounts: dict[str, User]
) -> None:
    admin = accounts["admin"]
    async with client_for(app) as client:
        created = await create_key(client, app, admin)
        key_header = {"X-API-Key": created["secret"]}
        assert (await client.get("/api/v1/auth/me", headers=key_header)).status_code == 200
        await change(app, update(User).where(User.id == admin.id).values(is_active=False))
        refused = await client.get("/api/v1/auth/me", headers=key_header)
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")


async def test_an_api_key_cannot_create_more_keys(app: Litestar, accounts: dict[str, User]) -> None:
    """A key has no person behind it to own the new key; people create keys."""
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"], role="admin")
        response = await client.post(
            "/api/v1/api-keys", json={"name": "child"}, headers={"X-API-Key": created["secret"]}
        )
    assert response.status_code == 403
    assert len(await stored_keys(app)) == 1


FORGED_CREDENTIALS = [
    {"X-User-Id": "1", "X-User-Role": "admin", "X-User-Email": "admin@example.org"},
    {"X-API-Key": "keel_not-a-real-key"},
    {"Authorization": "Bearer keel_not-a-real-key"},
]


async def test_forged_or_unknown_credentials_give_nothing(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        for headers in FORGED_CREDENTIALS:
            response = await client.get("/api/v1/auth/me", headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_forged_identity_headers_do_not_open_the_admin_api(
    app: Litestar, accounts: dict[str, User]
) -> None:
    forged = {"X-User-Id": str(accounts["admin"].id), "X-User-Role": "admin"}
    async with client_for(app) as client:
        response = await client.get("/api/v1/api-keys", headers=forged)
    assert response.status_code == 401


# The admin page


async def test_the_admin_page_creates_a_key_and_shows_the_secret_once(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["admin"]) as browser:
        dashboard = await browser.get("/admin/")
        form = await browser.get("/admin/api-keys/new")
        created = await browser.post(
            "/admin/api-keys",
            data={"name": "CI deploy", "role": "editor", "expires_at": "2999-12-31"},
        )
        listed = await browser.get("/admin/api-keys")

    assert 'href="/admin/api-keys"' in dashboard.text, "admins see the nav link"
    assert form.status_code == 200 and 'name="expires_at"' in form.text
    assert created.status_code == 200
    assert created.headers["cache-control"] == "no-store"
    [stored] = await stored_keys(app)
    secret = created.text.split("data-secret>", 1)[1].split("</code>", 1)[0]
    assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert "only time" in created.text
    assert stored.name == "CI deploy" and stored.role == "editor"
    assert stored.expires_at == datetime(3000, 1, 1, tzinfo=UTC)

    assert listed.status_code == 200
    assert secret not in listed.text
    assert f"{stored.prefix}…" in listed.text
    assert "CI deploy" in listed.text and "admin" in listed.text


async def test_the_create_form_comes_back_with_errors_and_the_input_kept(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with signed_in(app, accounts["admin"]) as browser:
        no_name = await browser.post("/admin/api-keys", data={"name": "", "role": "viewer"})
        bad_date = await browser.post(
            "/admin/api-keys", data={"name": "kept name", "role": "viewer", "expires_at": "soon"}
        )
        past = await browser.post(
            "/admin/api-keys",
            data={"name": "kept name", "role": "viewer", "expires_at": "2000-01-01"},
        )
    assert no_name.status_code == 400 and "Give the key a name" in no_name.text
    assert bad_date.status_code == 400 and "YYYY-MM-DD" in bad_date.text
    assert 'value="kept name"' in bad_date.text
    assert past.status_code == 400 and "in the future" in past.text
    assert await stored_keys(app) == []


async def test_the_admin_page_revokes_after_a_confirmation(
    app: Litestar, accounts: dict[str, User]
) -> None:
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"])
    async with signed_in(app, accounts["admin"]) as browser:
        confirm = await browser.get(f"/admin/api-keys/{created['id']}/revoke")
        assert (await stored_keys(app))[0].revoked_at is None, "asking revokes nothing"
        revoked = await browser.post(f"/admin/api-keys/{created['id']}/revoke")
        listed = await browser.get("/admin/api-keys?revoked=1")
    assert confirm.status_code == 200 and "Revoke key" in confirm.text
    assert revoked.status_code == 303
    assert revoked.headers["location"] == "/admin/api-keys"
    assert (await stored_keys(app))[0].revoked_at is not None
    assert "Revoked" in listed.text
    async with client_for(app) as client:
        refused = await client.get("/api/v1/auth/me", headers={"X-API-Key": created["secret"]})
    assert refused.status_code == 401


async def test_the_nav_link_is_for_admins_only(app: Litestar, accounts: dict[str, User]) -> None:
    async with signed_in(app, accounts["viewer"]) as browser:
        dashboard = await browser.get("/admin/")
        page = await browser.get("/admin/api-keys")
    assert dashboard.status_code == 200
    assert "/admin/api-keys" not in dashboard.text
    assert page.status_code == 403


async def test_revoking_needs_the_csrf_token(app: Litestar, accounts: dict[str, User]) -> None:
    async with client_for(app) as client:
        created = await create_key(client, app, accounts["admin"])
    async with signed_in(app, accounts["admin"]) as browser:
        del browser.headers["X-CSRF-Token"]
        response = await browser.post(f"/admin/api-keys/{created['id']}/revoke")
    assert response.status_code == 403
    assert (await stored_keys(app))[0].revoked_at is None


async def test_fields_picks_what_each_listed_key_answers_and_an_unknown_one_is_a_400(
    app: Litestar, accounts: dict
) -> None:
    async with client_for(app) as client:
        await create_key(client, app, accounts["admin"], role="viewer")
        auth = await bearer(app, accounts["admin"])
        picked = await client.get("/api/v1/api-keys", params={"fields": "name,role"}, headers=auth)
        whole = await client.get("/api/v1/api-keys", headers=auth)
        unknown = await client.get("/api/v1/api-keys", params={"fields": "hash"}, headers=auth)
        document = (await client.get("/schema/openapi.json")).json()
    assert picked.json()["items"] == [{"name": "deploy", "role": "viewer"}]
    assert "prefix" in whole.json()["items"][0] and "secret" not in whole.json()["items"][0]
    assert unknown.status_code == 400 and "hash" in unknown.json()["detail"]
    operation = document["paths"]["/api/v1/api-keys"]["get"]
    assert "fields" in {p["name"] for p in operation["parameters"]}
