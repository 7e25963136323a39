"""What a person can read: text against its background (WCAG AA, 4.5:1) on the pages that
carry status badges and on the error page, as Chromium computes the colours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, sign_in

pytestmark = pytest.mark.browser

AA_NORMAL_TEXT = 4.5

CONTRASTS = """
(selector) => {
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const rgb = (text) => text.match(/[\\d.]+/g).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const colour = rgb(getComputedStyle(node).backgroundColor);
      if (colour.length < 4 || colour[3] > 0) return colour;
    }
    return [255, 255, 255];
  };
  return [...document.querySelectorAll(selector)].map((element) => {
    const [light, dark] = [luminance(rgb(getComputedStyle(element).color)),
                           luminance(background(element))].sort((a, b) => b - a);
    return [element.textContent.trim(), Math.round((light + 0.05) / (dark + 0.05) * 100) / 100];
  });
}
"""


def contrasts(page: Page, selector: str) -> list[tuple[str, float]]:
    """(text, contrast ratio) of every element `selector` finds, as rendered."""
    return [tuple(pair) for pair in page.evaluate(CONTRASTS, selector)]


def _post(page: Page, server: LiveServer, title: str, publish_at: str | None) -> None:
    page.goto(server.url("/admin/content/new?kind=post"))
    page.fill("#f-title", title)
    page.click("main form.editor button[type=submit]")
    expect(page.locator("main")).to_contain_text("The draft was created.")
    if publish_at is not None:
        page.fill("#f-published_at", publish_at)
        page.click("#publishing button:has-text('Publish')")
        expect(page.locator(".alert-ok")).to_be_visible()


def test_status_badges_and_the_404_number_are_readable(page: Page, live_server: LiveServer) -> None:
    server = live_server
    sign_in(page, server)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    _post(page, server, f"Readable draft {server.leg}", None)
    _post(page, server, f"Readable live {server.leg}", "")
    _post(page, server, f"Readable later {server.leg}", tomorrow)

    page.goto(server.url("/admin/content?q=Readable"))
    badges = dict(contrasts(page, "main .badge"))
    assert {"Draft", "Published", "Scheduled"} <= set(badges), badges
    looks = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('main .badge')].map("
        "(b) => [b.textContent.trim(), getComputedStyle(b).backgroundColor]))"
    )
    assert looks["Scheduled"] != looks["Draft"], looks
    page.goto(server.url("/admin/users"))
    badges |= dict(contrasts(page, "main .badge"))
    assert "Active" in badges
    page.goto(server.url("/admin/plugins"))
    plugins = dict(contrasts(page, "main .badge"))
    assert plugins, "the plugins page lists the shipped plugins"
    badges |= {f"plugin {status}": ratio for status, ratio in plugins.items()}
    page.goto(server.url("/admin/no-such-page"))
    number = contrasts(page, ".error-status")
    assert [text for text, _ in number] == ["404"]

    low = {text: ratio for text, ratio in [*badges.items(), *number] if ratio < AA_NORMAL_TEXT}
    assert low == {}, f"below {AA_NORMAL_TEXT}:1: {low}"
