"""The admin dashboard in Chromium: a new site's first steps, then a site with content,
people, jobs and visits; figures refreshed in place (no reload), the page readable without
JavaScript, at 1280 and 390 px (screenshots in test-artifacts/screenshots/dashboard-*)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import (
    SCREENSHOTS,
    LiveServer,
    keel_worker,
    serve_keel,
    sign_in,
    watched_page,
)
from tests.conftest import LEGS, PASSWORD

pytestmark = pytest.mark.browser
WIDTHS = (1280, 390)


@pytest.fixture(scope="module", params=LEGS)
def dashboard_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: object,
) -> Iterator[LiveServer]:
    """A set-up site with nothing in it yet, and a worker (embedded, or `keel worker`)."""
    with ExitStack() as stack:
        server = stack.enter_context(
            serve_keel(request.param, tmp_path_factory, "dashboard", with_admin=True)
        )
        if server.leg == "services":
            stack.enter_context(keel_worker(server.env, server))
        yield server


@pytest.fixture
def page(browser: Browser, dashboard_server: LiveServer) -> Iterator[Page]:
    with watched_page(browser) as fresh:
        yield fresh


def shoot(page: Page, name: str, leg: str) -> None:
    """Full-page screenshots at each width; at each, nothing may scroll sideways."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        page.screenshot(
            path=str(SCREENSHOTS / f"dashboard-{name}-{width}-{leg}.png"), full_page=True
        )
        assert overflow <= 0, f"the {name} dashboard scrolls sideways at {width} px"
    page.set_viewport_size({"width": 1280, "height": 900})


@contextmanager
def _api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url) as client:
        signed = {"login": "admin", "password": PASSWORD}
        token = client.post("/api/v1/auth/login", json=signed)
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def _fill_the_site(server: LiveServer) -> None:
    with _api(server) as api:
        for title, at in (
            ("Welcome to our new site", None),
            ("Notes from the spring meeting", None),
            ("The autumn programme", datetime.now(UTC) + timedelta(days=3)),
            ("A draft about the garden", False),
        ):
            created = api.post("/api/v1/content", json={"title": title, "body_markdown": title})
            assert created.status_code == 201, created.text
            if at is not False:
                body = {"published_at": at.isoformat()} if at else None
                published = api.post(f"/api/v1/content/{created.json()['id']}/publish", json=body)
                assert published.status_code == 200, published.text
        for name, role in (("erin", "editor"), ("victor", "viewer")):
            created = api.post(
                "/api/v1/users",
                json={
                    "email": f"{name}@example.org",
                    "username": name,
                    "password": "long enough password 7",
                    "role": role,
                    "display_name": name.capitalize(),
                },
            )
            assert created.status_code == 201, created.text


def test_a_new_site_then_a_busy_one_read_at_a_glance(
    page: Page, dashboard_server: LiveServer, browser: Browser
) -> None:
    server = dashboard_server
    sign_in(page, server)
    page.goto(server.url("/admin"))
    figures = page.locator("#figures")
    expect(figures.locator("[data-alert-none]")).to_be_visible()
    expect(page.get_by_role("link", name="Write the first post")).to_be_visible()
    expect(page.get_by_role("link", name="Add a user")).to_be_visible()
    expect(figures).to_contain_text("No entry has been read yet")
    for _ in range(30):  # `keel worker` of the services leg reports once it has started
        if figures.locator("[data-worker]").count():
            break
        page.wait_for_timeout(1000)
        page.goto(server.url("/admin"))
    expect(figures.locator("[data-worker]").first).to_be_visible()
    shoot(page, "empty", server.leg)

    _fill_the_site(server)
    # Refresh swaps the figures in place: the page is not reloaded (a mark on the window
    # survives), and the new figures are there.
    page.evaluate("window.stillTheSamePage = true")
    page.get_by_role("link", name="Refresh").click()
    expect(figures.locator('[data-status-count="published"] strong')).to_have_text("2")
    expect(figures.locator('[data-status-count="scheduled"] strong')).to_have_text("1")
    expect(figures.locator('[data-status-count="draft"] strong')).to_have_text("1")
    expect(figures.locator('[data-role-count="editor"] strong')).to_have_text("1")
    expect(figures.locator('[data-list="scheduled"]')).to_contain_text("The autumn programme")
    expect(figures.locator('[data-list="changes"]')).to_contain_text("created user")
    assert page.evaluate("window.stillTheSamePage") is True

    # Visits reach the dashboard once a worker moved the counts into the database.
    with httpx.Client(base_url=server.base_url) as visitor:
        for _ in range(3):
            assert visitor.get("/blog/welcome-to-our-new-site").status_code == 200
    for _ in range(50):
        page.goto(server.url("/admin"))
        if page.locator('[data-list="most-viewed"]').count():
            break
        page.wait_for_timeout(1000)
    expect(page.locator('[data-list="most-viewed"]')).to_contain_text("Welcome to our new site")
    assert page.console_errors == []  # type: ignore[attr-defined]
    shoot(page, "data", server.leg)

    # Without JavaScript the page reads the same.
    context = browser.new_context(
        java_script_enabled=False, storage_state=page.context.storage_state()
    )
    plain = context.new_page()
    plain.goto(server.url("/admin"))
    expect(plain.locator('[data-status-count="published"] strong')).to_have_text("2")
    expect(plain.locator('[data-list="scheduled"]')).to_contain_text("The autumn programme")
    context.close()
