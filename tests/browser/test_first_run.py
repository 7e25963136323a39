"""A person's first hour with Keel, in Chromium: set up, add an editor, hand over."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import SCREENSHOTS, LiveServer, serve_keel, sign_in
from tests.conftest import LEGS

pytestmark = pytest.mark.browser
OWNER_PASSWORD = "violet harbour lantern 42"
EDITOR_PASSWORD = "quiet copper meadow 7"


@pytest.fixture(scope="module", params=LEGS)
def first_run_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: object,
) -> Iterator[LiveServer]:
    """A server with no account yet: the first run."""
    with serve_keel(request.param, tmp_path_factory, "firstrun", with_admin=False) as server:
        yield server


@pytest.fixture
def person(
    browser: Browser, first_run_server: LiveServer, request: pytest.FixtureRequest
) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(SCREENSHOTS / f"{request.node.originalname}-{first_run_server.leg}.png")
    )
    context.close()


def test_setup_then_an_editor_who_cannot_open_admin_only_pages(
    person: Page, first_run_server: LiveServer
) -> None:
    page, server = person, first_run_server

    # Every page leads to the set-up page while no account exists.
    page.goto(server.url("/"))
    expect(page).to_have_url(server.url("/setup"))
    page.fill("#f-email", "owner@example.org")
    page.fill("#f-username", "owner")
    page.fill("#f-display_name", "Olive Owner")
    page.fill("#f-password", OWNER_PASSWORD)
    page.fill("#f-password_confirm", OWNER_PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url("/admin"))
    expect(page.locator(".admin-user")).to_contain_text("Olive Owner")

    # The set-up page is gone for good.
    assert page.goto(server.url("/setup")).status == 404

    # Create an editor; a mistake first, shown beside the field, input kept.
    page.goto(server.url("/admin/users"))
    page.click("text=New user")
    page.fill("#f-email", "eddie@example.org")
    page.fill("#f-username", "eddie")
    page.select_option("#f-role", "editor")
    page.fill("#f-password", "password1234")
    page.fill("#f-password_confirm", "password1234")
    page.click("main button[type=submit]")
    expect(page.locator("#e-password")).to_contain_text("common passwords")
    expect(page.locator("#f-email")).to_have_value("eddie@example.org")
    page.fill("#f-password", EDITOR_PASSWORD)
    page.fill("#f-password_confirm", EDITOR_PASSWORD)
    page.click("main button[type=submit]")
    page.goto(server.url("/admin/users"))
    expect(page.locator("#results")).to_contain_text("eddie")

    # Sign out.
    page.click(".admin-user button")
    expect(page).to_have_url(server.url("/"))
    assert page.goto(server.url("/admin")).url.startswith(server.url("/login"))

    # A wrong password shows the generic message on the page (htmx swaps the 400 in).
    page.fill("#f-login", "eddie")
    page.fill("#f-password", "not my password at all")
    page.click("main button[type=submit]")
    expect(page.locator(".alert-error")).to_contain_text("password is not right")

    # The editor signs in and lands in the admin area...
    sign_in(page, server, "eddie", EDITOR_PASSWORD)
    expect(page).to_have_url(re.compile(r".*/admin$"))
    expect(page.locator(".admin-user")).to_contain_text("(editor)")
    nav = page.locator(".admin-nav nav")
    expect(nav).to_contain_text("Users")
    expect(nav).not_to_contain_text("API keys")
    expect(nav).not_to_contain_text("Audit log")

    # ...but the admin-only pages are closed to them.
    for path in ("/admin/api-keys", "/admin/audit"):
        response = page.goto(server.url(path))
        assert response.status == 403, path
        expect(page.locator("h1")).to_have_text("You do not have access to this")
    assert page.console_errors == []  # type: ignore[attr-defined]
