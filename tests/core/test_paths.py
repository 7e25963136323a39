"""Address prefixes (app/core/paths.py) match whole path segments: `/api` is the API,
`/apix` and `/api-old` are not, and a page whose slug begins like a machine path (a
published page "Health tips" is `/health-tips`) is a page like any other."""

from __future__ import annotations

import httpx
from litestar import Litestar

from app.accounts.models import User
from app.core.paths import PathPrefixes
from tests.conftest import client_for, signed_in
from tests.content.test_public_site import _entry


def test_a_prefix_is_a_whole_path_segment() -> None:
    api = PathPrefixes("/api", "/static/")
    for path in ("/api", "/api/", "/api/v1/users", "/static/css/app.css", "/static"):
        assert api.matches(path), path
    for path in ("/apix", "/api-old", "/apiary/", "/", "/x/api", "/staticfoo", "/static-site"):
        assert not api.matches(path), path


async def test_pages_that_begin_like_machine_paths_are_pages(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """`str.startswith` made `/health-tips` a health check (nobody signed in there, a
    missing `/healthy-...` page answered as JSON), `/metrics-2030` a machine path that
    reads bearer tokens (an invalid one was a 401 on a page) and `/admin-tips` private
    (never cached)."""
    for title in ("Health tips", "Metrics 2030", "Admin tips"):
        await _entry(app, accounts["editor"], title, "Read this.", kind="page")
    async with signed_in(app, accounts["viewer"]) as browser:
        page = await browser.get("/health-tips")
        assert page.status_code == 200 and "Sign out" in page.text
    async with client_for(app) as visitor:
        for credentials in ({"Authorization": "Bearer not-a-token"}, {"X-API-Key": "keel_x"}):
            page = await visitor.get("/metrics-2030", headers=credentials)
            assert page.status_code == 200 and "Read this." in page.text, credentials
        assert "no-store" not in (await visitor.get("/admin-tips")).headers.get("cache-control", "")
        missing = await visitor.get("/healthy-nothing-here", headers={"Accept": "text/html"})
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("text/html")


async def test_machine_paths_are_still_machine_paths(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/live")).status_code == 200
    missing = await client.get("/api/v1/nothing-here", headers={"Accept": "text/html"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    refused = await client.get("/metrics", headers={"Authorization": "Bearer not-a-token"})
    assert refused.status_code == 401
