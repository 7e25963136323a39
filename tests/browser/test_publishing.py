"""An editor publishes a post with an image; visitors see it at once, and stop seeing it."""

from __future__ import annotations

import io
import re

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import LiveServer, sign_in

pytestmark = pytest.mark.browser


def _png(path: str) -> str:
    image = Image.new("RGB", (40, 20), (31, 95, 191))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())
    return path


def test_an_editor_publishes_a_post_with_an_image_and_unpublishes_it(
    page: Page, browser: Browser, live_server: LiveServer, tmp_path: object
) -> None:
    server = live_server
    title = f"Harbour lights {server.leg}"
    sign_in(page, server)

    # Upload an image to the media library and take its Markdown reference.
    page.goto(server.url("/admin/media"))
    page.set_input_files("#f-file", _png(f"{tmp_path}/harbour.png"))
    page.fill("#f-alt_text", "The harbour at dusk")
    page.click("main button:has-text('Upload')")
    # The library again, with the new file first (not the page the upload was sent from).
    expect(page.locator(".alert-ok")).to_contain_text("The file was uploaded.")
    reference = page.locator("main input[readonly]").first.input_value()
    assert re.fullmatch(r"!\[The harbour at dusk\]\(/media/[0-9a-f]{32}\.png\)", reference)

    # Write the post; the live preview renders the Markdown, image included.
    page.goto(server.url("/admin/content/new?kind=post"))
    page.fill("#f-title", title)
    page.locator("#f-body_markdown").press_sequentially(
        f"Evening **light**.\n\n{reference}\n", delay=5
    )
    expect(page.locator("#preview strong")).to_have_text("light")
    expect(page.locator("#preview img")).to_have_attribute("alt", "The harbour at dusk")
    page.click("main form.editor button[type=submit]")
    expect(page.locator("main")).to_contain_text(title)

    # Preview on the site, then publish.
    preview_url = page.locator("[data-public-url]").get_attribute("href")
    assert preview_url and "preview=1" in preview_url
    page.goto(server.url(preview_url))
    expect(page.locator("body")).to_contain_text("Preview — not public")
    page.go_back()
    page.click("#publishing button:has-text('Publish')")
    expect(page.locator("main")).to_contain_text("published")

    # An anonymous visitor sees it on /blog, on its page with the image, and in the feed.
    visitor = browser.new_context().new_page()
    visitor.goto(server.url("/blog"))
    expect(visitor.locator("main")).to_contain_text(title)
    visitor.click(f"text={title}")
    image = visitor.locator("article img")
    expect(image).to_have_attribute("alt", "The harbour at dusk")
    # Loaded or failed. Polled by Playwright, not by wait_for_function: its string predicate
    # is eval'd in the page when the first check fails, which the CSP refuses (unsafe-eval).
    expect(image).to_have_js_property("complete", True)
    assert visitor.evaluate("document.querySelector('article img').naturalWidth") == 40
    feed = visitor.request.get(server.url("/feed.xml"))
    assert feed.ok and title in feed.text()

    # Unpublishing removes it at once, cached pages included.
    page.click("main button:has-text('Unpublish')")
    visitor.goto(server.url("/blog"))
    expect(visitor.locator("main")).not_to_contain_text(title)
    assert title not in visitor.request.get(server.url("/feed.xml")).text()
    visitor.context.close()
    assert page.console_errors == []  # type: ignore[attr-defined]
