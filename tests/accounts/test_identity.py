"""Who is calling (app/accounts/guards/identity.py): pages take only the session cookie, the
machine paths only credentials in headers (both storage legs)."""

from __future__ import annotations

import httpx
from litestar import Litestar

from app.accounts.models import User
from tests.conftest import bearer, client_for, signed_in
from tests.jobs.test_api import api_key


async def test_pages_ignore_bearer_tokens_and_api_keys(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """Issue 12 #6: `GET /admin` with an admin's API key or access token rendered the
    dashboard; a page's caller is whoever the session cookie says, else nobody."""
    key = await api_key(app, accounts["admin"], "admin", "ops")
    token = await bearer(app, accounts["admin"])
    async with client_for(app) as client:
        for headers in (key, token, {"Authorization": f"Bearer {key['X-API-Key']}"}):
            for page in ("/admin", "/admin/users", "/account"):
                response = await client.get(page, headers=headers)
                assert response.status_code == 303, (page, headers)
                assert response.headers["location"].startswith("/login?next=")
            home = await client.get("/", headers=headers)
            assert home.status_code == 200 and "Sign out" not in home.text
        # the API still takes them
        assert (await client.get("/api/v1/auth/me", headers=key)).status_code == 200
        assert (await client.get("/api/v1/auth/me", headers=token)).status_code == 200


async def test_a_page_with_a_session_is_that_session_whatever_the_headers_say(
    app: Litestar, accounts: dict[str, User]
) -> None:
    admin_token = await bearer(app, accounts["admin"])
    async with signed_in(app, accounts["viewer"]) as browser:
        as_viewer = await browser.get("/admin/api-keys", headers=admin_token)
        assert as_viewer.status_code == 403
        garbage = await browser.get("/admin", headers={"Authorization": "Basic eDp5"})
        assert garbage.status_code == 200 and "Viewer" in garbage.text
        assert (await browser.get("/admin", headers={"X-API-Key": "keel_nope"})).status_code == 200


async def test_metrics_still_take_admin_credentials_and_the_session(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    key = await api_key(app, accounts["admin"], "admin", "scraper")
    assert (await client.get("/metrics", headers=key)).status_code == 200
    assert (
        await client.get("/metrics", headers=await bearer(app, accounts["admin"]))
    ).status_code == 200
    async with signed_in(app, accounts["admin"]) as browser:
        assert (await browser.get("/metrics")).status_code == 200
