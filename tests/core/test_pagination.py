"""Page numbers: app/core/pagination.py on every list (both storage legs).

A page past the last one is an empty page, also when page x per_page is more than a
BIGINT holds; a number no BIGINT holds is a 400 naming the parameter.
"""

from __future__ import annotations

import httpx
import pytest
from litestar import Litestar

from app.accounts.models import User
from app.core.numbers import INT64_MAX
from app.core.pagination import PageRequest
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import signed_in
from tests.content.test_public_site import _entry

HUGE_PAGES = (460_000_000_000_000_000, INT64_MAX)
"""About 4.6e17 (x10 to x100 rows a page is past 2^63) and the last BIGINT."""
PUBLIC_LISTS = ("/blog", "/search?q=needle", "/tags/hay")
API_LISTS = (
    "/api/v1/content",
    "/api/v1/users",
    "/api/v1/audit",
    "/api/v1/media",
    "/api/v1/api-keys",
    "/api/v1/jobs",
)
ADMIN_LISTS = (
    "/admin/content",
    "/admin/users",
    "/admin/audit",
    "/admin/media",
    "/admin/jobs",
    "/admin/api-keys",
    "/admin/outbox",
    "/account/notifications",
)


def _at(url: str, page: int, per_page: int | None = None) -> str:
    joined = f"{url}{'&' if '?' in url else '?'}page={page}"
    return joined + (f"&per_page={per_page}" if per_page else "")


def test_the_offset_of_a_page_past_every_bigint_stays_a_bigint() -> None:
    assert PageRequest(3, 20).offset == 40
    assert PageRequest(INT64_MAX, 100).offset == INT64_MAX


async def test_a_page_past_the_last_is_an_empty_page_everywhere(
    app: Litestar, client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    await _entry(app, accounts["editor"], "A needle in the hay", "needle", tags=["hay"])
    for url in PUBLIC_LISTS:
        assert "A needle in the hay" in (await client.get(url)).text
        for page in HUGE_PAGES:
            response = await client.get(_at(url, page))
            assert response.status_code == 200, (url, response.text)
            assert "A needle in the hay" not in response.text
    async with api_as(app, accounts["admin"]) as admin:
        for url in API_LISTS:
            for page in HUGE_PAGES:
                response = await admin.get(_at(url, page, per_page=100))
                assert response.status_code == 200, (url, response.text)
                body = response.json()
                assert body["items"] == [] and body["page"] == page
        listed = (await admin.get(_at("/api/v1/content", 1))).json()
        assert listed["total"] == 1 and len(listed["items"]) == 1
    async with signed_in(app, accounts["admin"]) as browser:
        for url in ADMIN_LISTS:
            for page in HUGE_PAGES:
                response = await browser.get(_at(url, page))
                assert response.status_code == 200, (url, response.text)


@pytest.mark.parametrize(
    "query",
    [f"page={INT64_MAX + 1}", f"page={-(2**63) - 1}", f"page={10**30}", f"per_page={2**63}"],
)
async def test_a_page_number_no_bigint_holds_is_a_400_naming_it(
    client: httpx.AsyncClient, accounts: dict[str, User], query: str
) -> None:
    field = query.split("=")[0]
    assert_problem(await client.get(f"/api/v1/content?{query}"), 400, field)
    if field == "page":  # the blog has no per_page
        page = await client.get(f"/blog?{query}")
        assert page.status_code == 400 and page.headers["content-type"].startswith("text/html")


async def test_a_page_below_one_is_the_first_and_per_page_keeps_to_its_bounds(
    client: httpx.AsyncClient, accounts: dict[str, User]
) -> None:
    low = (await client.get(f"/api/v1/content?page={-(2**63)}&per_page=0")).json()
    high = (await client.get(f"/api/v1/content?per_page={INT64_MAX}")).json()
    assert (low["page"], low["per_page"]) == (1, 20)
    assert high["per_page"] == 100
    assert (await client.get(f"/blog?page={-(2**63)}")).status_code == 200


async def test_every_api_list_keeps_its_page_size_unless_asked_otherwise(
    app: Litestar, accounts: dict[str, User]
) -> None:
    """20 items a page (the audit log 50) without `per_page`: jobs, media and API keys
    answered one item a page once their parameters got bounds."""
    async with api_as(app, accounts["admin"]) as admin:
        for url in API_LISTS:
            body = (await admin.get(url)).json()
            assert body["per_page"] == (50 if url == "/api/v1/audit" else 20), (url, body)
            assert (await admin.get(f"{url}?per_page=7")).json()["per_page"] == 7, url
