"""Security headers on every response, static files with long caching, HX-aware pages."""

from __future__ import annotations

import re

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.asgi import create_app
from app.settings import Settings
from tests.conftest import as_production, client_for, signed_in


@pytest.mark.parametrize(
    "path", ["/", "/no-such-page", "/api/v1/site", "/health/live", "/static/css/app.css"]
)
async def test_every_response_has_the_security_headers(
    client: httpx.AsyncClient, path: str
) -> None:
    headers = (await client.get(path)).headers
    csp = headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "strict-transport-security" not in headers  # development: plain http is fine


async def test_production_adds_hsts(settings: Settings) -> None:
    app = create_app(as_production(settings))
    async with client_for(app) as client:
        response = await client.get("/health/live")
    await app.state.engine.dispose()
    await app.state.store.close()
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_pages_have_no_inline_script_and_load_htmx_from_this_site(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    """The home page uses no htmx and loads none; the admin pages load it from here."""
    home = (await client.get("/")).text
    async with signed_in(app, accounts["admin"]) as admin:
        dashboard = (await admin.get("/admin")).text
    for html in (home, dashboard):
        scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
        assert all(body.strip() == "" for body in scripts)
        sources = re.findall(r'<script[^>]*src="([^"]+)"', html)
        assert all(src.startswith("/static/") for src in sources)
        assert not re.search(r"\son[a-z]+\s*=", html), "inline event handlers: blocked by CSP"
    assert "<script" not in home
    assert re.search(r'<script[^>]*src="/static/js/htmx\.min\.js\?v=', dashboard)


async def test_static_files_have_versioned_urls_and_a_year_of_caching(
    client: httpx.AsyncClient,
) -> None:
    html = (await client.get("/")).text
    css_url = re.search(r'href="(/static/css/app\.css\?v=[0-9a-f]{12})"', html).group(1)
    response = await client.get(css_url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    cache = response.headers["cache-control"]
    assert "max-age=31536000" in cache and "immutable" in cache
    js = await client.get("/static/js/htmx.min.js")
    assert js.status_code == 200 and "htmx" in js.text[:200]


async def test_a_fragment_request_gets_only_the_block(app: Litestar, accounts: dict) -> None:
    async with signed_in(app, accounts["viewer"]) as client:
        full = await client.get("/admin")
        fragment = await client.get("/admin", headers={"HX-Request": "true"})
        boosted = await client.get("/admin", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert full.status_code == fragment.status_code == boosted.status_code == 200
    assert "<html" in full.text and "<html" in boosted.text
    assert "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="figures"')
    for response in (full, fragment, boosted):
        assert "HX-Request" in response.headers["vary"]


SIGNED_IN_PAGES = [
    "/admin",
    "/admin/users",
    "/admin/audit",
    "/admin/jobs",
    "/account",
    "/account/notifications",
    "/account/notifications/count",
    "/",
    "/blog",
    "/search?q=x",
]


async def test_nothing_shown_to_a_signed_in_person_is_kept_by_the_browser(
    app: Litestar, accounts: dict
) -> None:
    """Back after sign-out must ask the server: every response to a session is no-store
    (public pages too: they carry the person's name and a CSRF token)."""
    async with signed_in(app, accounts["admin"]) as client:
        for path in SIGNED_IN_PAGES:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["cache-control"] == "no-store", path
        fragment = await client.get("/admin/users?q=adm", headers={"HX-Request": "true"})
        assert fragment.headers["cache-control"] == "no-store"
        missing = await client.get("/admin/no-such-page")
        assert missing.status_code == 404 and missing.headers["cache-control"] == "no-store"
        html = (await client.get("/")).text
        css_url = re.search(r'href="(/static/css/app\.css\?v=[0-9a-f]{12})"', html).group(1)
        static = await client.get(css_url)  # the same bytes for everyone keep their caching
        assert "immutable" in static.headers["cache-control"]


async def test_admin_and_account_addresses_are_never_stored_even_signed_out(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/admin", "/admin/users", "/account", "/account/notifications/count"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["cache-control"] == "no-store", path
    home = await client.get("/")  # a public page for a visitor stays cacheable
    assert "no-store" not in home.headers.get("cache-control", "")
