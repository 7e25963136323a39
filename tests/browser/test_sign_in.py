"""Signing in and out in Chromium: where `next` leads, and what is left once signed out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route, expect

from tests.accounts.test_sign_in import HOSTILE_NEXT
from tests.browser.conftest import LiveServer
from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
EVIL = "evil.example"


def catch_evil_site(page: Page) -> list[str]:
    """Answer any request to evil.example with a page of its own, and list its addresses
    (so a redirect there shows up as a visit, not as a DNS error)."""
    visits: list[str] = []

    def answer(route: Route) -> None:
        visits.append(route.request.url)
        route.fulfill(status=200, content_type="text/html", body="<h1>evil</h1>")

    page.context.route(re.compile(r"^https?://[^/]*evil\.example"), answer)
    return visits


def test_next_with_a_tab_stays_on_the_site_after_sign_in(
    page: Page, live_server: LiveServer
) -> None:
    visits = catch_evil_site(page)
    hostile = live_server.url("/login?next=/%09/evil.example/x")

    page.goto(hostile)
    page.fill("#f-login", "admin")
    page.fill("#f-password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(live_server.url("/admin"))
    expect(page.locator("h1")).to_have_text("Dashboard")

    # Signed in already: the same address answers a redirect straight away.
    page.goto(hostile)
    expect(page).to_have_url(live_server.url("/"))
    assert visits == []

    # Every hostile `next` of the HTTP table: Chromium itself reads the Location header
    # and finds it on this site.
    origin = live_server.url("").rstrip("/")
    for target in HOSTILE_NEXT:
        response = page.request.get(
            live_server.url("/login"), params={"next": target}, max_redirects=0
        )
        assert response.status == 303, target
        location = response.headers["location"]
        resolved = page.evaluate("([l, base]) => new URL(l, base).origin", [location, origin])
        assert resolved == origin, (target, location)
    assert page.console_errors == []  # type: ignore[attr-defined]
