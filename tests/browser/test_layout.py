"""Every page on a phone (390 px) and a desk (1280 px), on a site with content, users, a
job and the shipped plugins active: no admin page scrolls sideways on a phone, the admin
menu is folded there and opens without JavaScript, staff see their account, their
notifications and the errors under /admin in the admin layout, and axe-core finds no
serious or critical accessibility violation on any public or admin page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    LiveServer,
    axe_violations,
    browser_page,
    serve_keel,
    sign_in,
)
from tests.conftest import PASSWORD, run_keel

pytestmark = pytest.mark.browser

PHONE = 390
DESK = 1280
PLUGINS = ("guestbook", "linkcheck")
LONG_WORD = "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichenverleihung"
"""Unbroken text as long as a code or an address, which a phone must wrap, not scroll."""
LONG_EMAIL = "someone-with-a-rather-long-address-for-layout-checks@subdomain.example.org"


@dataclass
class Site:
    """A server with something on every page, and the pages to visit."""

    server: LiveServer
    admin_pages: list[str] = field(default_factory=list)
    public_pages: list[str] = field(default_factory=list)
    viewer: str = "viewer"


def _activate_plugins(server: LiveServer) -> None:
    for plugin in PLUGINS:
        for step in ("install", "activate"):
            done = run_keel("plugins", step, plugin, env=server.env, timeout=180)
            assert done.returncode == 0, done.stdout + done.stderr
    deadline = time.monotonic() + 10
    while httpx.get(server.url("/p/guestbook/")).status_code != 200:
        assert time.monotonic() < deadline, "the guestbook was not served after activation"
        time.sleep(0.2)


def _path(page: Page) -> str:
    return str(page.evaluate("() => location.pathname"))


def _create_entry(page: Page, server: LiveServer, kind: str, title: str) -> str:
    """A published entry made through the editor; the path of its editor page."""
    page.goto(server.url(f"/admin/content/new?kind={kind}"))
    page.fill("#f-title", title)
    page.fill("#f-body_markdown", f"# {title}\n\nA paragraph with {LONG_WORD} in it.\n")
    page.fill("#f-tags", "layout")
    page.click("main form.editor button[type=submit]")
    expect(page).to_have_url(re.compile(r"/admin/content/[0-9a-f-]{36}(\?|$)"))
    editor = _path(page)
    page.fill("#f-published_at", "")
    page.click("main button:has-text('Publish')")
    expect(page.locator(".alert-ok")).to_be_visible()
    return editor


def _create_user(page: Page, server: LiveServer, username: str, role: str, email: str) -> str:
    """An account made on the Users page; the path of its page."""
    page.goto(server.url("/admin/users/new"))
    page.fill("#f-email", email)
    page.fill("#f-username", username)
    page.select_option("#f-role", role)
    page.fill("#f-password", PASSWORD)
    page.fill("#f-password_confirm", PASSWORD)
    page.click("main button:has-text('Create user')")
    expect(page).to_have_url(re.compile(r"/admin/users/[0-9a-f-]{36}(\?|$)"))
    return _path(page)


def _populate(page: Page, site: Site) -> None:
    server = site.server
    sign_in(page, server)
    page.goto(server.url("/admin/settings"))
    page.check("#f-registration_open")
    page.click("main button:has-text('Save settings')")
    expect(page.locator(".alert-ok")).to_be_visible()

    post = _create_entry(page, server, "post", f"A post about layout {LONG_WORD}")
    _create_entry(page, server, "page", "About this site")
    viewer = _create_user(page, server, site.viewer, "viewer", LONG_EMAIL)

    page.goto(server.url("/admin/jobs"))
    page.click("summary:has-text('Run a job')")  # the form is folded under the list
    page.select_option("#f-type", "cleanup")
    page.click("main button:has-text('Enqueue')")
    expect(page).to_have_url(re.compile(r"/admin/jobs/\d+(\?|$)"))
    job = _path(page)

    page.goto(server.url("/blog"))
    public_post = page.locator("main .entry-summary h2 a").first.get_attribute("href")
    assert public_post
    menu = page.goto(server.url("/admin"))
    assert menu is not None and menu.ok
    menu_links = page.locator(".admin-nav nav a").evaluate_all(
        "(links) => links.map((a) => new URL(a.href).pathname)"
    )
    details = [
        post,
        post + "/revisions",
        "/admin/content/new?kind=post",
        viewer,
        "/admin/users/new",
        job,
        "/admin/api-keys/new",
        "/admin/no-such-page",
    ]
    site.admin_pages = [path for path in menu_links if path.startswith(("/admin", "/account"))]
    site.admin_pages += details
    site.public_pages = [
        "/",
        "/blog",
        "/tags/layout",
        "/search?q=layout",
        public_post,
        "/about-this-site",
        "/login",
        "/register",
        "/forgot-password",
        "/no-such-page",
        "/p/guestbook/",
    ]


@pytest.fixture(scope="module", params=["embedded"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: Path,
    browser: Browser,
) -> Iterator[Site]:
    """A server of its own (the plugins it activates stay out of the other tests' way).
    Layout and accessibility are the markup's and the stylesheet's, the same on both storage
    legs, so one leg runs them (the pages' behaviour on PostgreSQL + Valkey is covered by the
    other browser tests): the axe walk alone takes minutes a leg."""
    with serve_keel(request.param, tmp_path_factory, "layout", with_admin=True) as server:
        _activate_plugins(server)
        site = Site(server)
        with browser_page(request, browser, server.leg) as page:
            _populate(page, site)
        yield site


@pytest.fixture
def desk(request: pytest.FixtureRequest, browser: Browser, site: Site) -> Iterator[Page]:
    with browser_page(request, browser, site.server.leg, DESK, 800) as page:
        yield page


@pytest.fixture
def phone(request: pytest.FixtureRequest, browser: Browser, site: Site) -> Iterator[Page]:
    with browser_page(request, browser, site.server.leg, PHONE, 844) as page:
        yield page


def _settled(page: Page) -> None:
    """The page as a person reads it: loaded (`goto` waits for the load event) and no htmx
    request in flight. Playwright's "networkidle" waited for 500 ms of quiet on each of
    the ~70 pages these tests open."""
    page.wait_for_function("() => !document.querySelector('.htmx-request')")


def _page_width(page: Page) -> int:
    return int(page.evaluate("() => document.documentElement.scrollWidth"))


def test_no_admin_page_scrolls_sideways_on_a_phone(phone: Page, site: Site) -> None:
    server = site.server
    sign_in(phone, server)
    assert len(site.admin_pages) >= 20, site.admin_pages
    for plugin in PLUGINS:
        assert f"/admin/plugins/{plugin}" in site.admin_pages, "plugin admin pages are visited"
    too_wide = {}
    for path in site.admin_pages:
        phone.goto(server.url(path))
        _settled(phone)
        if _page_width(phone) > PHONE:
            too_wide[path] = _page_width(phone)
    assert too_wide == {}, f"pages wider than {PHONE} px: {too_wide}"

    # A wide table scrolls inside its own box, which keyboard users can reach and scroll.
    phone.goto(server.url("/admin/users"))
    box = phone.locator("main .table-scroll").first
    assert box.evaluate("(b) => b.scrollWidth > b.clientWidth"), "the users table is wider"
    assert box.get_attribute("tabindex") == "0" and box.get_attribute("aria-label") == "Users"
    box.focus()
    phone.keyboard.press("ArrowRight")
    phone.keyboard.press("ArrowRight")
    expect(box).not_to_have_js_property("scrollLeft", 0)
    assert _page_width(phone) <= PHONE


def _menu_link(page: Page, label: str):
    return page.locator(".admin-nav nav a", has_text=re.compile(f"^{label}$"))


@pytest.mark.parametrize("javascript", [True, False], ids=["with-js", "without-js"])
def test_the_admin_menu_is_folded_on_a_phone_and_opens(
    request: pytest.FixtureRequest, browser: Browser, site: Site, javascript: bool
) -> None:
    server = site.server
    with browser_page(
        request, browser, server.leg, PHONE, 844, java_script_enabled=javascript
    ) as phone:
        sign_in(phone, server)
        phone.goto(server.url("/admin/users"))
        menu = phone.locator(".admin-menu > summary")
        expect(menu).to_be_visible()
        expect(_menu_link(phone, "Settings")).to_be_hidden()
        heading = phone.locator("main h1").bounding_box()
        assert heading is not None and heading["y"] < 200, "the page starts near the top"

        menu.focus()
        phone.keyboard.press("Enter")  # a keyboard opens it as a click does
        expect(_menu_link(phone, "Settings")).to_be_visible()
        expect(_menu_link(phone, "Users")).to_have_attribute("aria-current", "page")
        assert _page_width(phone) <= PHONE
        _menu_link(phone, "Settings").click()
        expect(phone).to_have_url(re.compile(r"/admin/settings$"))
        expect(phone.locator("main h1")).to_have_text("Settings")


def test_on_a_desk_the_admin_menu_is_always_open(desk: Page, site: Site) -> None:
    server = site.server
    sign_in(desk, server)
    desk.goto(server.url("/admin"))
    expect(desk.locator(".admin-menu > summary")).to_be_hidden()
    for label in ("Dashboard", "Settings", "Guestbook", "Account", "Notifications"):
        expect(_menu_link(desk, label)).to_be_visible()


def test_staff_see_their_account_and_admin_errors_in_the_admin_layout(
    desk: Page, site: Site
) -> None:
    server = site.server
    sign_in(desk, server, site.viewer)
    for path, current in (("/account", "Account"), ("/account/notifications", "Notifications")):
        desk.goto(server.url(path))
        expect(desk.locator(".admin-nav")).to_be_visible()
        expect(desk.locator(".site-header")).to_have_count(0)
        expect(_menu_link(desk, current)).to_have_attribute("aria-current", "page")

    for path, status in (("/admin/no-such-page", 404), ("/admin/settings", 403)):
        response = desk.goto(server.url(path))
        assert response is not None and response.status == status
        expect(desk.locator(".admin-nav")).to_be_visible()
        expect(desk.locator(".admin-user")).to_contain_text(site.viewer)
        expect(desk.get_by_role("link", name="Sign in")).to_have_count(0)
        expect(desk.locator("main")).to_contain_text(
            "could not find" if status == 404 else "do not have access"
        )
        expect(desk.locator("main a.button")).to_have_attribute("href", "/admin")

    # A page outside /admin keeps the public layout, for staff too.
    desk.goto(server.url("/no-such-page"))
    expect(desk.locator(".site-header")).to_be_visible()
    expect(desk.locator(".admin-nav")).to_have_count(0)


@pytest.mark.parametrize("width", [DESK, PHONE])
def test_axe_finds_no_serious_violation_on_any_page(
    request: pytest.FixtureRequest, browser: Browser, site: Site, width: int
) -> None:
    server = site.server
    found: dict[str, list[str]] = {}
    # axe is injected inline, which the app's CSP forbids: this context alone bypasses it.
    with browser_page(request, browser, server.leg, width, 844, bypass_csp=True) as page:
        for path in site.public_pages:
            page.goto(server.url(path))
            _settled(page)
            if violations := axe_violations(page):
                found["visitor " + path] = violations
        sign_in(page, server)
        for path in [*site.admin_pages, "/"]:
            page.goto(server.url(path))
            _settled(page)
            if violations := axe_violations(page):
                found["admin " + path] = violations
    assert found == {}, "\n".join(f"{where}:\n  " + "\n  ".join(v) for where, v in found.items())
