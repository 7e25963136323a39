"""Signing out and in again within one tab: every form and htmx request keeps working with
the CSRF token of the session now signed in (app/core/csrf.py binds it to the session)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, sign_in
from tests.conftest import PASSWORD, run_keel

pytestmark = pytest.mark.browser


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
    page.get_by_role("button", name="Sign out Admin One").click()
    page.get_by_role("link", name="Sign in").click()
    page.fill("#f-login", editor)
    page.fill("#f-password", PASSWORD)
    page.click("main button[type=submit]")
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"), timeout=20_000)
    _save_profile(page, "Editor Two")
    assert page.evaluate("window.__keel_marker") == "one tab", "a full page load happened"
    header = page.evaluate("document.body.getAttribute('hx-headers') || ''")
    form_token = page.locator("#profile input[name=_csrf_token]").input_value()
    assert form_token not in header, "the body's header is the first session's here"

    # An htmx request from a form of the new session: the live preview of a draft.
    page.get_by_role("link", name="Admin").click()
    page.goto(live_server.url("/admin/content/new?kind=post"))
    page.locator("#f-body_markdown").press_sequentially("Some **bold** words", delay=5)
    expect(page.locator("#preview strong")).to_have_text("bold")
    assert page.console_errors == []
