"""Signing in and out in Chromium: where `next` leads, what is left once signed out, and
that every form and htmx request keeps working with the CSRF token of the session now
signed in after signing out and in within one tab (app/core/csrf.py binds it to the session)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route, expect

from tests.accounts.test_sign_in import HOSTILE_NEXT
from tests.browser.conftest import LiveServer, sign_in
from tests.conftest import PASSWORD, run_keel

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


ADMIN_EMAIL = "admin@example.org"
HISTORY_CACHE = "htmx-history-cache"
"""The sessionStorage key where htmx keeps the pages it may restore on Back."""


def cached_pages(page: Page) -> list[dict[str, str]]:
    """The pages htmx keeps in this tab's sessionStorage for Back ([] when none)."""
    return page.evaluate(f"() => JSON.parse(sessionStorage.getItem('{HISTORY_CACHE}') || '[]')")


def assert_only_public_pages_cached(page: Page) -> None:
    for cached in cached_pages(page):
        assert not cached["url"].startswith(("/admin", "/account")), cached["url"]
        assert ADMIN_EMAIL not in cached["content"] and "Sign out" not in cached["content"]


def nothing_personal_is_shown(page: Page) -> None:
    expect(page.get_by_text(ADMIN_EMAIL)).to_have_count(0)
    expect(page.locator("tr[data-entry]")).to_have_count(0)
    expect(page.locator("tr[data-user]")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Sign out"))).to_have_count(0)


def test_back_after_sign_out_shows_no_page_of_the_signed_in_person(
    page: Page, live_server: LiveServer
) -> None:
    sign_in(page, live_server)
    page.evaluate("window.__keel_marker = 'one document'")
    page.get_by_role("link", name="Users").click()
    expect(page.locator("h1")).to_have_text("Users")
    expect(page.locator("tr[data-user='admin']")).to_contain_text(ADMIN_EMAIL)
    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("h1")).to_have_text("Audit log")
    expect(page.locator("tr[data-entry]").first).to_be_visible()
    # The navigation was htmx's (boosted): the case where it keeps pages for Back.
    assert page.evaluate("window.__keel_marker") == "one document"
    # Even before sign-out (a session may also just end), htmx kept none of them.
    assert_only_public_pages_cached(page)

    page.get_by_role("button", name="Sign out", exact=True).click()
    expect(page).to_have_url(live_server.url("/"))
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert cached_pages(page) == [], "sign-out leaves no page behind"

    page.go_back()
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fadmin%2Faudit$"))
    nothing_personal_is_shown(page)
    page.go_back()
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fadmin%2Fusers$"))
    nothing_personal_is_shown(page)
    expect(page.locator("h1")).to_have_text("Sign in")
    assert_only_public_pages_cached(page)
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_a_fragment_whose_session_ended_signs_in_back_to_its_page(
    page: Page, live_server: LiveServer
) -> None:
    """The notifications count is a fragment htmx loads into every signed-in page. When
    the session ends before it is asked for (here: signed out in another tab), signing in
    again leads back to the page, not to the bare fragment."""
    sign_in(page, live_server)
    held: list[Route] = []

    def hold(route: Route) -> None:
        held.append(route)

    page.route("**/account/notifications/count", hold)
    page.goto(live_server.url("/admin/users?role=admin"))
    expect(page.locator("h1")).to_have_text("Users")
    deadline = 100
    while not held and deadline:
        page.wait_for_timeout(50)
        deadline -= 1
    assert held, "the page asked for its notifications count"

    other_tab = page.context.new_page()
    other_tab.goto(live_server.url("/admin"))
    other_tab.get_by_role("button", name="Sign out").click()
    expect(other_tab.get_by_role("link", name="Sign in")).to_be_visible()
    other_tab.close()

    held[0].continue_()
    expect(page).to_have_url(live_server.url("/login?next=%2Fadmin%2Fusers%3Frole%3Dadmin"))
    page.fill("#f-login", "admin")
    page.fill("#f-password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(live_server.url("/admin/users?role=admin"))
    expect(page.locator("h1")).to_have_text("Users")
    expect(page.locator(".admin-nav")).to_be_visible()
    expect(page.locator("tr[data-user='admin']")).to_contain_text(ADMIN_EMAIL)
    assert page.console_errors == []  # type: ignore[attr-defined]


def _editor(server: LiveServer) -> str:
    """An editor account on the live server (once per server)."""
    username = f"editor{server.leg}"
    created = run_keel(
        "users",
        "create",
        "--role",
        "editor",
        "--email",
        f"{username}@example.org",
        "--username",
        username,
        "--password-stdin",
        env=server.env,
        stdin=PASSWORD + "\n",
    )
    assert created.returncode == 0 or "already" in created.stderr + created.stdout, created.stderr
    return username


def _save_profile(page: Page, name: str) -> None:
    page.get_by_role("link", name="Account").click()
    page.fill("#f-display_name", name)
    page.click("#profile button[type=submit]")
    expect(page.locator("#f-display_name")).to_have_value(name)
    expect(page.locator("main [role=status]")).to_be_visible()


def test_pages_keep_working_after_signing_out_and_in_as_someone_else(
    page: Page, live_server: LiveServer
) -> None:
    editor = _editor(live_server)
    sign_in(page, live_server)
    page.goto(live_server.url("/"))
    _save_profile(page, "Admin One")
    page.evaluate("window.__keel_marker = 'one tab'")

    # Sign out and in again through boosted forms: the body keeps the first session's
    # hx-headers (a boosted swap replaces only its content), the forms carry the new token.
    # (The account page of staff is in the admin layout: its menu has the sign-out button.)
    expect(page.locator(".admin-user")).to_contain_text("Admin One")
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_role("link", name="Sign in").click()
    page.fill("#f-login", editor)
    page.fill("#f-password", PASSWORD)
    page.click("main button[type=submit]")
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"), timeout=20_000)
    _save_profile(page, "Editor Two")
    assert page.evaluate("window.__keel_marker") == "one tab", "a full page load happened"
    header = page.evaluate("document.body.getAttribute('hx-headers') || ''")
    form_token = page.locator(
        "#profile form[action='/account/profile'] input[name=_csrf_token]"
    ).input_value()
    assert form_token not in header, "the body's header is the first session's here"

    # An htmx request from a form of the new session: the live preview of a draft.
    page.get_by_role("link", name="Admin").click()
    page.goto(live_server.url("/admin/content/new?kind=post"))
    page.locator("#f-body_markdown").press_sequentially("Some **bold** words", delay=5)
    expect(page.locator("#preview strong")).to_have_text("bold")
    assert page.console_errors == []
