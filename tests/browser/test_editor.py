"""The content editor in Chromium: unsaved text is never lost without a question, media is
inserted from a picker at the cursor, the preview sits beside the text on wide screens, and
the public post styles quotes, code and tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Dialog, Page, expect

from app.settings import ROOT
from tests.browser.conftest import LiveServer, sign_in

pytestmark = pytest.mark.browser

SHOTS = Path("/work/wt/shots") if Path("/work/wt/shots").is_dir() else ROOT / "test-artifacts"
BODY = (
    "> A quote worth keeping.\n\n"
    "```\nprint('a long line of code that runs past the edge of a phone screen, and on')\n```\n\n"
    "Use `keel serve`.\n\n"
    "| Name | Size |\n| :--- | ---: |\n| harbour.png | 3 KB |\n\n"
    "The end."
)


def _png(path: Path) -> str:
    Image.new("RGB", (120, 80), (31, 95, 191)).save(path, format="PNG")
    return str(path)


def _box(page: Page, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box


def test_the_editor_keeps_unsaved_text_inserts_media_and_previews_beside_the_text(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    server = live_server
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()  # stay on the page

    page.on("dialog", on_dialog)
    page.set_viewport_size({"width": 1400, "height": 900})
    sign_in(page, server)
    title = f"Harbour notes {server.leg}"

    # Typed text, then a click on the admin menu: the browser asks before leaving.
    page.goto(server.url("/admin/content/new?kind=post"))
    page.fill("#f-title", title)
    page.locator("#f-body_markdown").press_sequentially("Evening light.\n\nThe end.", delay=2)
    expect(page.locator("[data-unsaved-status]")).to_have_text("Unsaved changes")
    page.locator("nav[aria-label=Admin] a", has_text="Media").click()
    assert dialogs == ["beforeunload"]
    expect(page).to_have_url(re.compile(r"/admin/content/new\?kind=post$"))
    expect(page.locator("#f-body_markdown")).to_have_value("Evening light.\n\nThe end.")

    # Saving is not leaving: no question.
    page.locator("[data-editor-actions] button", has_text="Save draft").click()
    expect(page.locator(".alert-ok")).to_have_text("The draft was created.")
    assert dialogs == ["beforeunload"]
    edit_url = page.url.split("?")[0]

    # A clean form lets the menu go without a word.
    page.locator("nav[aria-label=Admin] a", has_text="Media").click()
    expect(page.locator("h1")).to_have_text("Media")
    assert dialogs == ["beforeunload"]
    page.goto(edit_url)

    # The picker: upload an image from it, choose it, and its Markdown lands at the cursor.
    text = page.locator("#f-body_markdown")
    cursor = len("Evening light.\n\n")
    text.evaluate("(area, at) => { area.focus(); area.setSelectionRange(at, at); }", cursor)
    page.locator("[data-media-picker-open]").click()
    picker = page.locator("dialog#media-picker")
    expect(picker).to_be_visible()
    expect(picker.locator("#media-picker-results")).to_be_visible()
    picker.locator("summary", has_text="Upload a new file").click()
    picker.locator("#picker-f-file").set_input_files(_png(tmp_path / "harbour.png"))
    picker.locator("#picker-f-alt_text").fill("Boats in the harbour")
    picker.locator("button", has_text="Upload").click()
    expect(picker.locator(".alert-ok")).to_contain_text("The file was uploaded")
    choice = picker.locator("[data-insert-markdown]").first
    expect(choice.locator("img")).to_have_attribute("alt", "Boats in the harbour")
    markdown = choice.get_attribute("data-insert-markdown") or ""
    assert re.fullmatch(r"!\[Boats in the harbour\]\(/media/[0-9a-f]{32}\.png\)", markdown)
    choice.click()
    expect(picker).to_be_hidden()
    expect(text).to_have_value(f"Evening light.\n\n{markdown}The end.")
    assert (
        text.evaluate("area => [area.selectionStart, area.selectionEnd]")
        == [cursor + len(markdown)] * 2
    )
    expect(page.locator("#preview img")).to_have_attribute("alt", "Boats in the harbour")
    expect(page.locator("[data-unsaved-status]")).to_have_text("Unsaved changes")

    # Wide screen: the preview beside the text, the actions in view while scrolled.
    area, preview = _box(page, "#f-body_markdown"), _box(page, "#preview")
    assert preview["x"] >= area["x"] + area["width"], (area, preview)
    assert abs(preview["y"] - area["y"]) < 40, (area, preview)
    text.fill(BODY)
    expect(page.locator("#preview blockquote")).to_contain_text("A quote worth keeping.")
    page.mouse.wheel(0, 300)
    actions = _box(page, "[data-editor-actions]")
    assert actions["y"] >= 0 and actions["y"] + actions["height"] <= 900, actions
    page.screenshot(path=str(SHOTS / "editor-1400.png"))
    page.locator("[data-editor-actions] button", has_text="Save draft").click()
    expect(page.locator(".alert-ok")).to_have_text("Your changes were saved.")
    assert dialogs == ["beforeunload"]

    # Phone: the preview below the text; writing, the actions stay at the bottom of the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(edit_url)
    area, preview = _box(page, "#f-body_markdown"), _box(page, "#preview")
    assert preview["y"] >= area["y"] + area["height"], (area, preview)
    text.scroll_into_view_if_needed()
    text.click()
    actions = _box(page, "[data-editor-actions]")
    assert actions["y"] >= 0 and actions["y"] + actions["height"] <= 844, actions
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "editor-390.png"))

    # Publish from the action bar; the public post styles the quote, code and table.
    page.locator("[data-editor-actions] button", has_text="Publish").click()
    expect(page.locator(".alert-ok")).to_have_text("The entry is published.")
    page.goto(server.url(page.locator("[data-public-url]").get_attribute("href") or ""))
    code = page.locator("article pre")
    assert code.evaluate("e => getComputedStyle(e).overflowX") == "auto"
    assert "mono" in code.evaluate("e => getComputedStyle(e).fontFamily").lower()
    assert code.evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    quote = page.locator("article blockquote")
    assert quote.evaluate("e => getComputedStyle(e).borderLeftStyle") == "solid"
    assert page.locator("article td").last.evaluate("e => getComputedStyle(e).textAlign") == "right"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(SHOTS / "editor-post-390.png"), full_page=True)
    assert dialogs == ["beforeunload"]
    assert page.console_errors == []  # type: ignore[attr-defined]
