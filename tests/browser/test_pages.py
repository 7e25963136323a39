"""What a person sees in a real browser, on both storage legs.

Each test runs against a real `keel serve` (see conftest.py): the embedded leg (SQLite,
memory store, in-process worker) and the services leg (PostgreSQL, Valkey, two workers).
"""

from __future__ import annotations

import json
import re
import time

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, sign_in

pytestmark = pytest.mark.browser

TRANSPARENT = "rgba(0, 0, 0, 0)"


def test_home_page_renders_with_site_title_and_styles(page: Page, live_server: LiveServer):
    response = page.goto(live_server.url("/"))

    assert response is not None and response.status == 200
    expect(page).to_have_title("Keel")
    expect(page.locator("h1")).to_have_text("Keel")
    # The stylesheet applied: the body uses Keel's font stack and page colour, the header
    # its surface colour (an unstyled page has a serif default and transparent backgrounds).
    body_style = page.evaluate(
        "() => { const s = getComputedStyle(document.body);"
        " return {font: s.fontFamily, background: s.backgroundColor, margin: s.marginTop}; }"
    )
    assert "system-ui" in body_style["font"]
    assert body_style["background"] == "rgb(247, 247, 245)"
    assert body_style["margin"] == "0px"
    header_background = page.eval_on_selector(
        ".site-header", "el => getComputedStyle(el).backgroundColor"
    )
    assert header_background != TRANSPARENT
    # The home page has no hx- attribute: it loads no htmx, and nothing broke the CSP.
    assert page.evaluate("() => window.htmx === undefined")
    assert page.console_errors == []


def test_unknown_page_shows_the_friendly_404_with_an_error_id(page: Page, live_server: LiveServer):
    response = page.goto(live_server.url("/no/such/page"))

    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("We could not find that page")
    error_id = page.locator(".error-id code")
    expect(error_id).to_be_visible()
    assert error_id.inner_text().strip() != ""
    # Chromium logs the 404 of the document itself; nothing else may go wrong (CSP, JS).
    assert [e for e in page.console_errors if "/no/such/page" not in e] == []

    page.get_by_role("link", name="Go to the home page").click()

    page.wait_for_url(live_server.url("/"))
    expect(page.locator("h1")).to_have_text("Keel")


def test_health_endpoints_answer_in_the_browser(page: Page, live_server: LiveServer):
    def body_json(path: str) -> dict:
        response = page.goto(live_server.url(path))
        assert response is not None and response.status == 200, path
        return json.loads(response.text())

    assert body_json("/health/live") == {"status": "ok"}
    # The browser shows the JSON it received.
    assert '"status"' in (page.text_content("body") or "")

    ready = body_json("/health/ready")
    assert ready["status"] == "ready"
    assert ready["failing"] == []
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["store"]["status"] == "ok"

    summary = body_json("/health")
    assert summary["service"] == "keel"
    assert summary["status"] == "ok"


def test_admin_dashboard_refreshes_health_without_reloading(page: Page, live_server: LiveServer):
    sign_in(page, live_server)
    response = page.goto(live_server.url("/admin"))

    assert response is not None and response.status == 200
    health = page.locator("#health")
    expect(health.get_by_role("heading", name=re.compile("System health"))).to_be_visible()
    expect(health.locator(".badge-ok", has_text="Ready")).to_be_visible()
    checked = page.locator("[data-checked-at]")
    before = checked.get_attribute("datetime")
    assert before

    page.evaluate("window.__keel_marker = 42")
    time.sleep(1.1)  # the checked-at time is shown to the second
    page.get_by_role("link", name="Refresh").click()
    page.wait_for_function(
        "before => {"
        " const el = document.querySelector('[data-checked-at]');"
        " return el !== null && el.getAttribute('datetime') !== before; }",
        arg=before,
    )

    assert page.evaluate("window.__keel_marker") == 42, "the page reloaded instead of swapping"
    expect(health.locator(".badge-ok", has_text="Ready")).to_be_visible()
    if live_server.leg == "embedded":  # the worker keel serve runs, in the jobs panel
        expect(page.locator("#panel-jobs [data-worker]", has_text="in-process")).to_have_count(1)
    assert page.console_errors == []


def test_navigation_is_boosted_by_htmx(page: Page, live_server: LiveServer):
    sign_in(page, live_server)
    page.goto(live_server.url("/admin"))
    expect(page.locator("h1")).to_have_text("Dashboard")
    page.evaluate("window.__keel_marker = 'boosted'")

    page.get_by_role("link", name="View site").click()

    page.wait_for_url(live_server.url("/"))
    expect(page.locator("h1")).to_have_text("Keel")
    expect(page).to_have_title("Keel")
    assert page.evaluate("window.__keel_marker") == "boosted", "a full page load happened"
    assert page.console_errors == []
